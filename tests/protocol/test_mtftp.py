"""PXE MTFTP through the whole server, packet by packet."""

from __future__ import annotations

import os

from conftest import CLIENT, Data, Error
from twisted.logger import capturedLogs, formatEvent

from ctftp.packets import OP_RRQ, OP_WRQ, ErrorCode, decode, encodeAck, encodeRequest

MTFTP = ("127.0.0.1", 1759)
GROUP = ("239.255.1.1", 3001)
OTHER = ("10.0.0.6", 40001)


def mtftpHarness(harness, tmp_path, lines="pxelinux.0 239.255.1.1 3001\n", **overrides):
    (tmp_path / "mtftp.conf").write_text(lines)
    return harness(mtftp_file=str(tmp_path / "mtftp.conf"), mtftp_port=MTFTP[1], **overrides)


def ask(h, name="pxelinux.0", client=CLIENT, op=OP_RRQ, mode="octet", options=()):
    h.reactor.portAt(*MTFTP).deliver(encodeRequest(op, name, mode, options), client)


def answers(h):
    """What the MTFTP port itself sent (refusals), decoded."""
    return [(decode(d), addr) for d, addr in h.reactor.portAt(*MTFTP).take()]


def sent(port):
    return [(decode(d), addr) for d, addr in port.take()]


def boot(h, size):
    data = bytes(i % 251 for i in range(size))
    h.write("pxelinux.0", data)
    return [data[i : i + 512] for i in range(0, size + 1, 512)]


def transfer(h, size=700):
    """``pxelinux.0`` of ``size`` bytes asked for by CLIENT on the MTFTP
    port: the transfer's port, and the file's blocks."""
    parts = boot(h, size)
    ask(h)
    return h.transferPort(), parts


def test_block_one_goes_to_the_client_and_the_rest_to_the_group(harness, tmp_path):
    h = mtftpHarness(harness, tmp_path)
    parts = boot(h, 1300)  # 512, 512, 276
    ask(h, "/pxelinux.0", options=(("tsize", "0"),))  # options are not MTFTP's: no OACK
    port = h.transferPort()
    assert port.getHost().host == MTFTP[0]  # from the address the request came to
    assert sent(port) == [(Data(1, parts[0]), CLIENT)]
    port.deliver(encodeAck(1), CLIENT)
    assert sent(port) == [(Data(2, parts[1]), GROUP)]
    port.deliver(encodeAck(1), CLIENT)  # a repeated ACK sends nothing
    assert sent(port) == []
    port.deliver(encodeAck(2), CLIENT)
    assert sent(port) == [(Data(3, parts[2]), GROUP)]
    port.deliver(encodeAck(3), CLIENT)
    [record] = h.recorder.ended
    assert (record.status, record.message, record.bytes) == ("ok", "transfer_complete", 1300)
    assert (record.filename, record.resolved, record.listener) == (
        "/pxelinux.0",
        "pxelinux.0",
        "127.0.0.1:1759",
    )
    assert (record.blksize, record.windowsize, record.tsize) == (512, 1, None)
    assert not port.listening
    assert h.server.active == {} and h.server.mtftp.running == {}
    assert h.reactor.getDelayedCalls() == []


def test_lost_packets_are_sent_again_where_they_went(harness, tmp_path):
    h = mtftpHarness(harness, tmp_path)
    port, parts = transfer(h)
    sent(port)
    h.reactor.advance(1.0)  # block 1 lost: again to the client
    assert sent(port) == [(Data(1, parts[0]), CLIENT)]
    port.deliver(encodeAck(1), CLIENT)
    sent(port)
    h.reactor.advance(1.0)  # block 2 lost: again to the group
    assert sent(port) == [(Data(2, parts[1]), GROUP)]
    port.deliver(encodeAck(2), CLIENT)
    [record] = h.recorder.ended
    assert (record.status, record.retransmits) == ("ok", 2)


def test_a_silent_client_times_out_and_frees_the_file(harness, tmp_path):
    h = mtftpHarness(harness, tmp_path)
    port, _ = transfer(h)
    for _ in range(4):  # max_retries=3: four sends in all
        assert len(sent(port)) == 1
        h.reactor.advance(1.0)
    [record] = h.recorder.ended
    assert (record.status, record.message) == ("error", "timeout")
    assert h.server.mtftp.running == {}
    ask(h, client=OTHER)  # a new transfer for the next client
    assert h.transferPort() is not port


def test_a_file_being_sent_gets_no_answer_its_client_listens(harness, tmp_path):
    h = mtftpHarness(harness, tmp_path)
    port, parts = transfer(h)
    with capturedLogs() as captured:
        ask(h, client=OTHER)
    assert h.reactor.newestPort() is port and answers(h) == []
    assert any(
        'MTFTP file="pxelinux.0" is being sent to 239.255.1.1:3001 for 10.0.0.5:40000:'
        " 10.0.0.6:40001 listens" in formatEvent(e)
        for e in captured
    )
    [refused] = h.recorder.ended
    assert (refused.clientPort, refused.status, refused.message) == (
        OTHER[1],
        "error",
        "server_busy",
    )
    port.deliver(encodeAck(1), CLIENT)
    port.deliver(encodeAck(2), CLIENT)
    ask(h, client=OTHER)  # done: the listener that missed block 1 asks again
    again = h.transferPort()
    assert again is not port
    assert sent(again) == [(Data(1, parts[0]), OTHER)]


def test_a_repeated_request_is_not_a_second_transfer(harness, tmp_path):
    h = mtftpHarness(harness, tmp_path)
    port, _ = transfer(h)
    ask(h)
    assert h.reactor.newestPort() is port
    assert len(h.recorder.started) == 1


def test_refusals(harness, tmp_path):
    h = mtftpHarness(harness, tmp_path)
    boot(h, 10)
    h.write("other.bin", b"x")
    ask(h, "other.bin")
    ask(h, op=OP_WRQ, client=OTHER)
    ask(h, mode="netascii", client=("10.0.0.7", 1))
    assert answers(h) == [
        (Error(ErrorCode.FILE_NOT_FOUND, "File not found"), CLIENT),
        (Error(ErrorCode.ILLEGAL_OPERATION, "MTFTP serves reads only"), OTHER),
        (Error(ErrorCode.ILLEGAL_OPERATION, "MTFTP serves octet mode only"), ("10.0.0.7", 1)),
    ]
    assert [r.message for r in h.recorder.ended] == [
        "file_not_found",
        "illegal_operation",
        "illegal_operation",
    ]
    assert h.server.active == {}


def test_a_listed_file_missing_or_outside_the_root_is_refused_as_any_read(harness, tmp_path):
    h = mtftpHarness(harness, tmp_path, "pxelinux.0 239.255.1.1 3001\n../etc 239.255.1.2 3001\n")
    ask(h)
    ask(h, "../etc", client=OTHER)
    assert [(p.code, addr) for p, addr in answers(h)] == [
        (ErrorCode.FILE_NOT_FOUND, CLIENT),
        (ErrorCode.ACCESS_VIOLATION, OTHER),
    ]
    assert h.server.mtftp.running == {}


def test_a_file_of_more_than_65535_blocks_is_refused(harness, tmp_path):
    h = mtftpHarness(harness, tmp_path)
    with open(tmp_path / "pxelinux.0", "wb") as f:
        os.truncate(f.fileno(), 65535 * 512)  # sparse: block 65536 would be the empty last
    ask(h)
    assert answers(h) == [
        (Error(ErrorCode.NOT_DEFINED, "File too big for MTFTP (65535 blocks)"), CLIENT)
    ]
    assert h.server.mtftp.running == {} and h.server.active == {}


def test_a_stranger_gets_error_5(harness, tmp_path):
    h = mtftpHarness(harness, tmp_path)
    port, _ = transfer(h)
    sent(port)
    port.deliver(encodeAck(1), OTHER)
    assert sent(port) == [(Error(ErrorCode.UNKNOWN_TID, "Unknown transfer ID"), OTHER)]


def test_the_clients_error_ends_the_transfer(harness, tmp_path):
    h = mtftpHarness(harness, tmp_path)
    port, _ = transfer(h)
    port.deliver(b"\x00\x05\x00\x00stop\x00", CLIENT)
    [record] = h.recorder.ended
    assert (record.status, record.message, record.errorCode) == ("error", "client_error", 0)
    assert h.server.mtftp.running == {} and not port.listening


def test_the_ordinary_listener_serves_the_same_file_by_unicast(harness, tmp_path):
    h = mtftpHarness(harness, tmp_path)
    parts = boot(h, 700)
    h.request("pxelinux.0")
    port = h.transferPort()
    assert sent(port) == [(Data(1, parts[0]), CLIENT)]
    port.deliver(encodeAck(1), CLIENT)
    assert sent(port) == [(Data(2, parts[1]), CLIENT)]


def test_sighup_reads_the_list_again_and_keeps_running_transfers(harness, tmp_path):
    h = mtftpHarness(harness, tmp_path)
    h.write("kernel", b"k" * 10)
    port, _ = transfer(h)
    (tmp_path / "mtftp.conf").write_text("pxelinux.0 239.255.1.1 3001\nkernel 239.255.1.2 3001\n")
    with capturedLogs() as captured:
        h.service.reload()
    assert any("SIGHUP: MTFTP files reloaded (2)" in formatEvent(e) for e in captured)
    ask(h, client=OTHER)  # still being sent
    assert h.reactor.newestPort() is port
    ask(h, "kernel", client=OTHER)
    assert sent(h.transferPort()) == [(Data(1, b"k" * 10), OTHER)]
    (tmp_path / "mtftp.conf").write_text("kernel 10.0.0.1 3001\n")
    with capturedLogs() as captured:
        h.service.reload()
    [line] = [formatEvent(e) for e in captured if "MTFTP files kept" in formatEvent(e)]
    assert line.endswith(
        "mtftp.conf:1: expected an IPv4 multicast group (224.0.0.0/4), got '10.0.0.1'"
    )
    assert h.server.mtftp.find("pxelinux.0") is not None
