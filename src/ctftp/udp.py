"""UDP ports: quiet ones for transfers, address-aware ones for listeners.

Twisted's ``udp.Port`` writes two legacy log lines for every port it opens
and closes ("... starting on 41234", "(UDP Port 41234 Closed)"). A TFTP server
opens a port per transfer, so at thousands of transfers a second those lines
would be most of the log and a measurable share of the CPU. :class:`QuietPort`
is the same port without them.

A listener bound to a wildcard address (``0.0.0.0``, ``::``) must still answer
from the address each request came to, or a client that asked 10.0.0.1 gets
its DATA from 10.0.1.1 and drops it. :class:`ListenerPort` asks the kernel for
each datagram's destination (``IP_PKTINFO`` / ``IPV6_RECVPKTINFO``) and passes
it to the protocol as a third argument; the transfer port is then bound to it.
Listener sockets also get a large receive buffer, so that a storm of requests
after a power cut is queued rather than dropped.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import error, udp
from twisted.internet.base import ReactorBase
from twisted.internet.interfaces import IListeningPort, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.python import log

from ctftp.portgroup import PortGroup

__all__ = [
    "QuietPort",
    "GroupedPort",
    "ListenerPort",
    "ListenUDP",
    "transferListener",
    "listenerListener",
    "MAX_DATAGRAM",
    "growReceiveBuffer",
]

#: Large enough for DATA at the largest blksize (65464 + 4) and any request.
MAX_DATAGRAM = 65536


# Linux UDP GSO: Python's socket module lacks UDP_SEGMENT before 3.12. A
# sendmsg takes at most 64 segments, and at most 65,507 bytes in all (IPv4).
_UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
_GSO_MAX_SEGMENTS = 64
_GSO_MAX_BYTES = 65000
_U16 = struct.Struct("=H")
_SOCK_NONBLOCK: int | None = getattr(socket, "SOCK_NONBLOCK", None)
#: Datagrams :meth:`QuietPort.readQueued` reads at most in one call.
READ_QUEUED_LIMIT = 1024


#: ``IReactorUDP.listenUDP``'s signature: ``(port, protocol, interface, maxPacketSize)``.
ListenUDP = Callable[..., IListeningPort]


#: Address family of each interface a transfer port was bound to: a
#: handful of local addresses, checked once each by Twisted's own rules.
_FAMILIES: dict[str, socket.AddressFamily] = {}


class QuietPort(udp.Port):
    """``udp.Port`` minus the per-port log lines, and cheaper to open, to
    close and to write to: a storm opens and closes thousands a second.

    ``udp.Port.write`` checks on every call that the address is an IP address
    of the port's family (``isIPAddress``, ``isIPv6Address``: a quarter of
    the CPU of a windowed transfer). A transfer only ever writes to addresses
    that a socket of the same family received from, so :meth:`write` sends
    at once, with ``udp.Port.write``'s error handling. Opening a port,
    Twisted also checks the interface with those two functions and formats
    a log prefix from the protocol; here the check is done once per
    interface and the prefix when something logs.
    """

    def setLogStr(self) -> None:
        """Nothing: :meth:`logPrefix` builds the prefix when it is asked for."""

    def logPrefix(self) -> str:
        return f"{self._getLogPrefix(self.protocol)} (UDP)"

    def _setAddressFamily(self) -> None:
        family = _FAMILIES.get(self.interface)
        if family is None:
            super()._setAddressFamily()  # raises InvalidAddressError for a non-address
            family = _FAMILIES[self.interface] = self.addressFamily
        self.addressFamily = family

    def write(self, datagram: bytes | memoryview, addr: Any = None) -> None:
        if addr is None or self._connectedAddr:
            udp.Port.write(self, datagram, addr)  # type: ignore[arg-type]  # sendto takes any buffer
            return
        try:
            self.socket.sendto(datagram, addr)
        except OSError as se:  # EINTR is retried by Python itself (PEP 475)
            if se.errno == errno.EMSGSIZE:
                raise error.MessageLengthError("message too long") from se
            if se.errno != errno.ECONNREFUSED:  # an earlier ICMP error: ignored, as Twisted does
                raise

    #: Datagrams one :meth:`doRead` reads at most: 1 on a transfer's own
    #: port; more on a port that transfers share (``ctftp.ports``), where
    #: several ACKs wait at once.
    readBatch = 1

    def doRead(self) -> None:
        """Read up to :attr:`readBatch` datagrams.

        ``udp.Port.doRead`` reads until the socket is empty, which on a
        transfer's port (one ACK per window) costs a ``recvfrom`` that fails
        with EAGAIN, and its exception, after every ACK. The reactor polls
        level-triggered, so it calls again at once while datagrams wait;
        :meth:`readQueued` still reads all of them when that is the point.
        """
        self._read(self.readBatch)

    def readQueued(self) -> None:
        """Read every datagram waiting in the socket now (at most
        :data:`READ_QUEUED_LIMIT`, so a flood cannot keep the caller here)."""
        self._read(READ_QUEUED_LIMIT)

    def _read(self, limit: int) -> None:
        """Deliver up to ``limit`` datagrams; stop early once nothing waits
        or the protocol closed the port."""
        recvfrom = self.socket.recvfrom
        for _ in range(limit):
            try:
                data, addr = recvfrom(self.maxPacketSize)
            except OSError as se:
                if se.errno in udp._sockErrReadIgnore:
                    return
                if se.errno in udp._sockErrReadRefuse:
                    if self._connectedAddr:
                        self.protocol.connectionRefused()
                    return
                raise
            if self.addressFamily == socket.AF_INET6:
                addr = addr[:2]
            try:
                self.protocol.datagramReceived(data, addr)
            except BaseException:
                log.err()
            if not self.connected:
                return

    #: Whether :meth:`writeDatagrams` tries UDP GSO; off for good on this port
    #: once the kernel or the route refuses it.
    gso = sys.platform == "linux"

    def writeDatagrams(self, datagrams: Sequence[bytes | memoryview], addr: Any) -> None:
        """Send each of ``datagrams`` to ``addr`` as a datagram of its own, in order.

        A window of DATA is blocks of one size and perhaps a shorter last
        one: with Linux UDP GSO (``UDP_SEGMENT``) such a run goes to the
        kernel in one ``sendmsg`` and leaves as the same datagrams, one
        system call instead of one per block. Elsewhere, or when GSO is
        refused (old kernel, segments larger than the route's MTU), each
        datagram goes through :meth:`write`.
        """
        start, count = 0, len(datagrams)
        while start < count:
            size = len(datagrams[start])
            limit = min(count, start + min(_GSO_MAX_SEGMENTS, _GSO_MAX_BYTES // max(size, 1)))
            end = start + 1
            while end < limit and len(datagrams[end]) == size:
                end += 1
            if end < limit and len(datagrams[end]) < size:
                end += 1  # a shorter datagram may end a run
            if end - start == 1 or not (
                self.gso and self._sendSegments(datagrams[start:end], size, addr)
            ):
                for datagram in datagrams[start:end]:
                    self.write(datagram, addr)
            start = end

    def _sendSegments(self, datagrams: Sequence[bytes | memoryview], size: int, addr: Any) -> bool:
        """One ``sendmsg`` for ``datagrams``, each ``size`` bytes but the last;
        False (and GSO off) when the kernel refuses it: nothing was sent."""
        try:
            self.socket.sendmsg(
                datagrams, [(socket.SOL_UDP, _UDP_SEGMENT, _U16.pack(size))], 0, addr
            )
        except OSError as se:
            if se.errno != errno.ECONNREFUSED:  # refused as write ignores it: sent
                self.gso = False
                return False
        return True

    def createInternetSocket(self) -> socket.socket:
        """A non-blocking socket in one system call (Python makes sockets
        close-on-exec itself); Twisted's way adds three ``fcntl``/``ioctl``."""
        if _SOCK_NONBLOCK is None:
            skt: socket.socket = super().createInternetSocket()
            return skt
        return socket.socket(self.addressFamily, self.socketType | _SOCK_NONBLOCK)

    def stopListening(self) -> None:
        """Close the port now.

        ``udp.Port`` closes a call later (``callLater(0)``), a timer per
        transfer; closing at once is safe here: :meth:`doRead` does not touch
        the socket after the protocol returns, and an event the reactor
        already holds for a reused descriptor number only makes a
        :meth:`doRead` find nothing to read.
        """
        if self.connected:
            self.stopReading()
            self.connectionLost()

    #: SO_RCVBUF asked for; 0 keeps the system's default. A port that
    #: transfers share gets :data:`LISTENER_RCVBUF`: a thousand transfers on
    #: a few ports can have hundreds of ACKs waiting on one.
    receiveBuffer = 0

    def _bindSocket(self) -> None:
        try:
            skt = self.createInternetSocket()
            skt.bind((self.interface, self.port))
        except OSError as le:
            raise error.CannotListenError(self.interface, self.port, le) from le
        if self.receiveBuffer:
            growReceiveBuffer(skt, self.receiveBuffer)
        self._realPortNumber = skt.getsockname()[1]
        self.connected = 1
        self.socket = skt
        self.fileno = self.socket.fileno  # type: ignore[method-assign]

    def connectionLost(self, reason: Any = None) -> None:
        """Close the socket; the protocol's ``stopProtocol`` runs first.

        ``FileDescriptor.connectionLost`` would also stop a producer and
        writing: a UDP port has no producer and never asks the reactor to
        wait until its socket is writable (:meth:`write` calls ``sendto``
        at once, as ``udp.Port.write`` does), so only reading is stopped (a
        second ``stopReading`` after :meth:`stopListening`'s does nothing).
        """
        self._realPortNumber = None
        self.maxThroughput = -1
        self.disconnected = 1
        self.connected = 0
        self.stopReading()
        self.protocol.doStop()
        self.socket.close()
        del self.socket
        del self.fileno


class GroupedPort(QuietPort):
    """A transfer's own port that a :class:`ctftp.portgroup.PortGroup`
    watches instead of the reactor (set :attr:`group` before it listens)."""

    group: PortGroup

    def startReading(self) -> None:
        self.group.add(self)

    def stopReading(self) -> None:
        self.group.remove(self)


# Linux values; Python's socket module lacks IP_PKTINFO.
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
_IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_ANCILLARY_SIZE = socket.CMSG_SPACE(20)
#: Asked for; the kernel caps it at net.core.rmem_max.
LISTENER_RCVBUF = 4 * 1024 * 1024
WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def growReceiveBuffer(skt: socket.socket, size: int) -> None:
    """Ask for a ``size``-byte receive buffer (the kernel caps it at
    ``net.core.rmem_max``); the default one works, only smaller."""
    with contextlib.suppress(OSError):
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _destination(ancillary: list[tuple[int, int, bytes]]) -> str | None:
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= 12:
            return socket.inet_ntop(socket.AF_INET, data[8:12])
        if level == socket.IPPROTO_IPV6 and kind == _IPV6_PKTINFO and len(data) >= 16:
            return socket.inet_ntop(socket.AF_INET6, data[:16])
    return None


class ListenerPort(udp.Port):
    """A listener's port: big receive buffer; on a wildcard address, each
    datagram is delivered as ``datagramReceived(data, addr, localHost)``.

    ``v6only`` makes an IPv6 socket IPv6-only, so that ``[::]:69`` and
    ``0.0.0.0:69`` can both be listeners (Linux makes ``[::]`` dual-stack).
    """

    v6only = False

    def createInternetSocket(self) -> socket.socket:
        skt: socket.socket = super().createInternetSocket()
        if self.v6only and self.addressFamily == socket.AF_INET6:
            skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        return skt

    def _bindSocket(self) -> None:
        super()._bindSocket()
        skt = self.socket
        growReceiveBuffer(skt, LISTENER_RCVBUF)
        self._wantsDestination = self.interface in WILDCARDS
        if self._wantsDestination:
            if self.addressFamily == socket.AF_INET6:
                skt.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVPKTINFO, 1)
            else:
                skt.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)

    def doRead(self) -> None:
        if not self._wantsDestination:
            super().doRead()
            return
        read = 0
        recvmsg = self.socket.recvmsg
        while read < self.maxThroughput:
            try:
                data, ancillary, _flags, addr = recvmsg(self.maxPacketSize, _ANCILLARY_SIZE)
            except OSError as se:
                if se.args[0] in udp._sockErrReadIgnore or se.args[0] in udp._sockErrReadRefuse:
                    return
                raise
            read += len(data)
            if self.addressFamily == socket.AF_INET6:
                addr = addr[:2]
            try:
                self.protocol.datagramReceived(data, addr, _destination(ancillary))
            except BaseException:
                log.err()


def _listenWith(portClass: type[udp.Port], reactor: IReactorUDP, **attributes: Any) -> ListenUDP:
    if not isinstance(reactor, ReactorBase):
        return reactor.listenUDP  # the in-memory reactor of ctftp.testing

    def listen(
        port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> IListeningPort:
        p = portClass(port, protocol, interface, maxPacketSize, reactor)
        for name, value in attributes.items():
            setattr(p, name, value)
        p.startListening()
        return p

    return listen


def transferListener(
    reactor: IReactorUDP,
    *,
    readBatch: int = 1,
    receiveBuffer: int = 0,
    group: PortGroup | None = None,
) -> ListenUDP:
    """``listenUDP`` for transfer ports on ``reactor``: :class:`QuietPort`,
    reading up to ``readBatch`` datagrams a wake-up, with a receive buffer of
    ``receiveBuffer`` bytes (0: the system's default); watched by ``group``
    (a :class:`GroupedPort`) when given."""
    grouping = {} if group is None else {"group": group}
    return _listenWith(
        QuietPort if group is None else GroupedPort,
        reactor,
        readBatch=readBatch,
        receiveBuffer=receiveBuffer,
        **grouping,
    )


def listenerListener(reactor: IReactorUDP, *, v6only: bool = False) -> ListenUDP:
    """``listenUDP`` for listener ports on ``reactor``: :class:`ListenerPort`."""
    return _listenWith(ListenerPort, reactor, v6only=v6only)
