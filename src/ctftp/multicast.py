"""RFC 2090 multicast reads: one stream of DATA for every client of a file.

A client asks with the ``multicast`` option (``multicast=true`` in the
config). The file goes to a multicast group, from one port of the server's
(the transfer's TID for all its clients), and the clients take turns:

* the oldest client still on the list is the *master*: its OACK says
  ``multicast=GROUP,PORT,1``, and its ``ACK n`` asks for block ``n + 1``,
  which goes to the group, where every client listening picks it up;
* a client that asks for the same file while it is being sent (same local
  address, same size, same block size) joins the session: its OACK says
  ``GROUP,PORT,0``, and it listens without acknowledging;
* a client that has every block acknowledges the last one and is done,
  master or not; a client's ERROR ends that client alone;
* when the master is done (or has not answered after ``max_retries``
  resends, status ``timeout``), the next oldest client gets an OACK with
  ``,1`` and, master now, asks with an ACK for the block before the first
  one it misses;
* the session ends with its last client, and its group is free again.

Each client is a transfer of its own for the server's bookkeeping, log
lines and events (:class:`Member`); the session (:class:`MulticastSession`)
is what holds the file, the port and the one retransmit timer, armed for
the master. ``Sessions`` hands out the groups (``multicast_addr`` x
``multicast_port``) and finds the session a new client joins.

Multicast block numbers do not roll over (a client can ask for any block),
so a file of more than 65,535 blocks is sent by unicast, as is a netascii
read, a client over IPv6 and a file without a local path; so is every
client when all groups are taken. Such a client simply gets an OACK without
``multicast``, which RFC 2090 clients take as a refusal.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol

from ctftp.config import ServerConfig
from ctftp.events import formatAddress, quoteName
from ctftp.logs import logger
from ctftp.packets import (
    OP_ACK,
    OP_DATA,
    OP_ERROR,
    ErrorCode,
    encodeError,
    encodeOptionAck,
    optionKey,
)
from ctftp.ports import FreshPorts
from ctftp.transfer import Outcome, answerStranger

__all__ = ["Member", "MulticastSession", "Sessions", "MAX_BLOCKS", "configureMulticastPort"]

_log = logger("ctftp.multicast")
_HEADER = struct.Struct("!HH")
#: Block numbers are 16 bits and a client may ask for any of them again.
MAX_BLOCKS = 65535

SessionKey = tuple[str, str, int, int]  # local address, file path, size, blksize


def configureMulticastPort(transport: Any, ttl: int) -> None:
    """Make the group packets of a port leave with ``ttl``, through the
    interface of the address the port is bound to (the one the clients
    asked), and loop back to clients on this host."""
    handle = getattr(transport, "getHandle", None)
    if handle is None:
        return  # a port in memory (tests)
    sock = handle()
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    host = transport.getHost().host
    if host not in ("", "0.0.0.0"):
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(host))


class Member:
    """One client of a session: what the server holds as its transfer.

    ``options`` are the options acknowledged to it, ``multicast`` among
    them with the value left to the session (``windowsize`` is never among
    them: a multicast read is lock-step).
    """

    def __init__(
        self,
        *,
        client: tuple[str, int],
        options: tuple[tuple[str, str], ...],
        timeout: float,
        onDone: Callable[[Member, Outcome], None],
    ) -> None:
        self.client = client
        self.options = options
        self.timeout = timeout
        self._onDone = onDone
        self.session: MulticastSession | None = None
        self.ended = False
        self.bytesAcked = 0
        self.retransmits = 0

    @property
    def transport(self) -> Any:
        """The session's port (the server drains it before a takeover)."""
        return self.session.transport if self.session is not None else None

    def optionAck(self, group: tuple[str, int], master: bool) -> bytes:
        value = f"{group[0]},{group[1]},{1 if master else 0}"
        return encodeOptionAck(
            [(name, value if optionKey(name) == "multicast" else v) for name, v in self.options]
        )

    def stop(self, outcome: Outcome) -> None:
        """End this client's part now; the session goes on for the others."""
        if self.session is not None:
            self.session.leave(self, outcome)

    def requestRepeated(self) -> None:
        """The client sent its request again: its OACK was lost."""
        if self.session is not None:
            self.session.answerAgain(self)

    def report(self, outcome: Outcome) -> None:
        if not self.ended:
            self.ended = True
            self._onDone(self, outcome)


class MulticastSession(DatagramProtocol):
    """One file going to one group, for its clients in turn (module docstring)."""

    noisy = False

    def __init__(
        self,
        *,
        clock: IReactorTime,
        file: Any,
        blksize: int,
        group: tuple[str, int],
        ttl: int,
        maxRetries: int,
        onClosed: Callable[[MulticastSession], None],
    ) -> None:
        self.clock = clock
        self.file = file
        self.size: int = file.size
        self.blksize = blksize
        self.group = group
        self.ttl = ttl
        self.maxRetries = maxRetries
        self._onClosed = onClosed
        #: Clients still receiving, oldest first; the first is the master.
        self.members: dict[tuple[str, int], Member] = {}
        self.master: Member | None = None
        self.lastBlock = self.size // blksize + 1
        self._packet = b""  # the last packet to the master or the group, for resends
        self._packetTo: tuple[str, int] = group
        self._answered = -1  # the master's last ACK answered (a repeat is not)
        self._timer: IDelayedCall | None = None
        self._retries = 0
        self.closed = False

    # -- clients --------------------------------------------------------------

    def add(self, member: Member) -> None:
        """A new client: master if there is none, else a listener."""
        member.session = self
        self.members[member.client] = member
        if self.master is None:
            self._makeMaster(member)
        else:
            self._sendTo(member.optionAck(self.group, master=False), member.client)

    def answerAgain(self, member: Member) -> None:
        """Send ``member`` its OACK again, as it stands now."""
        if member is self.master and self._answered >= 0:
            return  # it has asked for blocks since: the request is an old copy
        self._sendTo(member.optionAck(self.group, member is self.master), member.client)

    def leave(self, member: Member, outcome: Outcome) -> None:
        """``member`` is done; the next client becomes master if it was."""
        if self.members.get(member.client) is not member:
            return
        del self.members[member.client]
        member.report(outcome)
        if member is self.master:
            self._nextMaster()

    def stop(self, outcome: Outcome) -> None:
        """End every client's part and the session (service stop)."""
        members, self.members = list(self.members.values()), {}
        self.master = None
        for member in members:
            member.report(outcome)
        self._close()

    def _makeMaster(self, member: Member) -> None:
        self.master = member
        self._answered = -1
        self._retries = 0
        self._send(member.optionAck(self.group, master=True), member.client)

    def _nextMaster(self) -> None:
        self._disarm()
        self.master = None
        following = next(iter(self.members.values()), None)
        if following is None:
            self._close()
        else:
            self._makeMaster(following)

    # -- packets ----------------------------------------------------------------

    def startProtocol(self) -> None:
        configureMulticastPort(self.transport, self.ttl)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.closed:
            return
        member = self.members.get(addr)
        if member is None:
            answerStranger(self._sendTo, datagram, addr)
            return
        if len(datagram) < 4:
            return
        opcode, number = _HEADER.unpack_from(datagram)
        if opcode == OP_ERROR:
            self.leave(member, ("error", "client_error", number))
        elif opcode == OP_ACK:
            self._ackReceived(member, number)

    def _ackReceived(self, member: Member, number: int) -> None:
        if number == self.lastBlock:
            member.bytesAcked = self.size
            self.leave(member, ("ok", "transfer_complete", None))
        elif member is not self.master:
            # A client that takes itself for the master (an OACK it missed):
            # tell it again that it is not.
            self._sendTo(member.optionAck(self.group, master=False), member.client)
        elif number != self._answered and number < self.lastBlock:
            # A repeated ACK sends nothing (Sorcerer's Apprentice): the
            # timer resends.
            self._answered = number
            self._retries = 0
            member.bytesAcked = max(member.bytesAcked, number * self.blksize)
            self._sendBlock(number + 1)

    def _sendBlock(self, block: int) -> None:
        offset = (block - 1) * self.blksize
        payload = self.file.readAt(offset, self.blksize)
        if len(payload) != min(self.blksize, self.size - offset):
            self._fileChanged()
            return
        self._send(_HEADER.pack(OP_DATA, block) + payload, self.group)

    def _fileChanged(self) -> None:
        """The file shrank while being sent: no client gets a short file."""
        _log.warn(
            'file="{file}" changed while sent to multicast group {group}',
            file=quoteName(self.file.path),
            group=formatAddress(*self.group),
        )
        error = encodeError(ErrorCode.NOT_DEFINED, "File changed during transfer")
        for member in list(self.members.values()):
            self._sendTo(error, member.client)
        self.stop(("error", "aborted", ErrorCode.NOT_DEFINED))

    def _send(self, packet: bytes, to: tuple[str, int]) -> None:
        """Send what the master waits for; the timer resends it."""
        self._packet, self._packetTo = packet, to
        self._sendTo(packet, to)
        self._arm()

    def _sendTo(self, packet: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        try:
            self.transport.write(packet, to)
        except OSError as e:  # no route to the group, a full buffer: the timer retries
            _log.warn("cannot send to {to}: {error}", to=formatAddress(*to), error=e)

    # -- timer ------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        assert self.master is not None
        self._timer = self.clock.callLater(self.master.timeout, self._timedOut)

    def _disarm(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _timedOut(self) -> None:
        self._timer = None
        master = self.master
        assert master is not None
        if self._retries >= self.maxRetries:
            self.leave(master, ("error", "timeout", None))
            return
        self._retries += 1
        master.retransmits += 1
        self._sendTo(self._packet, self._packetTo)
        self._arm()

    # -- end ----------------------------------------------------------------------

    def stopProtocol(self) -> None:
        """The port closed under the session: its clients cannot go on."""
        if not self.closed:
            self.stop(("error", "aborted", None))

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._disarm()
        self.file.close()
        self._onClosed(self)
        if self.transport is not None:
            self.transport.stopListening()


class Sessions:
    """The running sessions of a server, by what their clients share, and
    the groups they hold."""

    def __init__(self, config: ServerConfig, clock: IReactorTime, ports: FreshPorts) -> None:
        self.clock = clock
        self.ports = ports
        self._share = (1, 1)
        self.configure(config)
        self._byKey: dict[SessionKey, MulticastSession] = {}
        self._keys: dict[MulticastSession, SessionKey] = {}

    def configure(self, config: ServerConfig) -> None:
        """Groups, TTL and retries for sessions started from now on."""
        low, high = config.multicast_port
        groups = [(a, p) for p in range(low, high + 1) for a in config.multicast_addr]
        worker, workers = self._share
        self._groups = groups[worker - 1 :: workers]
        self._config = config
        self.ttl = config.multicast_ttl
        self.maxRetries = config.max_retries

    def shareAmong(self, worker: int, workers: int) -> None:
        """Use only worker ``worker``'s share (from 1) of the groups: every
        ``workers``-th one. Workers are separate processes; two must never
        send two files to one group."""
        self._share = (worker, workers)
        self.configure(self._config)

    def join(
        self, member: Member, file: Any, blksize: int, host: str, *, netascii: bool = False
    ) -> bool:
        """Add ``member`` to the session sending ``file`` from ``host`` in
        blocks of ``blksize``, starting one if there is none. ``False``
        when the read cannot be multicast: the caller serves it by unicast
        and still owns ``file``; with ``True`` the session has it."""
        why = "netascii" if netascii else self._unsuitable(member, file, blksize, host)
        if why is not None:
            _log.info(
                "multicast declined for {client}: {why}; sent by unicast",
                client=formatAddress(*member.client),
                why=why,
            )
            return False
        key = (host, file.path, file.size, blksize)
        session = self._byKey.get(key)
        if session is not None:
            file.close()  # the session reads its own copy
            session.add(member)
            return True
        group = self._freeGroup()
        if group is None:
            _log.warn(
                "multicast declined for {client}: all {n} groups are in use; sent by unicast",
                client=formatAddress(*member.client),
                n=len(self._groups),
            )
            return False
        session = MulticastSession(
            clock=self.clock,
            file=file,
            blksize=blksize,
            group=group,
            ttl=self.ttl,
            maxRetries=self.maxRetries,
            onClosed=self._closed,
        )
        try:
            self.ports.attach(session, member.client, host)  # type: ignore[arg-type]
        except (CannotListenError, OSError) as e:
            _log.warn(
                "multicast declined for {client}: no port: {error}; sent by unicast",
                client=formatAddress(*member.client),
                error=e,
            )
            return False
        self._byKey[key] = session
        self._keys[session] = key
        _log.info(
            'multicast of file="{file}" to {group} started for {client}',
            file=quoteName(file.path),
            group=formatAddress(*group),
            client=formatAddress(*member.client),
        )
        session.add(member)
        return True

    @staticmethod
    def _unsuitable(member: Member, file: Any, blksize: int, host: str) -> str | None:
        if ":" in member.client[0] or ":" in host:
            return "IPv6 (only IPv4 groups are configured)"
        if getattr(file, "readAt", None) is None or file.path is None:
            return "not a local file"
        if file.size // blksize + 1 > MAX_BLOCKS:
            return f"more than {MAX_BLOCKS} blocks of {blksize} bytes"
        return None

    def _freeGroup(self) -> tuple[str, int] | None:
        taken = {session.group for session in self._keys}
        return next((group for group in self._groups if group not in taken), None)

    def _closed(self, session: MulticastSession) -> None:
        key = self._keys.pop(session, None)
        if key is not None and self._byKey.get(key) is session:
            del self._byKey[key]

    def stop(self) -> None:
        """End every session (service stop)."""
        for session in list(self._keys):
            session.stop(("error", "aborted", None))
