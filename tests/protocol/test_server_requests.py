"""The server's handling of requests around the transfers: uploads wired to
the sink, events for refused and dropped requests."""

from __future__ import annotations

from conftest import CLIENT

from ctftp.packets import OP_WRQ, Ack, OptionAck, decode, encodeData, encodeRequest


def wrq(h, name, options=(), client=CLIENT, mode="octet"):
    h.listener.deliver(encodeRequest(OP_WRQ, name, mode, options), client)


def test_upload_end_to_end_through_the_local_sink(harness):
    h = harness(allow_write=True, allow_create=True)
    wrq(h, "up/log.txt")  # a missing folder is never created
    [reply] = h.listenerReplies()
    assert reply.code in (1, 2)
    (h.root / "up").mkdir()
    wrq(h, "up/log.txt", options=(("blksize", "1024"), ("tsize", "1500")))
    port = h.transferPort()
    [(oack, _)] = port.take()
    assert decode(oack) == OptionAck((("blksize", "1024"), ("tsize", "1500")))
    port.deliver(encodeData(1, b"a" * 1024), CLIENT)
    assert decode(port.take()[0][0]) == Ack(1)
    assert not (h.root / "up" / "log.txt").exists()  # visible only when complete
    port.deliver(encodeData(2, b"b" * 476), CLIENT)
    assert decode(port.take()[0][0]) == Ack(2)
    assert (h.root / "up" / "log.txt").read_bytes() == b"a" * 1024 + b"b" * 476
    [record] = h.recorder.ended[-1:]
    assert (record.op, record.status, record.bytes, record.tsize) == ("write", "ok", 1500, 1500)
    assert [r.message for r in h.recorder.started] == ["WRQ received", "WRQ received"]
    # The port dallies to answer a repeated final DATA, then closes.
    port.deliver(encodeData(2, b"b" * 476), CLIENT)
    assert decode(port.take()[0][0]) == Ack(2)
    h.reactor.advance(h.config.timeout_sec)
    assert not port.listening
    assert h.server.active == {}
    assert h.reactor.getDelayedCalls() == []


def test_the_same_wrq_again_after_an_upload_starts_a_new_one_at_once(harness):
    """Found by a black-box review: the identical WRQ from the same port
    while the finished upload dallied was taken for a retransmission and
    went unanswered for timeout_sec (tftpd-hpa answers at once)."""
    h = harness(allow_write=True, allow_create=True)
    for content in (b"first", b"second"):
        wrq(h, "twice.log")
        port = h.transferPort()
        assert decode(port.take()[0][0]) == Ack(0)
        port.deliver(encodeData(1, content), CLIENT)
        assert decode(port.take()[0][0]) == Ack(1)
        assert (h.root / "twice.log").read_bytes() == content
    assert [r.status for r in h.recorder.ended] == ["ok", "ok"]
    assert h.reactor.getDelayedCalls() != []  # only the second one dallies now
    h.reactor.advance(h.config.timeout_sec)
    assert h.server.active == {}
    assert h.reactor.getDelayedCalls() == []


def test_a_retransmitted_wrq_during_the_upload_is_still_ignored(harness):
    h = harness(allow_write=True, allow_create=True)
    wrq(h, "once.log")
    port = h.transferPort()
    port.take()
    wrq(h, "once.log")
    assert h.reactor.newestPort() is port and port.take() == []
    port.deliver(encodeData(1, b"x"), CLIENT)
    assert decode(port.take()[0][0]) == Ack(1)
    assert len(h.recorder.started) == 1


def test_upload_refused_without_allow_create_leaves_nothing(harness):
    h = harness(allow_write=True)
    wrq(h, "new.bin")
    [reply] = h.listenerReplies()
    assert reply.code == 2
    assert h.recorder.ended[0].message == "access_denied"
    assert list(h.root.iterdir()) == []


def test_upload_over_the_size_limit_refused_before_any_data(harness):
    h = harness(allow_write=True, allow_create=True, max_upload_bytes=1000)
    wrq(h, "big.bin", options=(("tsize", "1001"),))
    [reply] = h.listenerReplies()
    assert reply.code == 3
    assert h.recorder.ended[0].message == "disk_full"
    assert list(h.root.iterdir()) == []


def test_write_devnull_keeps_nothing(harness):
    h = harness(write_devnull=True)
    wrq(h, "crash.dump")
    port = h.transferPort()
    assert decode(port.take()[0][0]) == Ack(0)
    port.deliver(encodeData(1, b"x" * 10), CLIENT)
    assert decode(port.take()[0][0]) == Ack(1)
    assert list(h.root.iterdir()) == []
    assert h.recorder.ended[0].status == "ok"


def test_wrq_while_writes_are_off_is_error_4(harness):
    h = harness()
    wrq(h, "x.bin")
    [reply] = h.listenerReplies()
    assert reply.code == 4


def test_busy_drop_yields_a_start_and_an_error_event_and_no_reply(harness):
    h = harness(max_connections=1)
    h.write("f.bin", b"f" * 100)
    h.request("f.bin", client=("10.0.0.5", 1))
    h.request("f.bin", client=("10.0.0.5", 2))
    assert [(r.clientPort, r.message) for r in h.recorder.started] == [
        (1, "RRQ received"),
        (2, "RRQ received"),
    ]
    [dropped] = h.recorder.ended
    assert (dropped.clientPort, dropped.status, dropped.message) == (2, "error", "server_busy")
    assert h.listenerReplies() == []


def test_a_new_upload_from_the_same_host_takes_the_name_over(harness):
    """A device that restarts mid-upload asks again from a new port: its
    old upload, still waiting for DATA, gives the name up at once."""
    h = harness(allow_write=True, allow_create=True)
    (h.root / "boot.log").write_bytes(b"old")
    wrq(h, "boot.log")
    first = h.transferPort()
    assert decode(first.take()[0][0]) == Ack(0)
    first.deliver(encodeData(1, b"a" * 512), CLIENT)
    first.take()
    again = (CLIENT[0], CLIENT[1] + 1)
    wrq(h, "/boot.log", client=again)  # spelled another way, same target
    assert h.listenerReplies() == []
    second = h.transferPort()
    assert second is not first and not first.listening
    assert [(r.clientPort, r.message) for r in h.recorder.ended] == [(CLIENT[1], "aborted")]
    assert decode(second.take()[0][0]) == Ack(0)
    second.deliver(encodeData(1, b"new"), again)
    assert decode(second.take()[0][0]) == Ack(1)
    assert (h.root / "boot.log").read_bytes() == b"new"
    assert sorted(p.name for p in h.root.iterdir()) == ["boot.log"]  # no temporary left


def test_another_host_cannot_take_a_running_upload_over(harness):
    h = harness(allow_write=True, allow_create=True)
    wrq(h, "boot.log")
    first = h.transferPort()
    first.take()
    wrq(h, "boot.log", client=("10.0.0.99", CLIENT[1]))
    [reply] = h.listenerReplies()
    assert (reply.code, reply.message) == (2, "File is being uploaded")
    assert first.listening
    first.deliver(encodeData(1, b"mine"), CLIENT)
    assert (h.root / "boot.log").read_bytes() == b"mine"
