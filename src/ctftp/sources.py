"""Where the bytes of a read come from.

:class:`IReadSource` is the seam an embedding application implements to serve
generated content (one config per phone MAC, say) without files on disk; it
returns an :class:`IReadFile`, synchronously or through a Deferred.
:class:`LocalFileSource` is the shipped implementation for files under the
configured roots; :class:`BytesFile` serves bytes held in memory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zope.interface import Attribute, Interface, implementer

from ctftp.errors import RequestRefused
from ctftp.netascii import encodedSize
from ctftp.packets import ErrorCode
from ctftp.resolver import RemoteTarget, resolveRead

__all__ = ["IReadFile", "IReadSource", "ReadRequest", "LocalFile", "BytesFile", "LocalFileSource"]


class IReadFile(Interface):
    """An opened file, read once from start to end."""

    size = Attribute("Size in bytes as stored (before netascii conversion), or None if unknown.")
    path = Attribute(
        "Local path of the file, or None. When set, the transfer's sidecar line goes "
        "to PATH.log (if file_log is on) and events report it as 'resolved'."
    )

    def read(size: int) -> bytes:
        """Return the next ``size`` bytes; fewer only at the end, then b"".

        A file whose bytes arrive over time (the HTTP relay's) may instead
        return a Deferred firing with them; the transfer then pauses new
        DATA without spending the client's retries. Return bytes whenever
        they are there: the transfer's fast path costs no Deferred. Files
        read in netascii mode must answer synchronously (the conversion
        pulls bytes), and a short read must mean the true end.
        """

    def netasciiSize() -> int | None:
        """The size after netascii conversion, or None if it cannot be known in advance."""

    def close() -> None:
        """Release the file; called exactly once when the transfer ends."""


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """What a source is told about a read request (``filename`` after remapping)."""

    filename: str
    clientHost: str
    clientPort: int
    mode: str


class IReadSource(Interface):
    """Opens files for RRQs."""

    def openRead(request: ReadRequest) -> Any:
        """Return an :class:`IReadFile` or a Deferred firing with one.

        Refuse with :class:`ctftp.errors.RequestRefused` (raised, or as the
        Deferred's failure) to answer the client with that TFTP error.
        """


#: The most buffers one ``readv`` takes (Linux's ``IOV_MAX``).
_IOV_MAX = 1024


def _unfilled(buffers: Sequence[memoryview], filled: int) -> list[memoryview]:
    """What is left of ``buffers`` once their first ``filled`` bytes are read."""
    for index, buffer in enumerate(buffers):
        if filled < len(buffer):
            return [buffer[filled:], *buffers[index + 1 :]]
        filled -= len(buffer)
    return []


@implementer(IReadFile)
class LocalFile:
    """A regular file opened read-only; reads are plain ``os.read`` calls,
    or one ``readv`` into a window's packets (:meth:`readInto`)."""

    def __init__(self, fd: int, path: str, size: int) -> None:
        self._fd = fd
        self.path = path
        self.size = size

    def read(self, size: int) -> bytes:
        chunk = os.read(self._fd, size)
        if len(chunk) == size or not chunk:
            return chunk
        parts = [chunk]
        got = len(chunk)
        while got < size:
            more = os.read(self._fd, size - got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def readInto(self, buffers: Sequence[memoryview], size: int) -> int:
        """Fill ``buffers`` (``size`` bytes in all) in order with one
        ``readv`` and return how many bytes were read: fewer than ``size``
        only at the end of the file, as :meth:`read`."""
        if len(buffers) <= _IOV_MAX:
            got = os.readv(self._fd, buffers)
            if got == size or not got:
                return got
        else:
            got = 0
        # More buffers than one readv takes, or a short read that may not
        # be the end yet: read on until they are full or the file ends.
        while got < size:
            rest = _unfilled(buffers, got)[:_IOV_MAX]
            more = os.readv(self._fd, rest)
            if not more:
                break
            got += more
        return got

    def readAt(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset`` (fewer at the end), with ``pread``:
        a multicast transfer (``ctftp.multicast``) sends blocks in the order
        its clients ask for them."""
        chunk = os.pread(self._fd, size, offset)
        while 0 < len(chunk) < size:
            more = os.pread(self._fd, size - len(chunk), offset + len(chunk))
            if not more:
                break
            chunk += more
        return chunk

    def netasciiSize(self) -> int:
        """Scan the file with ``pread`` so the sequential position is untouched."""
        total = 0
        offset = 0
        while chunk := os.pread(self._fd, 1 << 20, offset):
            total += encodedSize(chunk)
            offset += len(chunk)
        return total

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@implementer(IReadFile)
class BytesFile:
    """Content held in memory, for sources that generate files."""

    path = None

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._offset = 0
        self.size = len(data)

    def read(self, size: int) -> bytes:
        chunk = self._data[self._offset : self._offset + size]
        self._offset += len(chunk)
        return bytes(chunk)

    def netasciiSize(self) -> int:
        return encodedSize(bytes(self._data))

    def close(self) -> None:
        self._data.release()


@implementer(IReadSource)
class LocalFileSource:
    """Files under the configured roots, with the safety rules of SPEC section 4.

    Files are opened ``O_NONBLOCK`` so that a FIFO cannot hang the server, and
    ``O_NOFOLLOW`` so that a symlink swapped in after resolution is refused
    rather than followed; only regular files are served.
    """

    _OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC

    def __init__(
        self,
        roots: Sequence[str],
        *,
        requireWorldReadable: bool = False,
        protectSidecars: bool = True,
    ) -> None:
        self.roots = tuple(roots)
        self.requireWorldReadable = requireWorldReadable
        self.protectSidecars = protectSidecars

    def openRead(self, request: ReadRequest) -> LocalFile:
        """Open the file; a URL symlink is refused here (ERROR 2): only the
        HTTP relay (:class:`ctftp.relay.RelaySource`) serves those."""
        located = self.locate(request)
        assert isinstance(located, str)
        return self.openPath(located)

    def locate(self, request: ReadRequest, *, relay: bool = False) -> str | RemoteTarget:
        """Where the request's bytes are: a real path under a root or, with
        ``relay``, the URL of a URL symlink met on the way.

        Raises :class:`RequestRefused` like :meth:`openRead` (ERROR 1 when no
        root has the name, ERROR 2 for an escape).
        """
        return resolveRead(
            self.roots, request.filename, protectSidecars=self.protectSidecars, relay=relay
        )

    def canRead(self, name: str) -> bool:
        """Whether a read of ``name`` would be served a local file: the remap
        ``E`` flag's question for an RRQ, answered by opening it."""
        try:
            located = self.locate(ReadRequest(name, "", 0, "octet"))
            assert isinstance(located, str)
            self.openPath(located).close()
        except RequestRefused:
            return False
        return True

    def openPath(self, path: str) -> LocalFile:
        """Open ``path`` (from :meth:`locate`) with the checks of SPEC section 4."""
        try:
            fd = os.open(path, self._OPEN_FLAGS)
        except FileNotFoundError:
            raise RequestRefused(ErrorCode.FILE_NOT_FOUND, "File not found") from None
        except OSError:
            raise RequestRefused(ErrorCode.ACCESS_VIOLATION, "Access violation") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise RequestRefused(ErrorCode.ACCESS_VIOLATION, "Access violation")
            if self.requireWorldReadable and not st.st_mode & stat.S_IROTH:
                raise RequestRefused(ErrorCode.ACCESS_VIOLATION, "Access violation")
            # O_NONBLOCK stays: it changes nothing for a regular file (open(2)),
            # and clearing it would cost a system call per request.
        except BaseException:
            os.close(fd)
            raise
        return LocalFile(fd, path, st.st_size)
