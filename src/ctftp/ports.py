"""Where each transfer gets its UDP port, its TID (SPEC section 3).

:class:`FreshPorts`, the default, opens a new port for every transfer and
closes it when the transfer ends, as tftpd-hpa, atftpd and dnsmasq do: the
port is the transfer's alone, and the transfer itself answers a packet from
anyone but its client with ERROR 5. On Linux the reactor watches them through
a :class:`ctftp.portgroup.PortGroup` (one dispatch reads every transfer
socket that has a datagram waiting).

:class:`PooledPorts` (``port_pool = N``) keeps N ports open on each local
address and shares them among transfers; each datagram goes to the transfer
of the client that sent it. It lets a firewall open a fixed, small set of
transfer ports (with ``port_range``), as dnsmasq's ``tftp-single-port`` does,
keeps the number of open sockets at N per address whatever the number of
transfers, and saves the ``socket``, ``bind`` and ``close`` of each transfer
(where there is no port group, also a reactor dispatch per ACK: a pooled port
reads several ACKs in one). What makes a TID a TID still holds per client:

* a client never has two transfers on one port at once;
* after a client's transfer on a port ends, that client address does not
  get that port again for ``linger`` seconds (the longest a client can go on
  retransmitting to an ended transfer), so that its late packets cannot be
  taken for a newer transfer's; they are dropped without a reply. When every
  pooled port is barred that way, the transfer gets a fresh port of its own;
* a packet from any other address gets ERROR 5.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol, cast

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.protocol import DatagramProtocol

from ctftp.config import ServerConfig
from ctftp.portgroup import PortGroup
from ctftp.portgroup import available as portGroupAvailable
from ctftp.transfer import UDPTransfer, answerStranger
from ctftp.udp import LISTENER_RCVBUF, MAX_DATAGRAM, ListenUDP, transferListener

__all__ = [
    "TransferPorts",
    "FreshPorts",
    "PooledPorts",
    "transferPorts",
    "RECENT_LIMIT",
    "POOLED_READ_BATCH",
]

#: Client addresses a pooled port remembers as recently served (oldest
#: forgotten first), so that a storm cannot grow the table without bound.
RECENT_LIMIT = 4096
#: Datagrams a pooled port reads in one wake-up of the reactor: the ACKs
#: waiting for its transfers, without starving the other ports.
POOLED_READ_BATCH = 64


class TransferPorts(Protocol):
    """How :class:`ctftp.server.TFTPServer` gives transfers their ports."""

    def attach(self, transfer: UDPTransfer, client: tuple[str, int], host: str) -> None:
        """Give ``transfer`` (for ``client``) a port on local address ``host``:
        ``transfer.makeConnection`` is called, and the transfer's transport's
        ``stopListening`` later gives the port back. Raises
        ``CannotListenError`` when no port can be had."""

    def close(self) -> None:
        """Close the ports kept open between transfers (service stop)."""


class _PortOpener:
    """``listenUDP`` on any free port, or on the next free one of ``port_range``."""

    def __init__(self, listenUDP: ListenUDP, portRange: tuple[int, int] | None) -> None:
        self._listenUDP = listenUDP
        self._range = portRange
        self._cycle = itertools.cycle(range(portRange[0], portRange[1] + 1)) if portRange else None

    def open(self, protocol: DatagramProtocol, host: str) -> IListeningPort:
        if self._range is None or self._cycle is None:
            return self._listenUDP(0, protocol, interface=host, maxPacketSize=MAX_DATAGRAM)
        low, high = self._range
        lastError: CannotListenError | None = None
        for _ in range(high - low + 1):
            try:
                return self._listenUDP(
                    next(self._cycle), protocol, interface=host, maxPacketSize=MAX_DATAGRAM
                )
            except CannotListenError as e:
                lastError = e
        assert lastError is not None
        raise lastError


class FreshPorts:
    """A new port for every transfer, closed by the transfer at its end;
    ``group``, when given, is what watches them (and is closed at the end)."""

    def __init__(
        self,
        listenUDP: ListenUDP,
        portRange: tuple[int, int] | None,
        group: PortGroup | None = None,
    ) -> None:
        self._opener = _PortOpener(listenUDP, portRange)
        self._group = group

    def attach(self, transfer: UDPTransfer, client: tuple[str, int], host: str) -> None:
        self._opener.open(transfer, host)

    def close(self) -> None:
        """No port stays open between transfers; the group lets go of the reactor."""
        if self._group is not None:
            self._group.close()


class _Channel:
    """The transport a pooled transfer sees: its shared port's, whose
    ``stopListening`` gives the port back instead of closing it.

    ``write`` (and ``writeDatagrams`` when the port has it) are the port's own
    bound methods: a packet costs no extra call on its way out.
    """

    def __init__(self, shared: _SharedPort, client: tuple[str, int]) -> None:
        transport = shared.transport
        self._shared = shared
        self._client = client
        self.write: Callable[..., None] = transport.write  # type: ignore[union-attr]
        writeDatagrams = getattr(transport, "writeDatagrams", None)
        if writeDatagrams is not None:
            self.writeDatagrams = writeDatagrams

    def readQueued(self) -> None:
        """Deliver what waits in the shared socket (to every transfer on it)."""
        readQueued = getattr(self._shared.transport, "readQueued", None)
        if readQueued is not None:
            readQueued()

    def getHost(self) -> Any:
        return self._shared.transport.getHost()  # type: ignore[union-attr]

    def stopListening(self) -> None:
        self._shared.detach(self._client)


class _SharedPort(DatagramProtocol):
    """One pooled port: routes each datagram to its sender's transfer.

    ``recent`` maps client addresses whose transfer here ended to when it
    ended, oldest first; ``private`` ports serve one transfer and close after.
    """

    noisy = False

    def __init__(
        self, host: str, clock: IReactorTime, linger: float, *, private: bool = False
    ) -> None:
        self.host = host
        self.clock = clock
        self.linger = linger
        self.private = private
        self.transfers: dict[Any, UDPTransfer] = {}
        self.closed = False
        self.recent: OrderedDict[Any, float] = OrderedDict()

    def free(self, client: Any, now: float) -> bool:
        """Whether ``client`` may start a transfer on this port now."""
        if self.closed or client in self.transfers:
            return False
        ended = self.recent.get(client)
        return ended is None or now - ended >= self.linger

    def attach(self, transfer: UDPTransfer, client: tuple[str, int]) -> None:
        self.recent.pop(client, None)
        self.transfers[client] = transfer
        assert self.transport is not None
        transfer.makeConnection(_Channel(self, client))  # type: ignore[arg-type]

    def detach(self, client: Any) -> None:
        transfer = self.transfers.pop(client, None)
        if transfer is None:
            return
        recent = self.recent
        recent[client] = now = self.clock.seconds()
        while recent and (
            len(recent) > RECENT_LIMIT or now - next(iter(recent.values())) >= self.linger
        ):
            recent.popitem(last=False)
        transfer.doStop()
        if self.private and not self.transfers:
            self.close()

    def close(self) -> None:
        """Close the port (its transport is the listening port it was opened on)."""
        if self.transport is not None and not self.closed:
            cast(IListeningPort, self.transport).stopListening()

    def stopProtocol(self) -> None:
        """The port closed: at service stop, or after a socket error the
        reactor gave up on. Its transfers cannot go on; they end now."""
        self.closed = True
        for transfer in list(self.transfers.values()):
            transfer.stop(("error", "aborted", None))

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        transfer = self.transfers.get(addr)
        if transfer is not None:
            transfer.datagramReceived(datagram, addr)
            return
        if addr in self.recent:
            return  # late, for a transfer that ended: not worth an answer
        assert self.transport is not None
        answerStranger(self.transport.write, datagram, addr)


class PooledPorts:
    """``size`` ports per local address shared by transfers (see the module)."""

    def __init__(
        self,
        listenUDP: ListenUDP,
        portRange: tuple[int, int] | None,
        *,
        size: int,
        clock: IReactorTime,
        linger: float,
    ) -> None:
        self._opener = _PortOpener(listenUDP, portRange)
        self.size = size
        self.clock = clock
        self.linger = linger
        self.pools: dict[str, list[_SharedPort]] = {}
        self._turn = itertools.count()

    def attach(self, transfer: UDPTransfer, client: tuple[str, int], host: str) -> None:
        pool = self.pools.setdefault(host, [])
        if len(pool) < self.size:
            shared = self._open(host)
            pool.append(shared)
        else:
            shared = self._choose(pool, client) or self._open(host, private=True)
        shared.attach(transfer, client)

    def _choose(self, pool: list[_SharedPort], client: Any) -> _SharedPort | None:
        """The next port in turn that ``client`` may use, if any; a port
        that closed under its transfers is replaced on the way."""
        now = self.clock.seconds()
        first = next(self._turn)
        for i in range(len(pool)):
            index = (first + i) % len(pool)
            if pool[index].closed:
                pool[index] = self._open(pool[index].host)
            if pool[index].free(client, now):
                return pool[index]
        return None

    def _open(self, host: str, *, private: bool = False) -> _SharedPort:
        shared = _SharedPort(host, self.clock, self.linger, private=private)
        self._opener.open(shared, host)
        return shared

    def close(self) -> None:
        pools, self.pools = self.pools, {}
        for pool in pools.values():
            for shared in pool:
                shared.close()


def transferPorts(
    config: ServerConfig, reactor: Any, listenUDP: ListenUDP | None = None
) -> TransferPorts:
    """The transfer ports ``config`` asks for (``port_pool``, ``port_range``)
    on ``reactor``, opened with ``listenUDP`` when given (tests)."""
    if config.port_pool == 0:
        if listenUDP is not None:
            return FreshPorts(listenUDP, config.port_range)
        group = PortGroup(reactor) if portGroupAvailable(reactor) else None
        return FreshPorts(transferListener(reactor, group=group), config.port_range, group)
    return PooledPorts(
        listenUDP
        or transferListener(reactor, readBatch=POOLED_READ_BATCH, receiveBuffer=LISTENER_RCVBUF),
        config.port_range,
        size=config.port_pool,
        clock=reactor,
        linger=config.timeout_sec * (config.max_retries + 1),
    )
