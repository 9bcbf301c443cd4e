"""UDP ports for transfers.

Twisted's ``udp.Port`` writes two legacy log lines for every port it opens
and closes ("... starting on 41234", "(UDP Port 41234 Closed)"). A TFTP server
opens a port per transfer, so at thousands of transfers a second those lines
would be most of the log and a measurable share of the CPU. :class:`QuietPort`
is the same port without them. Listener ports keep Twisted's port: their
start and stop are worth a line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import error, udp
from twisted.internet.base import BasePort, ReactorBase
from twisted.internet.interfaces import IListeningPort, IReactorUDP
from twisted.internet.protocol import DatagramProtocol

__all__ = ["QuietPort", "ListenUDP", "transferListener", "MAX_DATAGRAM"]

#: Large enough for DATA at the largest blksize (65464 + 4) and any request.
MAX_DATAGRAM = 65536


#: ``IReactorUDP.listenUDP``'s signature: ``(port, protocol, interface, maxPacketSize)``.
ListenUDP = Callable[..., IListeningPort]


class QuietPort(udp.Port):
    """``udp.Port`` minus the per-port log lines."""

    def _bindSocket(self) -> None:
        try:
            skt = self.createInternetSocket()
            skt.bind((self.interface, self.port))
        except OSError as le:
            raise error.CannotListenError(self.interface, self.port, le) from le
        self._realPortNumber = skt.getsockname()[1]
        self.connected = 1
        self.socket = skt
        self.fileno = self.socket.fileno  # type: ignore[method-assign]

    def connectionLost(self, reason: Any = None) -> None:
        self._realPortNumber = None
        self.maxThroughput = -1
        BasePort.connectionLost(self, reason)
        self.protocol.doStop()
        self.socket.close()
        del self.socket
        del self.fileno


def transferListener(reactor: IReactorUDP) -> ListenUDP:
    """How the server opens transfer ports on ``reactor``.

    A real reactor gets :class:`QuietPort`; anything else (the in-memory
    reactor of :mod:`ctftp.testing`) its own ``listenUDP``.
    """
    if not isinstance(reactor, ReactorBase):
        return reactor.listenUDP

    def listen(
        port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> IListeningPort:
        p = QuietPort(port, protocol, interface, maxPacketSize, reactor)
        p.startListening()
        return p

    return listen
