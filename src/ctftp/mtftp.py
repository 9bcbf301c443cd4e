"""PXE MTFTP: a boot file sent to a multicast group, acknowledged by one client.

The PXE specification's multicast TFTP, as atftpd serves it (``--mtftp``),
is not RFC 2090: no option asks for it and no OACK answers. The operator
lists in ``mtftp_file`` which files go to which group, one
``FILE GROUP PORT`` line each (atftpd's format), and the DHCP server tells
the PXE ROMs the same group and port, and the server's MTFTP port
(``mtftp_port``). Then:

* a client first listens on the group for a while; if a transfer of its
  file is going on, it takes every block that passes;
* otherwise it sends a plain RRQ (octet, no options) to the MTFTP port. The
  server sends block 1 to the client itself, from a fresh port as usual,
  and every later block to the group; that client acknowledges each one
  (lock-step, 512-byte blocks, the usual timer and ``max_retries``) while
  the others listen;
* an RRQ for a file whose transfer is running gets no answer: its client
  hears the group and listens (atftpd does the same);
* a client that ends with blocks missing asks again once the group is
  quiet, and collects what it lacks from the new transfer.

Block numbers cannot roll over (a listener places blocks by number), so a
file of more than 65,535 blocks is refused, as are writes and netascii.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from ctftp.events import formatAddress
from ctftp.logs import logger
from ctftp.multicast import MAX_BLOCKS, configureMulticastPort
from ctftp.packets import OP_DATA
from ctftp.remap import readNameText
from ctftp.resolver import cleanName
from ctftp.sources import IReadFile
from ctftp.transfer import Outcome, ReadTransfer

__all__ = [
    "BLKSIZE",
    "MtftpEntry",
    "MtftpFileError",
    "MtftpFiles",
    "MtftpTransfer",
    "mtftpHosts",
    "tooBig",
]

_log = logger("ctftp.mtftp")
#: PXE MTFTP negotiates nothing: every block is RFC 1350's 512 bytes.
BLKSIZE = 512
_DATA = OP_DATA.to_bytes(2, "big")
_FIRST_BLOCK = (1).to_bytes(2, "big")
_FORMAT = "expected FILE GROUP PORT (atftpd's mtftp format)"


class MtftpFileError(Exception):
    """An ``mtftp_file`` that cannot be used; ``str()`` is ``FILE:LINE: message``.

    Start-up stops with this one line; a SIGHUP keeps the files already
    loaded.
    """

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source = source
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class MtftpEntry:
    """One line of ``mtftp_file``: ``name`` (as a request names it, without
    a leading ``/``) goes to ``group`` (address, port)."""

    name: str
    group: tuple[str, int]
    line: int


class MtftpFiles:
    """The files of ``mtftp_file`` and, for each, its running transfer."""

    def __init__(self, entries: Iterable[MtftpEntry], source: str = "<mtftp>") -> None:
        self.source = source
        self._byName = {entry.name: entry for entry in entries}
        #: The transfer of each file being sent now, by entry name.
        self.running: dict[str, MtftpTransfer] = {}

    @classmethod
    def fromFile(cls, path: str) -> MtftpFiles:
        """Parse the file at ``path``; :class:`MtftpFileError` for a line
        that does not parse, :class:`OSError` when it cannot be read."""
        return cls.fromText(readNameText(path), source=path)

    @classmethod
    def fromText(cls, text: str, source: str = "<mtftp>") -> MtftpFiles:
        """Parse ``FILE GROUP PORT`` lines; blank lines and ``#`` comments
        are skipped. A file or a group listed twice is an error: one group
        carrying two files would mix their blocks in the clients."""
        entries: dict[str, MtftpEntry] = {}
        groups: dict[tuple[str, int], MtftpEntry] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            fields = raw.split()
            if not fields or fields[0].startswith("#"):
                continue
            entry = _parseEntry(fields, number, source)
            seen = entries.get(entry.name) or groups.get(entry.group)
            if seen is not None:
                what = "file" if seen.name == entry.name else "group"
                raise MtftpFileError(source, number, f"{what} already listed on line {seen.line}")
            entries[entry.name] = groups[entry.group] = entry
        return cls(entries.values(), source)

    def __len__(self) -> int:
        return len(self._byName)

    def __iter__(self) -> Iterator[MtftpEntry]:
        return iter(self._byName.values())

    def find(self, name: str) -> MtftpEntry | None:
        """The entry of a requested name (``/pxelinux.0`` is ``pxelinux.0``)."""
        return self._byName.get(cleanName(name))

    def takeRunning(self, previous: MtftpFiles) -> None:
        """Keep the transfers ``previous`` is running (a reload): a file
        being sent stays busy until its transfer ends. The table is shared,
        not copied, so a transfer that ends later leaves both."""
        self.running = previous.running


def _parseEntry(fields: list[str], number: int, source: str) -> MtftpEntry:
    if len(fields) != 3:
        raise MtftpFileError(source, number, f"{_FORMAT}, got {' '.join(fields)!r}")
    name, address, port = fields
    try:
        group = ipaddress.IPv4Address(address)
    except ValueError:
        group = None
    if group is None or not group.is_multicast:
        raise MtftpFileError(
            source, number, f"expected an IPv4 multicast group (224.0.0.0/4), got {address!r}"
        )
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise MtftpFileError(source, number, f"expected a port 1..65535, got {port!r}")
    cleaned = cleanName(name)
    if not cleaned:
        raise MtftpFileError(source, number, f"expected a file name, got {name!r}")
    return MtftpEntry(cleaned, (str(group), int(port)), number)


def mtftpHosts(listeners: Sequence[tuple[str, int]]) -> list[str]:
    """Where the MTFTP port listens: on each IPv4 listener address (MTFTP
    is IPv4 only), or on every address when a listener is on one, or only
    IPv6 listeners are configured."""
    hosts = list(dict.fromkeys(host for host, _ in listeners if ":" not in host))
    if not hosts or "0.0.0.0" in hosts:
        return ["0.0.0.0"]
    return hosts


def tooBig(size: int | None) -> bool:
    """Whether a file of ``size`` bytes (``None``: unknown) cannot be sent
    by MTFTP: more blocks than block numbers."""
    return size is None or size // BLKSIZE + 1 > MAX_BLOCKS


class MtftpTransfer(ReadTransfer):
    """A lock-step read in 512-byte blocks whose block 1 goes to the client
    and every later block to ``group``; the client's ACKs drive it, as in
    any read (the module docstring)."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        client: tuple[str, int],
        file: IReadFile,
        group: tuple[str, int],
        ttl: int,
        timeout: float,
        maxRetries: int,
        onDone: Callable[[ReadTransfer, Outcome], None],
    ) -> None:
        super().__init__(
            clock=clock,
            client=client,
            file=file,
            read=file.read,
            blksize=BLKSIZE,
            windowsize=1,
            timeout=timeout,
            maxRetries=maxRetries,
            oack=(),
            onDone=onDone,
        )
        self.group = group
        self.ttl = ttl

    def startProtocol(self) -> None:
        configureMulticastPort(self.transport, self.ttl)
        super().startProtocol()

    def _send(self, packet: bytes | memoryview) -> None:
        """Block 1 and ERRORs to the client, the other blocks to the group.

        A send to the group can fail where one to the client would not (no
        route for multicast): that is logged, and the timer sends again
        until ``max_retries`` ends the transfer."""
        assert self.transport is not None
        toGroup = packet[:2] == _DATA and packet[2:4] != _FIRST_BLOCK
        to = self.group if toGroup else self.client
        try:
            self.transport.write(packet, to)  # type: ignore[arg-type]
        except OSError as e:
            _log.warn("cannot send to {to}: {error}", to=formatAddress(*to), error=e)
