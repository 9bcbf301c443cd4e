"""Requested filename -> a safe local path (SPEC section 4).

The rules, in order:

1. a leading ``/`` is dropped (PXE ROMs ask for ``/pxelinux.0``) and ``\\``
   becomes ``/`` (Windows-minded clients);
2. the name is looked up in each root of the search path in turn; the first
   root where it exists wins;
3. after following symlinks the result must still be inside that root, or the
   request is an access violation, whether or not the target exists, so that
   nothing outside the root can be probed;
4. while sidecars are on, ``X.log`` beside an existing ``X`` is refused: the
   per-file logs say who fetched what and are not for clients to read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ctftp.errors import RequestRefused
from ctftp.packets import ErrorCode

__all__ = ["cleanName", "resolveExisting", "SIDECAR_SUFFIX"]

SIDECAR_SUFFIX = ".log"


def cleanName(name: str) -> str:
    """Normalise a requested name to a relative, ``/``-separated path."""
    return name.replace("\\", "/").lstrip("/")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def resolveExisting(roots: Sequence[str], name: str, *, protectSidecars: bool) -> str:
    """The real path of ``name`` in the first root that has it.

    Raises :class:`RequestRefused` with ERROR 2 for an escape and ERROR 1 when
    no root has the name.
    """
    relative = cleanName(name)
    if (
        not relative or "\0" in relative
    ):  # NUL cannot come off the wire, but a remap or an app could pass it
        raise RequestRefused(ErrorCode.ACCESS_VIOLATION, "Access violation")
    for root in roots:
        realRoot = os.path.realpath(root)
        real = os.path.realpath(os.path.join(realRoot, relative))
        if not _inside(real, realRoot):
            raise RequestRefused(ErrorCode.ACCESS_VIOLATION, "Access violation")
        if not os.path.lexists(real):
            continue
        if (
            protectSidecars
            and real.endswith(SIDECAR_SUFFIX)
            and os.path.isfile(real[: -len(SIDECAR_SUFFIX)])
        ):
            raise RequestRefused(ErrorCode.ACCESS_VIOLATION, "Access violation")
        return real
    raise RequestRefused(ErrorCode.FILE_NOT_FOUND, "File not found")
