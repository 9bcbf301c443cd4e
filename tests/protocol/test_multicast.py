"""RFC 2090 multicast reads through the whole server, packet by packet."""

from __future__ import annotations

from conftest import CLIENT, Data, Error, OptionAck
from twisted.logger import capturedLogs, formatEvent

from ctftp.packets import ErrorCode, decode, encodeAck, encodeData, encodeError

GROUP = ("239.239.239.0", 1758)
OTHER = ("10.0.0.6", 40001)
THIRD = ("10.0.0.7", 40002)
MULTICAST = (("multicast", ""),)


def ask(h, name="boot.img", client=CLIENT, options=MULTICAST):
    h.request(name, options=options, client=client)


def sent(port):
    """What the session sent: (packet, destination) pairs, decoded."""
    return [(decode(datagram), addr) for datagram, addr in port.take()]


def oack(master, group=GROUP):
    return OptionAck((("multicast", f"{group[0]},{group[1]},{1 if master else 0}"),))


def blocks(h, size, blksize=512):
    data = bytes(i % 251 for i in range(size))
    h.write("boot.img", data)
    return [data[i : i + blksize] for i in range(0, size + 1, blksize)]


def session(h, *clients, size=2000):
    """A session of ``boot.img`` (``size`` bytes) with ``clients`` asking
    in turn, their OACKs taken: its port, and the file's blocks."""
    parts = blocks(h, size)
    for client in clients:
        ask(h, client=client)
    port = h.transferPort()
    sent(port)
    return port, parts


def test_one_client_gets_the_file_through_the_group(harness):
    h = harness(multicast=True)
    parts = blocks(h, 1300)  # blocks of 512, 512, 276
    ask(h, options=(("blksize", "512"), ("multicast", ""), ("tsize", "0")))
    port = h.transferPort()
    [(packet, addr)] = sent(port)
    assert addr == CLIENT
    assert packet == OptionAck(
        (("blksize", "512"), ("multicast", "239.239.239.0,1758,1"), ("tsize", "1300"))
    )
    for block in range(3):
        port.deliver(encodeAck(block), CLIENT)
        assert sent(port) == [(Data(block + 1, parts[block]), GROUP)]
    port.deliver(encodeAck(3), CLIENT)
    assert sent(port) == []
    [record] = h.recorder.ended
    assert (record.status, record.message, record.bytes) == ("ok", "transfer_complete", 1300)
    assert (record.blksize, record.windowsize, record.tsize) == (512, 1, 1300)
    assert not port.listening
    assert h.server.active == {}
    assert h.reactor.getDelayedCalls() == []


def test_oack_names_multicast_in_the_clients_place_and_spelling(harness):
    h = harness(multicast=True)
    blocks(h, 100)
    ask(h, options=(("MultiCast", ""), ("tsize", "0"), ("windowsize", "8")))
    [(packet, _)] = sent(h.transferPort())
    # windowsize is not acknowledged: a multicast read is lock-step.
    assert packet == OptionAck((("MultiCast", "239.239.239.0,1758,1"), ("tsize", "100")))


def test_a_second_client_listens_then_becomes_master_and_asks_for_what_it_missed(harness):
    h = harness(multicast=True)
    port, parts = session(h, CLIENT)  # 4 blocks: 512 x 3 and 464
    port.deliver(encodeAck(0), CLIENT)
    port.deliver(encodeAck(1), CLIENT)
    assert [p for p, _ in sent(port)] == [Data(1, parts[0]), Data(2, parts[1])]
    ask(h, client=OTHER)
    assert h.reactor.newestPort() is port  # same session, same TID
    assert sent(port) == [(oack(False), OTHER)]
    port.deliver(encodeAck(2), CLIENT)
    port.deliver(encodeAck(3), CLIENT)
    assert [p for p, _ in sent(port)] == [Data(3, parts[2]), Data(4, parts[3])]
    port.deliver(encodeAck(4), CLIENT)  # the first client is done
    assert sent(port) == [(oack(True), OTHER)]
    port.deliver(encodeAck(0), OTHER)  # it missed blocks 1 and 2
    assert sent(port) == [(Data(1, parts[0]), GROUP)]
    port.deliver(encodeAck(2), OTHER)  # it has 3 and 4 already... but asks 3
    assert sent(port) == [(Data(3, parts[2]), GROUP)]
    port.deliver(encodeAck(4), OTHER)
    assert [(r.clientPort, r.status, r.bytes) for r in h.recorder.ended] == [
        (CLIENT[1], "ok", 2000),
        (OTHER[1], "ok", 2000),
    ]
    assert not port.listening
    assert h.reactor.getDelayedCalls() == []


def test_a_listener_that_has_everything_leaves_with_its_final_ack(harness):
    h = harness(multicast=True)
    port, _ = session(h, CLIENT, OTHER, size=600)
    port.deliver(encodeAck(2), OTHER)  # not the master, but done
    assert sent(port) == []
    [record] = h.recorder.ended
    assert (record.clientPort, record.status) == (OTHER[1], "ok")
    port.deliver(encodeAck(0), CLIENT)
    assert len(sent(port)) == 1 and port.listening


def test_a_listener_acking_early_is_told_again_it_is_not_master(harness):
    h = harness(multicast=True)
    port, _ = session(h, CLIENT, OTHER)
    port.deliver(encodeAck(1), OTHER)
    assert sent(port) == [(oack(False), OTHER)]


def test_repeated_ack_sends_nothing_the_timer_resends(harness):
    h = harness(multicast=True)
    port, parts = session(h, CLIENT)
    port.deliver(encodeAck(0), CLIENT)
    assert len(sent(port)) == 1
    port.deliver(encodeAck(0), CLIENT)
    assert sent(port) == []
    h.reactor.advance(h.config.timeout_sec)
    assert sent(port) == [(Data(1, parts[0]), GROUP)]


def test_a_silent_master_times_out_and_the_next_client_takes_over(harness):
    h = harness(multicast=True)  # timeout 1 s, 3 retries
    port, parts = session(h, CLIENT, OTHER)
    port.deliver(encodeAck(0), CLIENT)
    sent(port)
    for _ in range(3):
        h.reactor.advance(1.0)
        assert sent(port) == [(Data(1, parts[0]), GROUP)]
    h.reactor.advance(1.0)
    assert sent(port) == [(oack(True), OTHER)]
    [record] = h.recorder.ended
    assert (record.clientPort, record.status, record.message) == (CLIENT[1], "error", "timeout")
    assert record.retransmits == 3
    port.deliver(encodeAck(0), OTHER)
    assert sent(port) == [(Data(1, parts[0]), GROUP)]


def test_the_last_silent_client_ends_the_session(harness):
    h = harness(multicast=True)
    blocks(h, 100)
    ask(h)
    port = h.transferPort()
    for _ in range(4):  # the OACK sent 1 + 3 times
        h.reactor.advance(1.0)
    assert len(sent(port)) == 4
    assert [r.message for r in h.recorder.ended] == ["timeout"]
    assert not port.listening and h.server.active == {}
    assert h.reactor.getDelayedCalls() == []


def test_a_clients_error_ends_that_client_only(harness):
    h = harness(multicast=True)
    port, _ = session(h, CLIENT, OTHER, THIRD)
    port.deliver(encodeError(0, "bye"), OTHER)
    assert sent(port) == []
    port.deliver(encodeError(0, "bye"), CLIENT)  # the master: the third takes over
    assert sent(port) == [(oack(True), THIRD)]
    assert [(r.clientPort, r.message) for r in h.recorder.ended] == [
        (OTHER[1], "client_error"),
        (CLIENT[1], "client_error"),
    ]


def test_a_stranger_gets_error_5_and_changes_nothing(harness):
    h = harness(multicast=True)
    port, _ = session(h, CLIENT)
    port.deliver(encodeAck(0), OTHER)
    [(packet, addr)] = sent(port)
    assert addr == OTHER and isinstance(packet, Error) and packet.code == ErrorCode.UNKNOWN_TID
    port.deliver(encodeError(0, "x"), OTHER)  # never an ERROR for an ERROR
    assert sent(port) == []
    port.deliver(encodeAck(0), CLIENT)
    assert [addr for _, addr in sent(port)] == [GROUP]


def test_a_repeated_request_gets_its_oack_again(harness):
    h = harness(multicast=True)
    port, _ = session(h, CLIENT, OTHER)
    ask(h, client=OTHER)
    ask(h)
    assert sent(port) == [(oack(False), OTHER), (oack(True), CLIENT)]
    port.deliver(encodeAck(0), CLIENT)
    sent(port)
    ask(h)  # an old copy, after the master asked for blocks: nothing
    assert sent(port) == []
    assert len(h.recorder.started) == 2


def test_different_files_and_block_sizes_get_different_groups(harness):
    h = harness(multicast=True)
    blocks(h, 2000)
    h.write("other.img", b"x" * 10)
    ask(h)
    first = h.transferPort()
    ask(h, name="other.img", client=OTHER)
    second = h.transferPort()
    ask(h, client=THIRD, options=(("multicast", ""), ("blksize", "1024")))
    third = h.transferPort()
    assert len({first, second, third}) == 3
    assert sent(second) == [(oack(True, ("239.239.239.1", 1758)), OTHER)]
    [(packet, _)] = sent(third)
    assert packet == OptionAck((("multicast", "239.239.239.2,1758,1"), ("blksize", "1024")))


def test_a_group_is_free_again_when_its_session_ends(harness):
    h = harness(multicast=True, multicast_addr="239.1.2.3", multicast_port="2000")
    blocks(h, 10)
    ask(h)
    port = h.transferPort()
    assert sent(port) == [(oack(True, ("239.1.2.3", 2000)), CLIENT)]
    port.deliver(encodeAck(1), CLIENT)
    ask(h, client=OTHER)
    assert sent(h.transferPort()) == [(oack(True, ("239.1.2.3", 2000)), OTHER)]


def test_unicast_when_every_group_is_taken(harness):
    h = harness(multicast=True, multicast_addr="239.1.2.3")
    blocks(h, 10)
    h.write("other.img", b"y" * 10)
    ask(h)
    ask(h, name="other.img", client=OTHER)
    port = h.transferPort()
    assert port.take() == [(encodeData(1, b"y" * 10), OTHER)]


def test_reads_that_cannot_be_multicast_are_sent_by_unicast(harness):
    h = harness(multicast=True, max_blksize=8)
    h.write("boot.img", b"z" * (8 * 65535))  # 65,536 blocks of 8 bytes
    h.write("small.txt", b"line\n")
    with capturedLogs() as captured:
        ask(h, options=(("multicast", ""), ("blksize", "8")))
        [(packet, addr)] = sent(h.transferPort())
        assert (packet, addr) == (OptionAck((("blksize", "8"),)), CLIENT)
        h.request("small.txt", mode="netascii", options=MULTICAST, client=THIRD)
        assert sent(h.transferPort()) == [(Data(1, b"line\r\n"), THIRD)]
    lines = [formatEvent(e) for e in captured if "declined" in formatEvent(e)]
    assert lines == [
        "multicast declined for 10.0.0.5:40000: more than 65535 blocks of 8 bytes; sent by unicast",
        "multicast declined for 10.0.0.7:40002: netascii; sent by unicast",
    ]


def test_multicast_off_or_refused_ignores_the_option(harness):
    for settings in ({}, {"multicast": True, "refuse_options": "multicast"}):
        h = harness(**settings)
        blocks(h, 10)
        ask(h)
        port = h.transferPort()
        assert [addr for _, addr in port.take()] == [CLIENT]
        h.service.stopService()


def test_a_file_that_shrinks_ends_the_session_for_everyone(harness):
    h = harness(multicast=True)
    port, _ = session(h, CLIENT, OTHER)
    (h.root / "boot.img").write_bytes(b"short")
    port.deliver(encodeAck(0), CLIENT)
    out = sent(port)
    assert [addr for _, addr in out] == [CLIENT, OTHER]
    assert all(isinstance(p, Error) and p.code == 0 for p, _ in out)
    assert [r.message for r in h.recorder.ended] == ["aborted", "aborted"]
    assert not port.listening and h.server.active == {}


def test_service_stop_ends_every_client(harness):
    h = harness(multicast=True)
    port, _ = session(h, CLIENT, OTHER)
    h.service.stopService()
    assert [r.message for r in h.recorder.ended] == ["aborted", "aborted"]
    assert not port.listening
    assert h.reactor.getDelayedCalls() == []


def test_a_client_asking_anew_from_its_port_leaves_the_session(harness):
    """A different request from a client port that is in a session (a PXE
    client asking for its next file) ends its part there at once."""
    h = harness(multicast=True)
    h.write("next.cfg", b"cfg")
    port, _ = session(h, CLIENT, OTHER)
    h.request("next.cfg", client=CLIENT)
    assert [r.message for r in h.recorder.ended] == ["aborted"]
    assert sent(port) == [(oack(True), OTHER)]
    assert h.reactor.newestPort().take() == [(encodeData(1, b"cfg"), CLIENT)]


def test_acks_as_block_requests_are_bounded_by_the_file(harness):
    h = harness(multicast=True)
    blocks(h, 600)
    ask(h)
    port = h.transferPort()
    sent(port)
    port.deliver(encodeAck(7), CLIENT)  # past the end: ignored
    port.deliver(b"\x00\x04\x00", CLIENT)  # too short
    port.deliver(b"\x00\x03\x00\x01abc", CLIENT)  # DATA to a read
    assert sent(port) == []
    assert port.listening and len(h.server.active) == 1


def test_workers_take_every_nth_group(harness):
    h = harness(multicast=True, multicast_addr="239.1.1.0-3")
    h.server.multicast.shareAmong(2, 2)
    for index, name in enumerate(("a", "b", "c")):
        h.write(name, b"x")
        ask(h, name=name, client=("10.0.0.9", 1000 + index))
    replies = [packet for port in h.reactor.opened[1:] for packet, _ in sent(port)]
    assert oack(True, ("239.1.1.1", 1758)) in replies
    assert oack(True, ("239.1.1.3", 1758)) in replies
    assert Data(1, b"x") in replies  # the third file: this worker's groups are taken
