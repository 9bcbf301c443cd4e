"""Test doubles for ctftp and for applications that embed it.

:class:`MemoryUDPReactor` is a ``task.Clock`` that also provides
``IReactorUDP``: ports live in memory, datagrams written by a protocol are
recorded on its port, and a test delivers datagrams by hand. A whole transfer
then runs without sockets and without real time::

    reactor = MemoryUDPReactor()
    service = makeService(config, reactor=reactor)
    service.startService()
    listener = reactor.portAt("127.0.0.1", 6969)
    listener.deliver(encodeRequest(OP_RRQ, "hello.txt"), ("10.0.0.5", 4000))
    transfer = reactor.newestPort()
    transfer.written  # [(DATA 1, ("10.0.0.5", 4000))]

:class:`ReadClient` and :func:`fetch` are a small TFTP read client, for tests
against a real reactor on loopback.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import address, error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IReactorTime,
    IReactorUDP,
    IUDPTransport,
)
from twisted.internet.protocol import AbstractDatagramProtocol, DatagramProtocol
from twisted.internet.task import Clock
from zope.interface import implementer

from ctftp.packets import (
    OP_RRQ,
    Data,
    Error,
    MalformedPacket,
    OptionAck,
    decode,
    encodeAck,
    encodeRequest,
)

__all__ = [
    "MemoryUDPReactor",
    "MemoryDatagramPort",
    "ReadClient",
    "ReadResult",
    "TFTPClientError",
    "fetch",
]


@implementer(IUDPTransport, IListeningPort)
class MemoryDatagramPort:
    """A UDP port in memory: ``written`` holds ``(datagram, addr)`` pairs."""

    def __init__(
        self,
        reactor: MemoryUDPReactor,
        port: int,
        protocol: AbstractDatagramProtocol,
        interface: str,
        maxPacketSize: int,
    ) -> None:
        self.reactor = reactor
        self.port = port
        self.protocol = protocol
        self.interface = interface
        self.maxPacketSize = maxPacketSize
        self.written: list[tuple[bytes, Any]] = []
        self.listening = False
        self._connected: Any = None

    # IListeningPort
    def startListening(self) -> None:
        self.listening = True
        self.protocol.makeConnection(self)

    def stopListening(self) -> None:
        if self.listening:
            self.listening = False
            self.reactor._release(self)
            self.protocol.doStop()

    def getHost(self) -> address.IPv4Address | address.IPv6Address:
        if ":" in self.interface:
            return address.IPv6Address("UDP", self.interface, self.port)
        return address.IPv4Address("UDP", self.interface or "0.0.0.0", self.port)

    # IUDPTransport
    def write(self, packet: bytes, addr: Any = None) -> None:
        if addr is None:
            addr = self._connected
        self.written.append((bytes(packet), addr))  # a snapshot, as a socket sends

    def connect(self, host: str, port: int) -> None:
        self._connected = (host, port)

    def getBroadcastAllowed(self) -> bool:
        return False

    def setBroadcastAllowed(self, enabled: bool) -> None:
        pass

    # test helpers
    def deliver(self, datagram: bytes, addr: Any) -> None:
        """Hand ``datagram`` from ``addr`` to the protocol, as a socket would."""
        if not self.listening:
            raise RuntimeError(f"port {self.port} is closed")
        self.protocol.datagramReceived(datagram, addr)

    def take(self) -> list[tuple[bytes, Any]]:
        """Return and forget what was written so far."""
        out, self.written = self.written, []
        return out


@implementer(IReactorUDP)
class MemoryUDPReactor(Clock):
    """A fake clock with in-memory UDP ports; port 0 picks the next free number."""

    def __init__(self, firstEphemeral: int = 50000) -> None:
        super().__init__()
        self.ports: dict[tuple[str, int], MemoryDatagramPort] = {}
        self.opened: list[MemoryDatagramPort] = []
        self._nextPort = firstEphemeral
        self.refusePorts: set[int] = set()

    def listenUDP(
        self,
        port: int,
        protocol: AbstractDatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,
    ) -> MemoryDatagramPort:
        if port == 0:
            while (interface, self._nextPort) in self.ports:
                self._nextPort += 1
            port = self._nextPort
            self._nextPort += 1
        if (interface, port) in self.ports or port in self.refusePorts:
            raise error.CannotListenError(interface, port, OSError(98, "Address in use"))
        p = MemoryDatagramPort(self, port, protocol, interface, maxPacketSize)
        self.ports[(interface, port)] = p
        self.opened.append(p)
        p.startListening()
        return p

    def _release(self, port: MemoryDatagramPort) -> None:
        self.ports.pop((port.interface, port.port), None)

    def portAt(self, interface: str, port: int) -> MemoryDatagramPort:
        return self.ports[(interface, port)]

    def newestPort(self) -> MemoryDatagramPort:
        return self.opened[-1]


class ReadClient(DatagramProtocol):
    """A small lock-step TFTP read client over any ``IReactorUDP``.

    For tests of ctftp and of applications that embed it: it fetches one file
    and fires ``result`` with a :class:`ReadResult`, or fails with
    :class:`TFTPClientError` on an ERROR, or with ``TimeoutError`` when the
    server stays silent for ``timeout`` seconds ``retries + 1`` times.
    """

    noisy = False

    def __init__(
        self,
        clock: IReactorTime,
        server: tuple[str, int],
        filename: str,
        *,
        mode: str = "octet",
        options: tuple[tuple[str, str], ...] = (),
        timeout: float = 1.0,
        retries: int = 5,
    ) -> None:
        self.clock = clock
        self.server = server
        self.request = encodeRequest(OP_RRQ, filename, mode, options)
        self.timeout = timeout
        self.retries = retries
        self.result: Deferred[ReadResult] = Deferred()
        self._peer: tuple[str, int] | None = None
        self._blksize = 512
        self._expected = 1
        self._received = bytearray()
        self._options: dict[str, str] = {}
        self._last = self.request
        self._tries = 0
        self._timer: IDelayedCall | None = None

    def startProtocol(self) -> None:
        self._send(self.request, self.server)

    def _send(self, packet: bytes, addr: tuple[str, int]) -> None:
        self._last = packet
        assert self.transport is not None
        self.transport.write(packet, addr)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.clock.callLater(self.timeout, self._timedOut)

    def _timedOut(self) -> None:
        self._tries += 1
        if self._tries > self.retries:
            self._end(failure=TimeoutError(f"no answer from {self.server}"))
            return
        self._send(self._last, self._peer or self.server)

    def _end(self, value: ReadResult | None = None, failure: Exception | None = None) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.result.called:
            return
        if failure is not None:
            self.result.errback(failure)
        elif value is not None:
            self.result.callback(value)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        addr = tuple(addr[:2])
        if self._peer is None:
            self._peer = addr
        elif addr != self._peer:
            return
        try:
            packet = decode(datagram)
        except MalformedPacket:
            return
        if isinstance(packet, Error):
            self._end(failure=TFTPClientError(packet.code, packet.message))
        elif isinstance(packet, OptionAck):
            self._options = dict(packet.options)
            self._blksize = int(self._options.get("blksize", 512))
            self._send(encodeAck(0), addr)
        elif isinstance(packet, Data) and packet.block == self._expected & 0xFFFF:
            self._received += packet.payload
            self._expected += 1
            self._tries = 0
            ack = encodeAck(packet.block)
            if len(packet.payload) < self._blksize:
                assert self.transport is not None
                self.transport.write(ack, addr)
                self._end(ReadResult(bytes(self._received), addr, self._options))
                return
            self._send(ack, addr)


class TFTPClientError(Exception):
    """The server answered with an ERROR packet."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"ERROR {code}: {message}")
        self.code = code
        self.message = message


class ReadResult:
    """What :class:`ReadClient` fetched, and from which server address."""

    def __init__(self, data: bytes, peer: tuple[str, int], options: dict[str, str]) -> None:
        self.data = data
        self.peer = peer
        self.options = options


def fetch(
    reactor: Any,
    server: tuple[str, int],
    filename: str,
    *,
    interface: str = "",
    **kwargs: Any,
) -> Deferred[ReadResult]:
    """Fetch ``filename`` from ``server`` with a :class:`ReadClient` on a new
    port of ``reactor``; the port is closed when the result fires."""
    client = ReadClient(reactor, server, filename, **kwargs)
    port = reactor.listenUDP(0, client, interface=interface)

    def close(result: Any) -> Any:
        port.stopListening()
        return result

    return client.result.addBoth(close)
