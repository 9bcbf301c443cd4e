"""Requested filename -> a safe local path (SPEC section 4).

The rules, in order:

1. a leading ``/`` is dropped (PXE ROMs ask for ``/pxelinux.0``) and ``\\``
   becomes ``/`` (Windows-minded clients);
2. the name is looked up in each root of the search path in turn; the first
   root where it is a regular file (or a URL link) wins, as in BSD tftpd;
   if none has one, the first root where it exists at all answers (a
   folder there is refused);
3. after following symlinks the result must still be inside that root, or the
   request is an access violation, whether or not the target exists, so that
   nothing outside the root can be probed;
4. while sidecars are on, ``X.log`` beside an existing ``X`` is refused: the
   per-file logs say who fetched what and are not for clients to read.

HTTP relay links (SPEC section 6): the path is walked one component at a
time, following symlinks the way ``realpath`` does, so that a symlink whose
target is a URL (``http://...``, ``https+nocache://...``) is seen where it
is, before anything would follow it as a local path. Such a link becomes a
:class:`RemoteTarget` with the rest of the requested path appended; with the
relay off it is refused like any link leaving the root. A URL never opens a
local path.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from ctftp.errors import RequestRefused
from ctftp.logs import logger
from ctftp.packets import ErrorCode

__all__ = [
    "cleanName",
    "resolveExisting",
    "resolveRead",
    "fallbackTarget",
    "parseURLLink",
    "RemoteTarget",
    "SIDECAR_SUFFIX",
]

_log = logger("ctftp.resolver")

SIDECAR_SUFFIX = ".log"


def cleanName(name: str) -> str:
    """Normalise a requested name to a relative, ``/``-separated path."""
    return name.replace("\\", "/").lstrip("/")


def _inside(path: str, root: str) -> bool:
    return path == root or _insideBelow(path, root)


def _insideBelow(path: str, root: str) -> bool:
    """``path`` is strictly inside ``root``: a ``..`` from it stays inside."""
    return path.startswith(root.rstrip("/") + "/")


def _ancestor(path: str, root: str) -> bool:
    """``path`` is a folder on the way to ``root`` (``/``, ``/srv`` for ``/srv/tftp``)."""
    return path == "/" or root.startswith(path + "/")


def _denied() -> RequestRefused:
    return RequestRefused(ErrorCode.ACCESS_VIOLATION, "Access violation")


# -- URL links -----------------------------------------------------------------

#: ``scheme[+modifier]*://`` at the start of a link target; the scheme is
#: checked afterwards, so that ``ftp://`` is refused rather than taken for a
#: relative folder named ``ftp:``.
_URL_LINK = re.compile(r"([A-Za-z][A-Za-z0-9.-]*)((?:\+[A-Za-z0-9_.-]*)*)://")
_MODIFIERS = frozenset({"nocache", "nocompress"})
#: Characters left as they are in a path segment appended to a URL (RFC 3986
#: pchar minus the percent sign, so that a literal ``%`` is quoted).
_SEGMENT_SAFE = "!$&'()*+,;=:@~"
#: Link hops before a walk gives up (Linux's ELOOP limit).
_MAX_LINKS = 40


@dataclass(frozen=True, slots=True)
class RemoteTarget:
    """A request that the HTTP relay serves: the URL to fetch and how.

    ``nocache``: neither use nor fill the cache; ``nocompress``: do not ask
    the origin for a compressed body (so a body with a length can stream).
    """

    url: str
    nocache: bool = False
    nocompress: bool = False


def parseURLLink(target: str) -> RemoteTarget | None:
    """The :class:`RemoteTarget` of a symlink target such as
    ``http+nocache://host/path``, or ``None`` when it is not a URL.

    Raises ERROR 2 for a URL with a scheme other than http or https: the
    link is clearly not a local path, and ctftp fetches nothing else.
    Unknown modifiers are logged and ignored, as r-tftpd does, so a link
    written for a later version still serves.
    """
    match = _URL_LINK.match(target)
    if match is None:
        return None
    scheme = match.group(1).lower()
    if scheme not in ("http", "https"):
        _log.warn("symlink to {target}: only http and https URLs are relayed", target=target)
        raise _denied()
    modifiers = {m.lower() for m in match.group(2).split("+") if m}
    for unknown in sorted(modifiers - _MODIFIERS):
        _log.warn(
            "symlink to {target}: unknown modifier '{modifier}' ignored",
            target=target,
            modifier=unknown,
        )
    return RemoteTarget(
        scheme + target[match.end() - 3 :],
        nocache="nocache" in modifiers,
        nocompress="nocompress" in modifiers,
    )


def _appendPath(target: RemoteTarget, rest: Sequence[str]) -> RemoteTarget:
    """``target`` with the requested path parts after the link appended, each
    quoted; ``..`` there would step out of the linked URL, so it is refused."""
    parts = [part for part in rest if part not in ("", ".")]
    if not parts:
        return target
    if ".." in parts:
        raise _denied()
    suffix = "/".join(quote(part, safe=_SEGMENT_SAFE) for part in parts)
    url = target.url if target.url.endswith("/") else target.url + "/"
    return RemoteTarget(url + suffix, target.nocache, target.nocompress)


def fallbackTarget(base: str, name: str) -> RemoteTarget:
    """The URL ``fallback_url`` gives a requested name: the base and the
    cleaned, normalised name, each segment quoted."""
    relative = posixpath.normpath(cleanName(name))
    if relative == ".." or relative.startswith("../") or "\0" in relative:
        raise _denied()
    target = parseURLLink(base)
    assert target is not None, "fallback_url is checked by the config"
    return _appendPath(target, relative.split("/"))


# -- walking -------------------------------------------------------------------


def _walk(
    realRoot: str, relative: str, relay: bool, root: str
) -> tuple[str, int | None] | RemoteTarget | None:
    """Follow ``relative`` from ``realRoot`` like ``os.path.realpath`` does
    (components that do not exist are taken as they are), stopping at the
    first URL link.

    Nothing outside the root is looked at, so that answers cannot tell
    what exists there: a ``..`` at the root is an escape at once (even if a
    later part would come back in), and so is a step to anything that is
    neither inside the root nor one of its own ancestors (which a link with
    an absolute target into the root passes through). A link's absolute
    target that names the root as configured (``root``, which may be, or
    pass through, a symlink: a release folder switched by a link) is read
    as naming ``realRoot``, which it resolves to. A URL link counts only
    where it lies inside the root.
    ``None``: the name cannot exist in this root, because something that is
    not a folder has more after it, if only a ``/`` (``file.txt/`` is not
    the file, as ``open`` says with ENOTDIR). Else the path and its mode, as
    the walk's last ``lstat`` saw it (0: it does not exist; ``None``: not
    known after a ``..``), which spares the caller a second look. A
    component the server may not look into (EACCES) is an access violation,
    as ``open`` would report it.
    """
    path = realRoot
    todo = list(reversed(relative.split("/")))
    hops = 0
    mode: int | None = stat.S_IFDIR  # None: not known after a ".."
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not _insideBelow(path, realRoot):
                raise _denied()
            path = posixpath.dirname(path)
            mode = None
            continue
        candidate = posixpath.join(path, part)
        if not _inside(candidate, realRoot) and not _ancestor(candidate, realRoot):
            raise _denied()
        try:
            st = os.lstat(candidate)
        except PermissionError:
            raise _denied() from None
        except OSError:
            path = candidate
            mode = 0
            continue
        if not stat.S_ISLNK(st.st_mode):
            if todo and not stat.S_ISDIR(st.st_mode):
                return None
            path = candidate
            mode = st.st_mode
            continue
        try:
            link = os.readlink(candidate)
        except OSError:
            raise _denied() from None
        target = parseURLLink(link)
        if target is not None:
            if not relay or not _inside(path, realRoot):
                raise _denied()
            return _appendPath(target, list(reversed(todo)))
        hops += 1
        if hops > _MAX_LINKS:
            raise _denied()
        if link.startswith("/"):
            path = "/"
            alias = posixpath.normpath(root)
            if alias != realRoot and (link == alias or link.startswith(alias + "/")):
                link = realRoot + link[len(alias) :]
        todo.extend(reversed(link.split("/")))
    return path, mode


#: ``realpath`` of each root as last seen, and when (``time.monotonic``).
_realRoots: dict[str, tuple[float, str]] = {}
#: Seconds a root's ``realpath`` is reused. Resolving a root such as
#: ``/srv/tftp`` costs a ``lstat`` per component, half of a request's
#: resolution; a root that is a symlink switched to a new release (a common
#: deployment) is followed within this time.
REAL_ROOT_TTL = 1.0


def _realRoot(root: str) -> str:
    now = time.monotonic()
    cached = _realRoots.get(root)
    if cached is not None and now - cached[0] < REAL_ROOT_TTL:
        return cached[1]
    real = os.path.realpath(root)
    _realRoots[root] = (now, real)
    return real


def resolveRead(
    roots: Sequence[str], name: str, *, protectSidecars: bool, relay: bool
) -> str | RemoteTarget:
    """Where a read of ``name`` comes from: the real path in the first root
    that has it, or, with ``relay``, the URL of a URL link on the way.

    Raises :class:`RequestRefused` with ERROR 2 for an escape (and for a URL
    link while ``relay`` is off) and ERROR 1 when no root has the name.
    """
    relative = cleanName(name)
    if (
        not relative or "\0" in relative
    ):  # NUL cannot come off the wire, but a remap or an app could pass it
        raise _denied()
    found = None  # the first root's answer that is not a regular file
    for root in roots:
        realRoot = _realRoot(root)
        walked = _walk(realRoot, relative, relay, root)
        if walked is None:
            continue
        if isinstance(walked, RemoteTarget):
            return walked
        real, mode = walked
        if not _inside(real, realRoot):
            raise _denied()
        if (
            protectSidecars
            and real.endswith(SIDECAR_SUFFIX)
            and os.path.isfile(real[: -len(SIDECAR_SUFFIX)])
        ):
            # Refused whether or not the sidecar exists yet (ERROR 1 would
            # tell whether X was ever fetched), and here, in the root that
            # has X, rather than found in a later root of the search path.
            raise _denied()
        if mode is None:
            mode = _mode(real)
        if stat.S_ISREG(mode):
            return real
        if mode and found is None:
            found = real  # a folder, a FIFO...: a later root may have the file
    if found is not None:
        return found
    raise RequestRefused(ErrorCode.FILE_NOT_FOUND, "File not found")


def _mode(path: str) -> int:
    """``lstat``'s mode of ``path``, 0 when it does not exist."""
    try:
        return os.lstat(path).st_mode
    except OSError:
        return 0


def resolveExisting(roots: Sequence[str], name: str, *, protectSidecars: bool) -> str:
    """The real path of ``name`` in the first root that has it.

    Raises :class:`RequestRefused` with ERROR 2 for an escape (a URL link
    included: a URL is never a local path) and ERROR 1 when no root has the
    name.
    """
    real = resolveRead(roots, name, protectSidecars=protectSidecars, relay=False)
    assert isinstance(real, str)
    return real
