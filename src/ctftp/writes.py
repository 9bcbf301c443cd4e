"""Where the bytes of an upload (WRQ) go.

:class:`IWriteSink` is the seam an embedding application implements to store
uploads elsewhere (a database, an HTTP PUT); it returns an :class:`IWriteFile`,
synchronously or through a Deferred, the way :class:`ctftp.sources.IReadSource`
does for reads. Two implementations ship:

* :class:`LocalWriteSink` writes under the first root with tftp-hpa's rules
  (SPEC sections 2-4) and never lets a half-written file replace a good one:
  the data goes to a hidden temporary file in the target folder, which is
  flushed, ``fsync``-ed and renamed over the target only after the last block;
* :class:`DevNullSink` (``write_devnull``) accepts every upload and keeps
  nothing.

Temporary files are named ``.NAME.XXXXXXXX.ctftp-part`` (see
:func:`isTemporaryName`): hidden, never a name a client could have meant, and
created ``O_EXCL`` with mode 0600 by ``mkstemp``, so they can neither clobber
nor be mistaken for a real file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
import tempfile
from dataclasses import dataclass
from typing import Any

from zope.interface import Attribute, Interface, implementer

from ctftp.errors import RequestRefused
from ctftp.logs import logger
from ctftp.packets import ErrorCode
from ctftp.resolver import SIDECAR_SUFFIX, cleanName

__all__ = [
    "IWriteFile",
    "IWriteSink",
    "WriteRequest",
    "LocalWriteFile",
    "LocalWriteSink",
    "UploadInProgress",
    "DevNullFile",
    "DevNullSink",
    "TEMPORARY_SUFFIX",
    "isTemporaryName",
    "checkUploadSize",
    "diskFull",
    "refusalFor",
]

_log = logger("ctftp.writes")

#: Every temporary upload file ends with this; see :func:`isTemporaryName`.
TEMPORARY_SUFFIX = ".ctftp-part"

#: How much of the target's name goes into the temporary name: enough to tell
#: which upload a leftover belongs to, short enough to stay under NAME_MAX.
_NAME_IN_TEMPORARY = 64

#: errno values that mean "no room", answered with ERROR 3.
_NO_SPACE = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG) if code
)
#: errno values that mean "not allowed", answered with ERROR 2.
_NOT_ALLOWED = frozenset((errno.EACCES, errno.EPERM, errno.EROFS))


def diskFull() -> RequestRefused:
    """The refusal for a full disk, a quota or a size limit (ERROR 3)."""
    return RequestRefused(ErrorCode.DISK_FULL, "Disk full or allocation exceeded")


def _accessViolation(message: str = "Access violation") -> RequestRefused:
    return RequestRefused(ErrorCode.ACCESS_VIOLATION, message)


class UploadInProgress(RequestRefused):
    """ERROR 2 ``File is being uploaded``: ``path`` (the real target) has an
    upload running; the server may end it and ask again (a takeover)."""

    def __init__(self, path: str) -> None:
        super().__init__(ErrorCode.ACCESS_VIOLATION, "File is being uploaded")
        self.path = path


def isTemporaryName(name: str) -> bool:
    """True for the name of a temporary upload file (a path or a base name).

    A read source should refuse such names, so that a half-received upload is
    never served; the write sink refuses to write them.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.startswith(".") and base.endswith(TEMPORARY_SUFFIX)


def checkUploadSize(tsize: int | None, maxBytes: int) -> None:
    """Refuse a WRQ whose announced ``tsize`` is above ``max_upload_bytes``.

    The server calls it after option negotiation and before opening the
    sink, so an upload that cannot fit is refused with ERROR 3 before any
    data is sent or any file created. ``maxBytes`` 0 means no limit; a WRQ
    without ``tsize`` is checked while it runs (``WriteTransfer.maxBytes``).
    """
    if maxBytes > 0 and tsize is not None and tsize > maxBytes:
        raise diskFull()


def refusalFor(error: OSError) -> RequestRefused:
    """The TFTP error for a failed write: ERROR 3 for no space, 2 for no
    permission, 0 with a message for anything else."""
    if error.errno in _NO_SPACE:
        return diskFull()
    if error.errno in _NOT_ALLOWED:
        return _accessViolation()
    return RequestRefused(ErrorCode.NOT_DEFINED, "Write error", "aborted")


class IWriteFile(Interface):
    """One upload being received, written once from start to end.

    The transfer calls ``write`` for each piece of data in order (already
    decoded from netascii), then ``commit`` after the last block; ``abort``
    is called instead whenever the upload does not complete, and also after a
    ``commit`` that failed, so clean-up can live in one place.
    """

    path = Attribute(
        "Local path the upload will have once committed, or None. When set, the "
        "transfer's sidecar line goes to PATH.log (if file_log is on) and events "
        "report it as 'resolved'."
    )

    def write(data: bytes) -> None:
        """Append ``data``.

        Raise :class:`ctftp.errors.RequestRefused` to end the upload with that
        TFTP error: ``ErrorCode.DISK_FULL`` ("Disk full or allocation
        exceeded", see :func:`diskFull`) when the storage is full, another
        code for other failures. The transfer then calls ``abort``.
        """

    def commit() -> Any:
        """Make the complete upload visible, atomically.

        Return None, or a Deferred firing when it is stored (the final ACK
        waits for it). Raise (or fail with) :class:`RequestRefused` if it
        cannot be stored; everything written is then dropped.
        """

    def abort() -> None:
        """Drop everything written; what was there before stays untouched."""


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """What a sink is told about a write request (``filename`` after
    remapping); ``tsize`` is the size the client announced (RFC 2349), or None."""

    filename: str
    clientHost: str
    clientPort: int
    mode: str
    tsize: int | None = None


class IWriteSink(Interface):
    """Opens uploads for WRQs."""

    def openWrite(request: WriteRequest) -> Any:
        """Return an :class:`IWriteFile` or a Deferred firing with one.

        Refuse with :class:`ctftp.errors.RequestRefused` (raised, or as the
        Deferred's failure) to answer the client with that TFTP error.
        """


@implementer(IWriteFile)
class LocalWriteFile:
    """An upload into a temporary file, renamed over ``path`` on commit.

    ``mode`` is applied to the temporary file just before the rename (it
    stays 0600 while incomplete); ``owner`` is the (uid, gid) to give it, or
    None to keep the server's.
    """

    def __init__(
        self,
        sink: LocalWriteSink,
        fd: int,
        temporary: str,
        path: str,
        mode: int,
        owner: tuple[int, int] | None,
    ) -> None:
        self._sink = sink
        self._fd = fd
        self.temporary = temporary
        self.path = path
        self._mode = mode
        self._owner = owner
        self._ended = False
        self.size = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
                self.size += written
        except OSError as e:
            _log.error(
                "writing upload {path} failed: {error}", path=self.path, error=e.strerror or e
            )
            raise refusalFor(e) from None

    def commit(self) -> None:
        if self._ended:
            raise RequestRefused(ErrorCode.NOT_DEFINED, "Upload already ended", "aborted")
        try:
            os.fchmod(self._fd, self._mode)
            if self._owner is not None:
                # Best effort: only root can give a file away.
                with contextlib.suppress(OSError):
                    os.fchown(self._fd, *self._owner)
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.replace(self.temporary, self.path)
        except OSError as e:
            _log.error(
                "storing upload {path} failed: {error}", path=self.path, error=e.strerror or e
            )
            self.abort()
            if isinstance(e, IsADirectoryError):
                raise _accessViolation() from None
            raise refusalFor(e) from None
        self._ended = True
        self._syncFolder()
        self._sink._release(self.path)

    def _syncFolder(self) -> None:
        """Make the rename itself durable; a failure here loses nothing visible."""
        try:
            fd = os.open(os.path.dirname(self.path), os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def abort(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporary)
        self._sink._release(self.path)


@implementer(IWriteSink)
class LocalWriteSink:
    """Uploads into ``root`` with tftp-hpa's rules, made atomic.

    * The name is cleaned like a read's (leading ``/`` dropped, ``\\`` as
      ``/``) and must resolve inside ``root`` after symlinks (ERROR 2). A
      symlink inside the root is written through: its target is replaced.
    * An existing target must be a regular file the server may write, and
      with ``requireWorldWritable`` (``require_world_readable``) also o+w;
      else ERROR 2. It keeps its mode (and owner, when running as root).
    * A missing target is created only with ``allowCreate`` (ERROR 2
      otherwise, SPEC section 3), with mode ``0o666 & ~umask``. Folders are
      never created: a missing folder is ERROR 1 "Folder not found", as
      tftp-hpa answers (its ``open`` fails with ENOENT).
    * With ``protectSidecars`` (``file_log``), ``X.log`` beside a file ``X``
      is ERROR 2, and so is any name of a temporary upload file.
    * One upload per target at a time: a second WRQ for a name being uploaded
      gets ERROR 2 "File is being uploaded" (per sink, i.e. per process).
    """

    def __init__(
        self,
        root: str,
        *,
        allowCreate: bool,
        umask: int = 0o022,
        requireWorldWritable: bool = False,
        protectSidecars: bool = True,
    ) -> None:
        self.root = root
        self.allowCreate = allowCreate
        self.umask = umask
        self.requireWorldWritable = requireWorldWritable
        self.protectSidecars = protectSidecars
        #: Real paths of the uploads running now.
        self.uploading: set[str] = set()

    def openWrite(self, request: WriteRequest) -> LocalWriteFile:
        path = self._resolve(request.filename)
        if path in self.uploading:
            raise UploadInProgress(path)
        mode, owner = self._checkTarget(path)
        folder, base = os.path.split(path)
        try:
            fd, temporary = tempfile.mkstemp(
                prefix=f".{base[:_NAME_IN_TEMPORARY]}.", suffix=TEMPORARY_SUFFIX, dir=folder
            )
        except OSError as e:
            raise refusalFor(e) from None
        self.uploading.add(path)
        return LocalWriteFile(self, fd, temporary, path, mode, owner)

    def canWrite(self, name: str) -> bool:
        """Whether a WRQ for ``name`` would be accepted (the remap ``E``
        flag's question): the checks of :meth:`openWrite`, nothing created."""
        try:
            self._checkTarget(self._resolve(name))
        except RequestRefused:
            return False
        return True

    def _release(self, path: str) -> None:
        self.uploading.discard(path)

    def _resolve(self, name: str) -> str:
        """The real path to write, checked against the root; ERROR 2 or 1."""
        relative = cleanName(name)
        base = relative.rsplit("/", 1)[-1]
        if not base or base in (".", "..") or "\0" in relative or isTemporaryName(base):
            raise _accessViolation()
        if posixpath.normpath(relative).startswith("../"):
            raise _accessViolation()  # climbs above the root, as reads refuse it
        try:
            realRoot = os.path.realpath(self.root)
            target = os.path.join(realRoot, relative)
            real = os.path.realpath(target)
            if os.path.islink(target) and "://" in os.readlink(target):
                raise _accessViolation()  # an HTTP relay link is not a file
        except (OSError, ValueError):
            raise _accessViolation() from None
        if not real.startswith(realRoot.rstrip("/") + "/"):
            raise _accessViolation()
        if isTemporaryName(real):
            raise _accessViolation()
        if (
            self.protectSidecars
            and real.endswith(SIDECAR_SUFFIX)
            and os.path.isfile(real[: -len(SIDECAR_SUFFIX)])
        ):
            raise _accessViolation()
        return real

    def _checkTarget(self, path: str) -> tuple[int, tuple[int, int] | None]:
        """The mode (and owner) the committed file gets, or a refusal."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        except OSError:
            raise _accessViolation() from None
        if st is None:
            if not self.allowCreate:
                raise _accessViolation()
            folder = os.path.dirname(path)
            if not os.path.isdir(folder):
                if os.path.lexists(folder):
                    raise _accessViolation()
                raise RequestRefused(ErrorCode.FILE_NOT_FOUND, "Folder not found")
            return 0o666 & ~self.umask, None
        if not stat.S_ISREG(st.st_mode):
            raise _accessViolation()
        if self.requireWorldWritable and not st.st_mode & stat.S_IWOTH:
            raise _accessViolation()
        if not os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids):
            raise _accessViolation()
        owner = None
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            owner = (st.st_uid, st.st_gid)
        return stat.S_IMODE(st.st_mode), owner


@implementer(IWriteFile)
class DevNullFile:
    """An upload that is acknowledged and forgotten; it only counts bytes."""

    path = None

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)

    def commit(self) -> None:
        """Nothing to store."""

    def abort(self) -> None:
        """Nothing to drop."""


@implementer(IWriteSink)
class DevNullSink:
    """``write_devnull``: every WRQ is accepted and its data discarded
    (r-tftpd ``--wrq-devnull``), so devices that insist on pushing something
    can be satisfied without storing it."""

    def openWrite(self, request: WriteRequest) -> DevNullFile:
        return DevNullFile()

    def canWrite(self, name: str) -> bool:
        """Every name is accepted (the remap ``E`` flag's question)."""
        return True
