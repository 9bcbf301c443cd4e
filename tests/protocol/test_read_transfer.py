"""Read transfers end to end in memory: fake clock, fake UDP, real files."""

from __future__ import annotations

import pytest
from conftest import CLIENT, Data, Error, OptionAck
from twisted.internet.error import MessageLengthError
from twisted.logger import capturedLogs, formatEvent

from ctftp.packets import (
    MODE_SHOWN,
    OP_RRQ,
    OP_WRQ,
    decode,
    encodeAck,
    encodeError,
    encodeRequest,
)


def test_small_file_in_one_block(harness):
    h = harness()
    data = h.write("hello.txt", b"hello world\n")
    h.request("hello.txt")
    port = h.transferPort()
    assert port.interface == "127.0.0.1"  # replies leave from the listener's address
    assert h.run(port) == data
    assert not port.listening
    assert h.reactor.getDelayedCalls() == []
    [record] = h.recorder.ended
    assert (record.status, record.message, record.bytes) == ("ok", "transfer_complete", len(data))
    assert h.recorder.started[0].status == "start"


@pytest.mark.parametrize("size", [0, 511, 512, 513, 1024, 5000])
def test_sizes(harness, size):
    h = harness()
    data = h.write("f.bin", bytes(range(256)) * (size // 256) + bytes(size % 256))
    h.request("f.bin")
    port = h.transferPort()
    blocks = []
    for _ in range(100):
        out = port.take()
        if not out:
            break
        [(datagram, _)] = out
        packet = decode(datagram)
        blocks.append(packet)
        port.deliver(encodeAck(packet.block), CLIENT)
    assert b"".join(b.payload for b in blocks) == data
    assert len(blocks) == size // 512 + 1  # a multiple of 512 ends with an empty DATA
    assert len(blocks[-1].payload) == size % 512
    assert h.recorder.ended[0].bytes == size


def test_a_port_closed_under_the_transfer_ends_it_aborted(harness):
    """The reactor closes a port whose socket fails: the transfer ends at
    once, with no timer left to write to the closed socket."""
    h = harness()
    h.write("f.bin", b"x" * 5000)
    h.request("f.bin")
    port = h.transferPort()
    assert port.take()
    port.protocol.doStop()  # what the port's connectionLost does
    [record] = h.recorder.ended
    assert (record.status, record.message) == ("error", "aborted")
    assert h.reactor.getDelayedCalls() == []


def test_lost_data_is_resent_by_timer(harness):
    h = harness()
    h.write("f.bin", b"x" * 1000)
    h.request("f.bin")
    port = h.transferPort()
    first = port.take()
    assert [decode(d).block for d, _ in first] == [1]
    h.reactor.advance(0.999)
    assert port.take() == []
    h.reactor.advance(0.001)
    assert port.take() == first  # same packet again
    port.deliver(encodeAck(1), CLIENT)
    assert [decode(d).block for d, _ in port.take()] == [2]
    port.deliver(encodeAck(2), CLIENT)
    assert h.recorder.ended[0].retransmits == 1
    assert h.recorder.ended[0].status == "ok"


def test_the_timer_counts_from_the_last_packet_sent(harness):
    """Each ACK moves the resend to ``timeout`` after the packet it brought,
    however long the transfer has run; the timer set for the first packet
    does not fire in between, and only one timer is ever pending."""
    h = harness()
    h.write("f.bin", b"t" * 1500)
    h.request("f.bin")
    port = h.transferPort()
    assert [decode(d).block for d, _ in port.take()] == [1]
    for block in (1, 2):  # times in binary fractions: exact sums
        h.reactor.advance(0.625)
        port.deliver(encodeAck(block), CLIENT)
        assert [decode(d).block for d, _ in port.take()] == [block + 1]
        assert len(h.reactor.getDelayedCalls()) == 1
    h.reactor.advance(0.9375)  # 2.1875 s in: the first packet's timer has long passed
    assert port.take() == []
    h.reactor.advance(0.0625)
    assert [decode(d).block for d, _ in port.take()] == [3]
    h.reactor.advance(0.9375)
    assert port.take() == []
    h.reactor.advance(0.0625)
    assert [decode(d).block for d, _ in port.take()] == [3]
    port.deliver(encodeAck(3), CLIENT)
    assert h.recorder.ended[0].retransmits == 2
    assert h.reactor.getDelayedCalls() == []


def test_duplicate_ack_does_not_send_twice(harness):
    """Sorcerer's Apprentice: a repeated ACK never causes a send in lock-step."""
    h = harness()
    h.write("f.bin", b"y" * 2000)
    h.request("f.bin")
    port = h.transferPort()
    port.take()
    port.deliver(encodeAck(1), CLIENT)
    assert [decode(d).block for d, _ in port.take()] == [2]
    port.deliver(encodeAck(1), CLIENT)
    port.deliver(encodeAck(1), CLIENT)
    assert port.take() == []
    port.deliver(encodeAck(2), CLIENT)
    assert [decode(d).block for d, _ in port.take()] == [3]


def test_wrong_tid_gets_error_5_and_transfer_goes_on(harness):
    h = harness()
    data = h.write("f.bin", b"z" * 700)
    h.request("f.bin")
    port = h.transferPort()
    stranger = ("10.0.0.9", 5555)
    port.deliver(encodeAck(1), stranger)
    written = port.written[:]
    assert (decode(written[-1][0]), written[-1][1]) == (Error(5, "Unknown transfer ID"), stranger)
    port.written = [w for w in written if w[1] == CLIENT]
    # Same host, other port: also a wrong TID.
    port.deliver(encodeAck(1), (CLIENT[0], CLIENT[1] + 1))
    assert decode(port.written.pop()[0]).code == 5
    assert h.run(port) == data


@pytest.mark.parametrize("write", [False, True])
def test_an_error_from_a_stranger_is_not_answered(harness, write):
    """A forged ERROR with another transfer port as its source must not start
    two ports answering each other's ERROR 5 for ever (reads and writes)."""
    h = harness(allow_write=True, allow_create=True)
    data = h.write("f.bin", b"z" * 700)
    if write:
        h.listener.deliver(encodeRequest(OP_WRQ, "new.bin"), CLIENT)
    else:
        h.request("f.bin")
    port = h.transferPort()
    port.take()
    port.deliver(encodeError(5, "Unknown transfer ID"), ("127.0.0.1", 40001))
    assert port.take() == []
    if not write:
        assert h.run(port) == data


def test_timeout_gives_up_after_max_retries(harness):
    h = harness(max_retries=3)
    h.write("f.bin", b"q" * 100)
    h.request("f.bin")
    port = h.transferPort()
    sends = len(port.take())
    for _ in range(10):
        h.reactor.advance(1.0)
        sends += len(port.take())
    assert sends == 1 + 3  # at most 1 + max_retries times
    assert not port.listening
    assert h.reactor.getDelayedCalls() == []
    [record] = h.recorder.ended
    assert (record.status, record.message) == ("error", "timeout")


def test_rollover_past_65535_blocks(harness):
    h = harness()
    blocks = 65536 + 20
    data = h.write("big.bin", bytes(i % 251 for i in range(8 * blocks - 3)))
    h.request("big.bin", options=(("blksize", "8"),))
    port = h.transferPort()
    h.blksize = 8
    assert h.run(port) == data
    assert h.recorder.ended[0].status == "ok"


def test_window_with_a_gap_resends_from_the_last_ack(harness):
    h = harness()
    data = h.write("w.bin", bytes(range(256)) * 40)  # 10240 bytes = 20 blocks + empty
    h.request("w.bin", options=(("windowsize", "4"),))
    port = h.transferPort()
    [(oack, _)] = port.take()
    assert decode(oack) == OptionAck((("windowsize", "4"),))
    port.deliver(encodeAck(0), CLIENT)
    assert [decode(d).block for d, _ in port.take()] == [1, 2, 3, 4]
    # Block 3 was lost: the client ACKs 2, the server starts a window at 3.
    port.deliver(encodeAck(2), CLIENT)
    assert [decode(d).block for d, _ in port.take()] == [3, 4, 5, 6]
    # A repeated ACK 2 (the client saw a gap again) resends once, not twice.
    port.deliver(encodeAck(2), CLIENT)
    port.deliver(encodeAck(2), CLIENT)
    assert [decode(d).block for d, _ in port.take()] == [3, 4, 5, 6]
    port.deliver(encodeAck(6), CLIENT)
    assert [decode(d).block for d, _ in port.take()] == [7, 8, 9, 10]
    received = data[: 10 * 512]
    for start in range(11, 22, 4):
        port.deliver(encodeAck(start - 1), CLIENT)
        for d, _ in port.take():
            received += decode(d).payload
    assert port.take() == []
    # ACK of the final block ends it.
    port.deliver(encodeAck(21), CLIENT)
    assert h.recorder.ended[0].status == "ok"
    assert h.recorder.ended[0].bytes == len(data)
    assert h.recorder.ended[0].retransmits == 2 + 4  # blocks 3-4, then 3-6
    assert h.reactor.getDelayedCalls() == []


def test_window_whole_file(harness):
    h = harness()
    data = h.write("w.bin", bytes(range(256)) * 1000)
    h.request("w.bin", options=(("blksize", "1428"), ("windowsize", "16"), ("tsize", "0")))
    h.blksize = 1428
    port = h.transferPort()
    assert h.run(port) == data
    assert h.recorder.ended[0].tsize == len(data)


def test_oack_is_resent_then_ack0_starts_data(harness):
    h = harness()
    h.write("f.bin", b"a" * 3000)
    h.request("f.bin", options=(("blksize", "1024"), ("tsize", "0"), ("foo", "bar")))
    port = h.transferPort()
    [(oack, _)] = port.take()
    assert decode(oack) == OptionAck((("blksize", "1024"), ("tsize", "3000")))
    h.reactor.advance(1.0)
    assert [d for d, _ in port.take()] == [oack]
    port.deliver(encodeAck(0), CLIENT)
    [(first, _)] = port.take()
    assert decode(first) == Data(1, b"a" * 1024)


def test_client_error_after_oack_ends_cleanly_and_pxe_asks_again(harness):
    h = harness()
    data = h.write("pxelinux.0", b"p" * 1500)
    h.request("/pxelinux.0", options=(("tsize", "0"),))
    port = h.transferPort()
    assert decode(port.take()[0][0]) == OptionAck((("tsize", "1500"),))
    port.deliver(encodeError(8, "tsize only"), CLIENT)
    assert not port.listening
    assert h.reactor.getDelayedCalls() == []
    assert h.recorder.ended[0].message == "client_error"
    assert h.recorder.ended[0].errorCode == 8
    # The same client port asks again, now with blksize: a fresh transfer.
    h.request("/pxelinux.0", options=(("blksize", "1400"),))
    second = h.transferPort()
    assert second is not port
    h.blksize = 1400
    assert h.run(second) == data
    assert [r.status for r in h.recorder.ended] == ["error", "ok"]


def test_duplicate_rrq_is_not_a_second_transfer(harness):
    h = harness()
    h.write("f.bin", b"d" * 100)
    h.request("f.bin")
    first = h.transferPort()
    h.request("f.bin")
    assert h.reactor.newestPort() is first
    assert len(h.recorder.started) == 1
    # Another client port is another transfer.
    h.request("f.bin", client=(CLIENT[0], CLIENT[1] + 1))
    assert h.reactor.newestPort() is not first


def test_options_off_means_no_oack(harness):
    h = harness(options=False)
    h.write("f.bin", b"o" * 600)
    h.request("f.bin", options=(("blksize", "1024"), ("tsize", "0")))
    port = h.transferPort()
    assert decode(port.take()[0][0]) == Data(1, b"o" * 512)


def test_refuse_options_and_max_blksize(harness):
    h = harness(refuse_options="tsize", max_blksize=1024)
    h.write("f.bin", b"o" * 600)
    h.request("f.bin", options=(("BlkSize", "1468"), ("tsize", "0")))
    port = h.transferPort()
    assert decode(port.take()[0][0]) == OptionAck((("BlkSize", "1024"),))


@pytest.mark.parametrize(
    "option",
    [
        ("blksize", "7"),
        ("blksize", "65465"),
        ("timeout", "0"),
        ("windowsize", "0"),
        ("windowsize", "65536"),
    ],
)
def test_out_of_range_option_gets_error_8(harness, option):
    h = harness()
    h.write("f.bin", b"o" * 600)
    with capturedLogs() as captured:
        h.request("f.bin", options=(option,))
    [reply] = h.listenerReplies()
    # atftpd's words, which atftp's test suite looks for; the detail is logged.
    assert reply == Error(8, "Failure to negotiate RFC2347 options")
    assert h.recorder.ended[0].message == "option_refused"
    # Refused before it started: no sidecar line (SPEC 7, docs/logging.md).
    assert h.recorder.ended[0].localPath is None
    name, value = option
    assert any(
        f"Option {name} value {value} out of range" in formatEvent(event) for event in captured
    )
    assert h.reactor.newestPort() is h.listener


def test_netascii_tsize_is_converted_size(harness):
    h = harness()
    h.write("t.txt", b"line one\nline two\r\n")
    h.request("t.txt", mode="netascii", options=(("tsize", "0"),))
    port = h.transferPort()
    converted = b"line one\r\nline two\r\0\r\n"
    assert decode(port.take()[0][0]) == OptionAck((("tsize", str(len(converted))),))
    port.deliver(encodeAck(0), CLIENT)
    assert decode(port.take()[0][0]) == Data(1, converted)


def test_max_connections_drops_silently_and_counts(harness):
    h = harness(max_connections=2)
    h.write("f.bin", b"m" * 100)
    for i in range(3):
        h.request("f.bin", client=("10.0.0.5", 1000 + i))
    assert len(h.server.active) == 2
    assert h.server.busyDropped == 1
    assert h.listenerReplies() == []
    assert len(h.recorder.started) == 3  # the dropped one's start, then its error
    assert [r.message for r in h.recorder.ended] == ["server_busy"]


def test_port_range(harness):
    h = harness(port_range="7000:7001")
    h.write("f.bin", b"r" * 100)
    h.reactor.refusePorts.add(7000)
    h.request("f.bin", client=("10.0.0.5", 1))
    assert h.reactor.newestPort().port == 7001
    h.request("f.bin", client=("10.0.0.5", 2))  # 7000 refused, 7001 taken
    [reply] = h.listenerReplies()
    assert reply.code == 0
    assert h.recorder.ended[-1].message == "server_busy"


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"\x00",
        b"\x00\x01",
        b"\x00\x01file",
        b"\x00\x01file\x00",
        b"\x00\x01\x00octet\x00",
        b"\x00\x07x",
        b"\x00\x04\x00\x01",
        b"\x00\x03\x00\x01data",
    ],
)
def test_malformed_requests_get_error_4(harness, datagram):
    h = harness()
    h.listener.deliver(datagram, CLIENT)
    replies = h.listenerReplies()
    if len(datagram) < 2:
        assert replies == [] or replies[0].code == 4
    else:
        assert [type(r) for r in replies] == [Error] and replies[0].code == 4
    assert h.recorder.started == []


@pytest.mark.parametrize("mode", ["mail", "MAIL", "bogus"])
@pytest.mark.parametrize("opcode", [OP_RRQ, OP_WRQ])
def test_unsupported_mode_is_a_refused_request_with_its_events(harness, opcode, mode):
    """A request in a mode ctftp does not serve parses: ERROR 4, and like any
    refused request a start event and one error event (SPEC 8)."""
    h = harness(allow_write=True)
    h.write("file", b"x")
    h.listener.deliver(b"\x00%cfile\x00%s\x00" % (opcode, mode.encode()), CLIENT)
    assert h.listenerReplies() == [Error(4, f"Unsupported transfer mode {mode!r}")]
    [started] = h.recorder.started
    [ended] = h.recorder.ended
    assert (started.status, started.mode, started.filename) == ("start", mode.lower(), "file")
    assert (ended.status, ended.message, ended.errorCode) == ("error", "illegal_operation", 4)
    assert h.reactor.newestPort() is h.listener


@pytest.mark.parametrize("mode", [b"\x01" * 30000, b"\xff" * 22000, b"m" * 65000])
def test_a_long_unknown_mode_is_not_echoed_whole(harness, mode):
    """Found by a black-box review: the whole mode went into the ERROR, so a
    16 KB mode of control bytes drew a 64 KB answer (a reflection from a
    forged source) and a 30 KB one an ERROR too large to send (a traceback,
    no error event). The mode is cut to MODE_SHOWN characters everywhere."""
    h = harness()
    h.write("file", b"x")
    datagram = b"\x00\x01file\x00" + mode + b"\x00"
    h.listener.deliver(datagram, CLIENT)
    [reply] = h.listenerReplies()
    assert reply.code == 4 and reply.message.startswith("Unsupported transfer mode '")
    assert len(encodeError(reply.code, reply.message)) < 200
    [started] = h.recorder.started
    [ended] = h.recorder.ended
    assert len(started.mode) == MODE_SHOWN + 3 and started.mode.endswith("...")
    assert (ended.status, ended.message) == ("error", "illegal_operation")


def test_a_listener_reply_that_cannot_be_sent_is_logged_not_raised(harness):
    h = harness()

    def refuse(packet, addr):
        raise MessageLengthError("message too long")

    h.listener.write = refuse
    with capturedLogs() as events:
        h.listener.deliver(b"\x00\x01\x00octet\x00", CLIENT)  # empty name: ERROR 4
    assert any("cannot answer" in str(e.get("log_format")) for e in events)


def test_error_packet_to_listener_gets_no_answer(harness):
    h = harness()
    h.listener.deliver(encodeError(0, "hi"), CLIENT)
    assert h.listenerReplies() == []


def test_wrq_is_refused_while_writes_are_off(harness):
    h = harness()
    h.listener.deliver(encodeRequest(OP_WRQ, "up.bin"), CLIENT)
    [reply] = h.listenerReplies()
    assert reply.code == 4
    assert h.recorder.ended[0].message == "illegal_operation"


def test_missing_file_is_error_1(harness):
    h = harness()
    h.request("nope.bin")
    [reply] = h.listenerReplies()
    assert reply.code == 1
    [record] = h.recorder.ended
    assert (record.status, record.message, record.errorCode) == ("error", "file_not_found", 1)


def test_stop_service_aborts_transfers_without_timers(harness):
    h = harness()
    h.write("f.bin", b"s" * 5000)
    h.request("f.bin")
    port = h.transferPort()
    h.service.stopService()
    assert not port.listening
    assert h.reactor.getDelayedCalls() == []
    assert h.recorder.ended[0].message == "aborted"


def test_window_resends_count_against_max_retries(harness):
    """Gap resends and timer resends together: a block goes out at most 1 + max_retries times."""
    h = harness(max_retries=3)
    h.write("w.bin", b"w" * 5000)
    h.request("w.bin", options=(("windowsize", "4"),))
    port = h.transferPort()
    port.take()
    port.deliver(encodeAck(0), CLIENT)
    sends = 0
    for _ in range(10):
        if not port.listening:
            break
        sends += sum(1 for d, _ in port.take() if decode(d).block == 1)
        port.deliver(encodeAck(0), CLIENT)
        sends += sum(1 for d, _ in port.take() if decode(d).block == 1)
        h.reactor.advance(1.0)
    assert sends == 1 + 3
    assert h.recorder.ended[0].message == "timeout"
    assert h.reactor.getDelayedCalls() == []


def test_window_restarts_after_progress_start_the_count_over(harness):
    """The deliberate reading of SPEC 3 in docs/protocol.md: sends that follow
    an ACK moving the window are not retries, so a client that reports a gap
    after every block still gets the whole file, though the blocks behind the
    gaps go out more than 1 + max_retries times."""
    h = harness(max_retries=1)
    data = h.write("g.bin", bytes(range(256)) * 10)  # 2,560 bytes: blocks 1-6
    h.request("g.bin", options=(("windowsize", "4"),))
    port = h.transferPort()
    port.take()
    port.deliver(encodeAck(0), CLIENT)
    sends: dict[int, int] = {}
    received = b""
    for acked in range(1, 7):
        for datagram, _ in port.take():
            packet = decode(datagram)
            sends[packet.block] = sends.get(packet.block, 0) + 1
            if packet.block == acked:
                received += packet.payload
        port.deliver(encodeAck(acked), CLIENT)  # only the first of each window got through
    assert received == data
    assert sends[4] == 4  # in the windows after ACK 0, 1, 2 and 3
    assert h.recorder.ended[0].status == "ok"


def test_pxe_new_request_read_before_the_error_8_replaces_the_probe(harness):
    """PXE ROMs answer the OACK with ERROR 8 and ask again at once; the new
    RRQ (different bytes) may be read before that ERROR reaches the transfer."""
    h = harness()
    data = h.write("pxelinux.0", b"p" * 1500)
    h.request("pxelinux.0", options=(("tsize", "0"),))
    probe = h.transferPort()
    probe.take()
    h.request("pxelinux.0", options=(("blksize", "1456"),))
    assert not probe.listening
    second = h.transferPort()
    assert second is not probe
    probe_error = probe.written  # the probe sends nothing more
    assert probe_error == []
    h.blksize = 1456
    assert h.run(second) == data
    assert [r.message for r in h.recorder.ended] == ["aborted", "transfer_complete"]
    # The same request again while its transfer runs is still a duplicate.
    h.request("pxelinux.0", options=(("blksize", "1456"),))
    h.request("pxelinux.0", options=(("blksize", "1456"),))
    third = h.transferPort()
    h.request("pxelinux.0", options=(("blksize", "1456"),))
    assert h.reactor.newestPort() is third
