"""The fast paths of the read path (docs/performance.md) send exactly what the
plain paths send: the same datagrams to the same address, the same errors.

Real loopback sockets where the fast path is a socket call; no timing here.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from twisted.internet import error, reactor
from twisted.internet.protocol import DatagramProtocol

from ctftp.udp import QuietPort


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        yield s


@pytest.fixture
def quietPort() -> Iterator[QuietPort]:
    port = QuietPort(0, DatagramProtocol(), "127.0.0.1", 65536, reactor)
    port.startListening()
    yield port
    port.stopReading()
    port.connectionLost()


def test_quiet_port_write_sends_each_datagram_as_it_is(quietPort, receiver):
    peer = receiver.getsockname()
    packets = [b"\x00\x03\x00\x01" + bytes(range(256)) * 2, b"\x00\x03\x00\x02", b""]
    for packet in packets:
        quietPort.write(packet, peer)
    for packet in packets:
        data, source = receiver.recvfrom(65536)
        assert data == packet
        assert source == ("127.0.0.1", quietPort.getHost().port)


def test_quiet_port_write_too_large_is_twisteds_error(quietPort, receiver):
    with pytest.raises(error.MessageLengthError):
        quietPort.write(b"x" * 70000, receiver.getsockname())


def test_quiet_port_connected_write_is_twisteds(quietPort, receiver):
    host, port = receiver.getsockname()
    quietPort.connect(host, port)
    quietPort.write(b"connected")
    assert receiver.recv(100) == b"connected"
