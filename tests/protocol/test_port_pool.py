"""``port_pool``: transfers sharing a few ports, routed by client address.

Each test plays clients by hand on the in-memory reactor, so the order of
every packet is exact: interleaved transfers on one port, strangers, late
packets of ended transfers, a client port coming back, port_range, stop.
"""

from __future__ import annotations

from typing import Any

from conftest import CLIENT, LISTEN

from ctftp.packets import OP_RRQ, Data, Error, decode, encodeAck, encodeError, encodeRequest
from ctftp.ports import RECENT_LIMIT, PooledPorts, _SharedPort
from ctftp.testing import MemoryDatagramPort, MemoryUDPReactor

OTHER = ("10.0.0.6", 40001)


def _blocks(port: MemoryDatagramPort, client: Any) -> list[Data]:
    """Take what ``port`` wrote to ``client`` (only), decoded; the rest stays."""
    mine = [(d, a) for d, a in port.written if a == client]
    port.written = [(d, a) for d, a in port.written if a != client]
    return [decode(d) for d, _ in mine]  # type: ignore[misc]


def _transferPorts(h: Any) -> list[MemoryDatagramPort]:
    return [p for p in h.reactor.opened if p is not h.listener]


def test_two_clients_share_one_port_and_both_get_their_file(harness: Any) -> None:
    h = harness(port_pool=1)
    a = h.write("a.bin", bytes(range(256)) * 5)  # 1280 bytes: 3 blocks
    b = h.write("b.bin", b"B" * 700)
    h.request("a.bin")
    h.request("b.bin", client=OTHER)
    (port,) = _transferPorts(h)
    got = {CLIENT: bytearray(), OTHER: bytearray()}
    done: set[Any] = set()
    for _ in range(10):
        for client in (CLIENT, OTHER):
            for packet in _blocks(port, client):
                assert isinstance(packet, Data)
                got[client] += packet.payload
                port.deliver(encodeAck(packet.block), client)
                if len(packet.payload) < 512:
                    done.add(client)
    assert done == {CLIENT, OTHER}
    assert bytes(got[CLIENT]) == a and bytes(got[OTHER]) == b
    assert [r.status for r in h.recorder.ended] == ["ok", "ok"]
    assert port.listening, "a pooled port stays open between transfers"
    assert not h.server.active


def test_a_stranger_gets_error_5_and_the_transfer_goes_on(harness: Any) -> None:
    h = harness(port_pool=1)
    data = h.write("f.bin", b"x" * 600)
    h.request("f.bin")
    (port,) = _transferPorts(h)
    assert decode(port.take()[0][0]) == Data(1, data[:512])
    port.deliver(encodeAck(1), OTHER)
    (reply, addr), *_ = port.take()
    assert addr == OTHER
    error = decode(reply)
    assert isinstance(error, Error) and error.code == 5
    port.deliver(encodeError(0, "go away"), OTHER)  # an ERROR is never answered
    assert port.take() == []
    port.deliver(encodeAck(1), CLIENT)
    assert decode(port.take()[0][0]) == Data(2, data[512:])
    port.deliver(encodeAck(2), CLIENT)
    assert h.recorder.ended[-1].status == "ok"


def test_late_packets_of_an_ended_transfer_get_no_answer(harness: Any) -> None:
    h = harness(port_pool=1)
    h.write("f.bin", b"x" * 10)
    h.request("f.bin")
    (port,) = _transferPorts(h)
    port.take()
    port.deliver(encodeAck(1), CLIENT)
    assert h.recorder.ended[-1].status == "ok"
    port.deliver(encodeAck(1), CLIENT)  # a duplicate of the final ACK
    assert port.take() == []


def test_a_client_port_coming_back_gets_another_port(harness: Any) -> None:
    h = harness(port_pool=3)
    h.write("f.bin", b"x" * 10)

    def fetch() -> MemoryDatagramPort:
        h.request("f.bin")
        port = next(p for p in _transferPorts(h) if any(a == CLIENT for _, a in p.written))
        port.take()
        port.deliver(encodeAck(1), CLIENT)
        return port

    seen = [fetch() for _ in range(3)]
    assert len(set(map(id, seen))) == 3, "a new TID each time"
    assert len(_transferPorts(h)) == 3, "all from the pool"
    # Past the linger time the client may have any pooled port again.
    h.reactor.advance(h.config.timeout_sec * (h.config.max_retries + 1))
    assert fetch() in seen
    assert len(_transferPorts(h)) == 3


def test_with_every_pooled_port_barred_a_client_gets_a_private_port(harness: Any) -> None:
    h = harness(port_pool=1)
    h.write("f.bin", b"x" * 10)
    h.request("f.bin")
    (pooled,) = _transferPorts(h)
    pooled.take()
    pooled.deliver(encodeAck(1), CLIENT)
    h.request("f.bin")  # the same client port at once: its old TID is barred
    private = h.transferPort()
    assert private is not pooled
    assert decode(private.take()[0][0]) == Data(1, b"x" * 10)
    private.deliver(encodeAck(1), CLIENT)
    assert not private.listening, "a private port closes with its transfer"
    assert pooled.listening
    assert [r.status for r in h.recorder.ended] == ["ok", "ok"]


def test_one_client_on_two_listeners_never_shares_a_port(harness: Any) -> None:
    second = ("127.0.0.1", 6970)
    h = harness(port_pool=1, listeners=(LISTEN, second))
    h.write("f.bin", b"x" * 10)
    h.request("f.bin")
    other = h.reactor.portAt(*second)
    other.deliver(encodeRequest(OP_RRQ, "f.bin"), CLIENT)
    ports = [p for p in _transferPorts(h) if p is not other]
    assert len(ports) == 2
    assert all(len(p.take()) == 1 for p in ports)


def test_port_range_bounds_the_pool(harness: Any) -> None:
    h = harness(port_pool=2, port_range=(50100, 50101))
    h.write("f.bin", b"x" * 600)
    for n in range(4):
        h.request("f.bin", client=(f"10.0.1.{n}", 1000))
    ports = _transferPorts(h)
    assert sorted(p.port for p in ports) == [50100, 50101]
    assert sum(len(p.written) for p in ports) == 4


def test_a_different_request_from_a_busy_client_drains_the_shared_port_first(
    harness: Any,
) -> None:
    h = harness(port_pool=1)
    h.write("f.bin", b"x" * 10)
    h.request("f.bin", options=(("tsize", "0"),))
    (port,) = _transferPorts(h)
    port.take()
    h.request("f.bin")
    assert h.recorder.ended[0].message == "aborted"
    assert len(h.server.active) == 1


def test_stopping_the_service_closes_the_pool(harness: Any) -> None:
    h = harness(port_pool=3)
    h.write("f.bin", b"x" * 600)
    h.request("f.bin")
    h.request("f.bin", client=OTHER)
    ports = _transferPorts(h)
    assert len(ports) == 2 and all(p.listening for p in ports)
    h.service.stopService()
    assert not any(p.listening for p in ports)
    assert [r.message for r in h.recorder.ended] == ["aborted", "aborted"]


def test_the_table_of_recent_clients_is_bounded() -> None:
    clock = MemoryUDPReactor()
    pool = PooledPorts(clock.listenUDP, None, size=1, clock=clock, linger=60.0)

    class Quiet:
        transport = None

        def makeConnection(self, transport: Any) -> None:
            self.transport = transport

        def doStop(self) -> None:
            pass

    for n in range(RECENT_LIMIT + 10):
        transfer = Quiet()
        pool.attach(transfer, ("10.1.0.1", n), "")  # type: ignore[arg-type]
        transfer.transport.stopListening()  # type: ignore[attr-defined]
    shared: _SharedPort = pool.pools[""][0]
    assert len(shared.recent) == RECENT_LIMIT
    assert ("10.1.0.1", 0) not in shared.recent, "the oldest are forgotten first"
    clock.advance(60.0)
    transfer = Quiet()
    pool.attach(transfer, ("10.1.0.2", 1), "")  # type: ignore[arg-type]
    transfer.transport.stopListening()  # type: ignore[attr-defined]
    assert list(shared.recent) == [("10.1.0.2", 1)], "past the linger time all go"


def test_a_pooled_port_that_dies_ends_its_transfers_and_is_replaced(harness: Any) -> None:
    h = harness(port_pool=1)
    h.write("f.bin", b"x" * 600)
    h.request("f.bin")
    (dead,) = _transferPorts(h)
    dead.stopListening()  # as the reactor does after a socket error it gives up on
    assert [r.message for r in h.recorder.ended] == ["aborted"]
    assert not h.server.active
    h.request("f.bin", client=OTHER)
    fresh = h.transferPort()
    assert fresh is not dead and fresh.listening
    assert decode(fresh.take()[0][0]) == Data(1, b"x" * 512)
