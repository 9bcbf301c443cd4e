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
"""

from __future__ import annotations

from typing import Any

from twisted.internet import address, error
from twisted.internet.interfaces import IListeningPort, IReactorUDP, IUDPTransport
from twisted.internet.protocol import AbstractDatagramProtocol
from twisted.internet.task import Clock
from zope.interface import implementer

__all__ = ["MemoryUDPReactor", "MemoryDatagramPort"]


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
        self.written.append((packet, addr))

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
