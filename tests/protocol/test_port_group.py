"""Transfer ports watched through one epoll descriptor (ctftp.portgroup):
real sockets, the group's reads driven by hand, a MemoryReactor that records
what the reactor is asked to watch."""

from __future__ import annotations

import select
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import MemoryReactor
from twisted.logger import capturedLogs

from ctftp.config import ServerConfig
from ctftp.portgroup import PortGroup, available
from ctftp.ports import FreshPorts, transferPorts
from ctftp.udp import GroupedPort

pytestmark = pytest.mark.skipif(not hasattr(select, "epoll"), reason="Linux epoll only")


class Recording(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append(datagram)


class ClosingOther(Recording):
    """Closes another port on its first datagram (a transfer ending another)."""

    def __init__(self, other: list[GroupedPort]) -> None:
        super().__init__()
        self.other = other

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        super().datagramReceived(datagram, addr)
        self.other[0].stopListening()


@pytest.fixture
def client() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s


@pytest.fixture
def fakeReactor() -> MemoryReactor:
    return MemoryReactor()


@pytest.fixture
def group(fakeReactor: MemoryReactor) -> Iterator[PortGroup]:
    g = PortGroup(fakeReactor)
    yield g
    g.close()


def grouped(group: PortGroup, protocol: DatagramProtocol, fakeReactor: Any) -> GroupedPort:
    port = GroupedPort(0, protocol, "127.0.0.1", 65536, fakeReactor)
    port.group = group
    port.startListening()
    return port


def send(client: socket.socket, port: GroupedPort, data: bytes) -> None:
    client.sendto(data, ("127.0.0.1", port.getHost().port))


def readable(group: PortGroup) -> None:
    """Wait (at most 5 s) until the group's descriptor says something waits."""
    wait = select.poll()
    wait.register(group.fileno(), select.POLLIN)
    assert wait.poll(5000), "nothing arrived"


def test_the_reactor_watches_the_group_not_the_ports(group, fakeReactor):
    ports = [grouped(group, Recording(), fakeReactor) for _ in range(3)]
    assert fakeReactor.getReaders() == [group]
    assert len(group) == 3
    for port in ports:
        port.stopListening()
    assert len(group) == 0
    assert fakeReactor.getReaders() == [group]  # kept until close: no epoll_ctl churn
    group.close()
    assert fakeReactor.getReaders() == []
    assert group.fileno() == -1


def test_one_read_of_the_group_serves_every_port_with_a_datagram(group, fakeReactor, client):
    protocols = [Recording() for _ in range(3)]
    ports = [grouped(group, p, fakeReactor) for p in protocols]
    try:
        send(client, ports[0], b"to 0")
        send(client, ports[2], b"to 2")
        readable(group)
        # Both are queued by the time the kernel wakes us; allow a retry
        # if the second datagram is still on its way.
        for _ in range(50):
            group.doRead()
            if protocols[2].received and protocols[0].received:
                break
            readable(group)
        assert protocols[0].received == [b"to 0"]
        assert protocols[1].received == []
        assert protocols[2].received == [b"to 2"]
        group.doRead()  # nothing waits: nothing happens
        assert sum(len(p.received) for p in protocols) == 2
    finally:
        for port in ports:
            port.stopListening()


def test_a_port_closed_during_a_round_is_skipped(group, fakeReactor, client):
    victim: list[GroupedPort] = []
    closer = ClosingOther(victim)
    first = grouped(group, closer, fakeReactor)
    victimProtocol = Recording()
    victim.append(grouped(group, victimProtocol, fakeReactor))
    send(client, victim[0], b"late")
    send(client, first, b"end the other one")
    for _ in range(50):
        readable(group)
        group.doRead()
        if closer.received:
            break
    # The victim may have been read before the closer in that round; it is
    # never read after being closed, and its socket is gone.
    assert closer.received == [b"end the other one"]
    assert victimProtocol.received in ([], [b"late"])
    assert not victim[0].connected and not hasattr(victim[0], "socket")
    assert len(group) == 1
    first.stopListening()


def test_a_port_whose_read_fails_is_closed_and_the_rest_served(group, fakeReactor, client):
    good = Recording()
    goodPort = grouped(group, good, fakeReactor)
    badPort = grouped(group, Recording(), fakeReactor)

    def broken() -> None:
        raise OSError(5, "simulated socket failure")

    badPort.doRead = broken  # type: ignore[method-assign]
    send(client, badPort, b"x")
    send(client, goodPort, b"y")
    with capturedLogs() as captured:
        for _ in range(50):
            readable(group)
            group.doRead()
            if good.received and not badPort.connected:
                break
    assert any("simulated socket failure" in str(e.get("failure")) for e in captured)
    assert good.received == [b"y"]
    assert not badPort.connected
    assert len(group) == 1
    goodPort.stopListening()


def test_available_needs_a_reactor_that_watches_descriptors():
    assert available(reactor) == (sys.platform == "linux")
    assert not available(object())


def test_fresh_ports_on_a_real_reactor_use_a_group_closed_with_them():
    ports = transferPorts(ServerConfig(root_dir="/tmp"), reactor)
    assert isinstance(ports, FreshPorts)
    assert isinstance(ports._group, PortGroup)
    transfer = Recording()
    ports.attach(transfer, ("127.0.0.1", 9), "127.0.0.1")  # type: ignore[arg-type]
    try:
        assert ports._group in reactor.getReaders()
        assert transfer.transport not in reactor.getReaders()
    finally:
        transfer.transport.stopListening()  # type: ignore[union-attr]
        ports.close()
    assert ports._group not in reactor.getReaders()
