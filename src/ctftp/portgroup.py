"""Transfer ports watched through one epoll descriptor of their own (Linux).

With a fresh port per transfer (SPEC section 3, the default), a storm of
small files has a hundred transfer sockets open, each receiving one ACK per
round trip. Watched by the reactor one by one, every ACK costs a reactor
dispatch of its own: Twisted wraps each ready descriptor's ``doRead`` in a
logging context, about a tenth of the CPU of such a storm. A
:class:`PortGroup` registers the transfer sockets in an epoll descriptor of
its own and only that descriptor with the reactor; when it is readable,
one ``poll`` lists every transfer socket with a datagram waiting, and each is
read in turn, all in one dispatch.

The sockets, their TIDs and the packets are the same as with ports the
reactor watches itself: only who waits for them changes. A port that fails
while reading is closed, as the reactor would close it.
"""

from __future__ import annotations

import select
from typing import Any

from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.python import failure, log
from zope.interface import implementer

__all__ = ["PortGroup", "available"]


def available(reactor: Any) -> bool:
    """Whether ``reactor`` can watch a :class:`PortGroup`: Linux epoll, and a
    reactor that watches file descriptors."""
    return hasattr(select, "epoll") and IReactorFDSet.providedBy(reactor)


@implementer(IReadDescriptor)
class PortGroup:
    """Watches transfer ports for the reactor (see the module).

    A port joins with :meth:`add` where it would call ``reactor.addReader``
    and leaves with :meth:`remove`; the group is the reactor's reader from
    its first member until :meth:`close`.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._epoll: Any = None  # select.epoll, opened with the first member
        self._ports: dict[int, Any] = {}

    def add(self, port: Any) -> None:
        """Watch ``port`` (an ``IReadDescriptor`` with a socket) for reading."""
        fd = port.fileno()
        if fd in self._ports:
            return
        if self._epoll is None:
            self._epoll = select.epoll()
            self.reactor.addReader(self)
        self._epoll.register(fd, select.EPOLLIN)
        self._ports[fd] = port

    def remove(self, port: Any) -> None:
        """Stop watching ``port``; nothing if it is not watched."""
        fd = port.fileno()  # -1 once the port's socket is closed
        if self._ports.get(fd) is not port:
            return
        del self._ports[fd]
        self._epoll.unregister(fd)

    def __len__(self) -> int:
        return len(self._ports)

    def fileno(self) -> int:
        return -1 if self._epoll is None else int(self._epoll.fileno())

    def logPrefix(self) -> str:
        return "ctftp transfer ports"

    def doRead(self) -> None:
        """Read every member port that has a datagram waiting."""
        ports = self._ports
        for fd, _events in self._epoll.poll(0):
            port = ports.get(fd)
            if port is None:
                continue  # closed by a port read before it in this round
            try:
                port.doRead()
            except BaseException:
                log.err()
                self.remove(port)
                port.connectionLost(failure.Failure())

    def close(self) -> None:
        """Stop being the reactor's reader and close the epoll descriptor
        (service stop; members still open are forgotten, not closed)."""
        if self._epoll is None:
            return
        self.reactor.removeReader(self)
        self._epoll.close()
        self._epoll = None
        self._ports.clear()

    def connectionLost(self, reason: failure.Failure) -> None:
        """The reactor let go of the group (shutdown, or a failing descriptor)."""
        self.close()
