"""Write transfers (WRQ) in memory: a WriteTransfer on a MemoryUDPReactor port,
driven by hand on the fake clock. Every scenario ends with no timer left."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from zope.interface import implementer
from zope.interface.verify import verifyObject

from ctftp.errors import RequestRefused
from ctftp.packets import (
    Ack,
    Error,
    OptionAck,
    decode,
    encodeAck,
    encodeData,
    encodeError,
)
from ctftp.testing import MemoryUDPReactor
from ctftp.transfer import Outcome
from ctftp.upload import WriteTransfer
from ctftp.writes import IWriteFile, LocalWriteSink, WriteRequest, diskFull

CLIENT = ("10.0.0.5", 40000)
STRANGER = ("10.0.0.9", 5555)


@implementer(IWriteFile)
class MemoryFile:
    """An IWriteFile in memory that records what the transfer did to it."""

    path = None

    def __init__(self, failAfter: int | None = None, refusal: Exception | None = None) -> None:
        self.data = bytearray()
        self.writes: list[bytes] = []
        self.commits = 0
        self.aborts = 0
        self.failAfter = failAfter
        self.refusal = refusal or diskFull()
        self.commitResult: Any = None

    def write(self, data: bytes) -> None:
        if self.failAfter is not None and len(self.data) + len(data) > self.failAfter:
            raise self.refusal
        self.writes.append(data)
        self.data += data

    def commit(self) -> Any:
        self.commits += 1
        return self.commitResult

    def abort(self) -> None:
        self.aborts += 1


class Upload:
    """One WriteTransfer on a fresh port, with what it reported."""

    def __init__(
        self,
        file: Any = None,
        *,
        netascii: bool = False,
        blksize: int = 512,
        windowsize: int = 1,
        timeout: float = 1.0,
        maxRetries: int = 3,
        oack: tuple[tuple[str, str], ...] = (),
        maxBytes: int = 0,
    ) -> None:
        self.reactor = MemoryUDPReactor()
        self.file = MemoryFile() if file is None else file
        self.blksize = blksize
        self.outcomes: list[Outcome] = []
        self.closed = 0
        self.transfer = WriteTransfer(
            clock=self.reactor,
            client=CLIENT,
            file=self.file,
            netascii=netascii,
            blksize=blksize,
            windowsize=windowsize,
            timeout=timeout,
            maxRetries=maxRetries,
            oack=oack,
            maxBytes=maxBytes,
            onDone=self._done,
            onClosed=self._closed,
        )
        self.port = self.reactor.listenUDP(0, self.transfer)

    def _done(self, transfer: WriteTransfer, outcome: Outcome) -> None:
        assert transfer is self.transfer
        self.outcomes.append(outcome)

    def _closed(self, transfer: WriteTransfer) -> None:
        assert transfer is self.transfer
        assert self.outcomes, "closed before the outcome was reported"
        self.closed += 1
        self.port.stopListening()

    def replies(self) -> list[Any]:
        out = self.port.take()
        assert all(addr == CLIENT for _, addr in out), out
        return [decode(d) for d, _ in out]

    def data(self, block: int, payload: bytes) -> None:
        self.port.deliver(encodeData(block, payload), CLIENT)

    def send(self, content: bytes, first: int = 1) -> None:
        """Send ``content`` lock-step as blocks ``first``..., checking each ACK."""
        blocks = [content[i : i + self.blksize] for i in range(0, len(content), self.blksize)]
        if len(content) % self.blksize == 0:
            blocks.append(b"")
        for number, payload in enumerate(blocks, first):
            self.data(number & 0xFFFF, payload)
            assert self.replies() == [Ack(number & 0xFFFF)]

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass in steps of the timeout, so re-armed timers fire too."""
        step = self.transfer.timeout
        while seconds > 0:
            self.reactor.advance(min(step, seconds))
            seconds -= step

    def dally(self) -> None:
        """Let the post-completion dally run out; the port must then be closed."""
        self.reactor.advance(self.transfer.timeout)
        self.assertClosed()

    def assertClosed(self) -> None:
        assert self.closed == 1
        assert len(self.outcomes) == 1
        assert not self.port.listening
        assert self.reactor.getDelayedCalls() == []


def blob(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


# -- opening and normal uploads ----------------------------------------------


def test_without_options_it_opens_with_ack_0():
    u = Upload()
    assert u.replies() == [Ack(0)]
    u.send(b"hello\n")
    assert u.outcomes == [("ok", "transfer_complete", None)]
    assert bytes(u.file.data) == b"hello\n"
    assert u.file.commits == 1 and u.file.aborts == 0
    u.dally()


def test_with_options_it_opens_with_the_oack_and_data_1_acknowledges_it():
    u = Upload(blksize=1024, oack=(("blksize", "1024"), ("tsize", "3000")))
    assert u.replies() == [OptionAck((("blksize", "1024"), ("tsize", "3000")))]
    data = blob(3000)
    u.send(data)
    assert bytes(u.file.data) == data
    assert u.transfer.bytesReceived == 3000
    u.dally()


@pytest.mark.parametrize("size", [0, 511, 512, 513, 1024, 5000])
def test_sizes(size):
    u = Upload()
    u.replies()
    data = blob(size)
    u.send(data)  # a multiple of 512 ends with an empty DATA
    assert bytes(u.file.data) == data
    assert u.transfer.bytesReceived == size
    assert u.outcomes == [("ok", "transfer_complete", None)]
    assert u.transfer.retransmits == 0
    u.dally()


def test_commit_comes_before_the_final_ack():
    u = Upload()
    u.replies()
    seen: list[int] = []
    u.file.commit = lambda: seen.append(len(u.port.written))  # type: ignore[method-assign]
    u.data(1, b"short")
    assert seen == [0]  # nothing was sent yet when commit ran
    assert u.replies() == [Ack(1)]
    u.dally()


def test_netascii_is_decoded_including_a_cr_split_across_blocks():
    # Wire: "a" CR LF "b" CR NUL "c" ... with CRs ending blocks 1 and 2.
    wire = b"abcdefg\r" + b"\nxyzuvw\r" + b"\0end\r"
    u = Upload(netascii=True, blksize=8)
    u.replies()
    u.send(wire)
    assert bytes(u.file.data) == b"abcdefg\nxyzuvw\rend\r"  # a final lone CR is kept
    assert u.transfer.bytesReceived == len(wire)
    u.dally()


def test_netascii_line_endings():
    u = Upload(netascii=True)
    u.replies()
    u.send(b"line one\r\nline two\r\0\r\n")
    assert bytes(u.file.data) == b"line one\nline two\r\n"
    u.dally()


def test_rollover_past_65535_blocks():
    blocks = 65536 + 20
    data = bytes(i % 253 for i in range(8 * blocks - 3))
    u = Upload(blksize=8)
    u.replies()
    u.send(data)
    assert bytes(u.file.data) == data
    assert u.outcomes == [("ok", "transfer_complete", None)]
    u.dally()


def test_rollover_with_a_window():
    blocks = 65536 + 40
    data = bytes(i % 249 for i in range(8 * blocks - 5))
    u = Upload(blksize=8, windowsize=16, oack=(("windowsize", "16"),))
    u.replies()
    acks = []
    for number in range(1, blocks + 1):
        u.data(number & 0xFFFF, data[(number - 1) * 8 : number * 8])
        acks += u.replies()
    assert acks[-1] == Ack(blocks & 0xFFFF)
    assert len(acks) == blocks // 16 + 1
    assert bytes(u.file.data) == data
    u.dally()


# -- windows (RFC 7440) --------------------------------------------------------


def test_window_acks_at_the_end_of_each_window_and_on_the_final_block():
    u = Upload(windowsize=4, oack=(("windowsize", "4"),))
    u.replies()
    data = blob(512 * 9 + 100)  # 10 blocks: windows 1-4, 5-8, then 9-10
    sent = []
    for number in range(1, 11):
        u.data(number, data[(number - 1) * 512 : number * 512])
        sent.append((number, u.replies()))
    assert [(n, r) for n, r in sent if r] == [(4, [Ack(4)]), (8, [Ack(8)]), (10, [Ack(10)])]
    assert bytes(u.file.data) == data
    u.dally()


def test_window_with_a_gap_re_acks_the_last_in_order_block_once():
    u = Upload(windowsize=4, oack=(("windowsize", "4"),))
    u.replies()
    data = blob(512 * 7 + 1)  # 8 blocks
    block = {n: data[(n - 1) * 512 : n * 512] for n in range(1, 9)}
    u.data(1, block[1])
    u.data(2, block[2])
    assert u.replies() == []
    u.data(4, block[4])  # 3 was lost
    assert u.replies() == [Ack(2)]
    u.data(5, block[5])  # same gap: no second ACK
    u.data(4, block[4])
    assert u.replies() == []
    # The sender restarts after 2 with a fresh window: 3-6.
    for n in (3, 4, 5):
        u.data(n, block[n])
    assert u.replies() == []
    u.data(6, block[6])
    assert u.replies() == [Ack(6)]
    u.data(8, block[8])  # a new gap (7 lost) is answered again
    assert u.replies() == [Ack(6)]
    u.data(7, block[7])
    u.data(8, block[8])
    assert u.replies() == [Ack(8)]
    assert bytes(u.file.data) == data
    assert u.file.writes == [block[n] for n in range(1, 9)]  # each block written once
    assert u.transfer.retransmits == 2
    u.dally()


def test_window_timeout_acks_the_last_in_order_block():
    u = Upload(windowsize=4, oack=(("windowsize", "4"),))
    u.replies()
    u.data(1, blob(512))
    u.data(2, blob(512))
    u.reactor.advance(1.0)  # 3 and 4 never came
    assert u.replies() == [Ack(2)]
    for n in (3, 4, 5, 6):
        u.data(n, blob(512))
    assert u.replies() == [Ack(6)]
    u.data(7, b"")
    assert u.replies() == [Ack(7)]
    u.dally()


def test_window_whose_ack_was_lost_is_acked_again_when_the_sender_resends_it():
    u = Upload(windowsize=3, oack=(("windowsize", "3"),))
    u.replies()
    for n in (1, 2, 3):
        u.data(n, blob(512))
    assert u.replies() == [Ack(3)]  # lost on the way
    for n in (1, 2):  # the sender's timer sends the window again
        u.data(n, blob(512))
    assert u.replies() == []
    u.data(3, blob(512))
    assert u.replies() == [Ack(3)]
    assert len(u.file.writes) == 3
    u.data(4, b"end")
    assert u.replies() == [Ack(4)]
    u.dally()


# -- losses and repeats ---------------------------------------------------------


def test_lost_ack_repeated_data_is_acked_again_not_written_twice():
    u = Upload()
    u.replies()
    u.data(1, b"a" * 512)
    assert u.replies() == [Ack(1)]
    u.data(1, b"a" * 512)  # our ACK 1 was lost
    assert u.replies() == [Ack(1)]
    u.data(2, b"b" * 512)
    assert u.replies() == [Ack(2)]
    u.data(1, b"a" * 512)  # an older duplicate: ignored
    assert u.replies() == []
    u.data(3, b"c")
    assert u.replies() == [Ack(3)]
    assert bytes(u.file.data) == b"a" * 512 + b"b" * 512 + b"c"
    assert u.transfer.retransmits == 1
    u.dally()


def test_timer_resends_the_last_ack():
    u = Upload()
    u.replies()
    u.data(1, b"a" * 512)
    assert u.replies() == [Ack(1)]
    u.reactor.advance(0.999)
    assert u.replies() == []
    u.reactor.advance(0.001)
    assert u.replies() == [Ack(1)]
    u.data(2, b"b")
    assert u.replies() == [Ack(2)]
    assert u.transfer.retransmits == 1
    u.dally()


def test_the_timer_counts_from_the_last_ack_sent():
    u = Upload()
    u.replies()
    u.reactor.advance(0.75)
    u.data(1, b"a" * 512)
    assert u.replies() == [Ack(1)]
    u.reactor.advance(0.9375)  # 1.6875 s since the opening ACK
    assert u.replies() == []
    u.reactor.advance(0.0625)
    assert u.replies() == [Ack(1)]
    u.data(2, b"b")
    assert u.replies() == [Ack(2)]
    u.dally()


def test_oack_is_resent_by_the_timer():
    u = Upload(oack=(("tsize", "5"),))
    [oack] = u.replies()
    u.reactor.advance(1.0)
    assert u.replies() == [oack]
    u.data(1, b"12345")
    assert u.replies() == [Ack(1)]
    u.dally()


def test_repeated_final_data_after_completion_gets_the_final_ack_again():
    u = Upload(maxRetries=2)
    u.replies()
    u.data(1, b"x" * 512)
    u.data(2, b"end")
    assert u.replies() == [Ack(1), Ack(2)]
    assert u.outcomes == [("ok", "transfer_complete", None)]  # reported at commit
    u.data(2, b"end")
    assert u.replies() == [Ack(2)]
    u.reactor.advance(0.5)
    u.data(2, b"end")
    assert u.replies() == [Ack(2)]
    u.data(2, b"end")  # 1 + max_retries final ACKs were sent: no more
    u.data(1, b"x" * 512)  # nor is anything else answered
    assert u.replies() == []
    assert u.file.commits == 1 and len(u.file.writes) == 2
    assert u.port.listening
    u.dally()  # the dally timer restarted at the last final ACK
    assert u.outcomes == [("ok", "transfer_complete", None)]


def test_the_port_dallies_for_timeout_seconds_then_closes():
    u = Upload(timeout=2.0)
    u.replies()
    u.data(1, b"done")
    u.replies()
    u.reactor.advance(1.9)
    assert u.port.listening and u.closed == 0
    u.reactor.advance(0.1)
    u.assertClosed()


def test_wrong_tid_gets_error_5_and_nothing_else_changes():
    u = Upload()
    u.replies()
    u.data(1, b"a" * 512)
    assert u.replies() == [Ack(1)]
    u.port.deliver(encodeData(2, b"evil"), STRANGER)
    u.port.deliver(encodeError(0, "go away"), (CLIENT[0], CLIENT[1] + 1))
    out = u.port.take()
    # The stranger's DATA gets ERROR 5; an ERROR is never answered (RFC 1350).
    assert [(decode(d), a) for d, a in out] == [(Error(5, "Unknown transfer ID"), STRANGER)]
    u.data(2, b"good")
    assert u.replies() == [Ack(2)]
    assert bytes(u.file.data) == b"a" * 512 + b"good"
    assert u.outcomes == [("ok", "transfer_complete", None)]
    # During the dally as well.
    u.port.deliver(encodeData(2, b"good"), STRANGER)
    assert decode(u.port.take()[0][0]) == Error(5, "Unknown transfer ID")
    u.dally()


def test_stray_packets_are_ignored():
    u = Upload()
    u.replies()
    u.port.deliver(encodeAck(1), CLIENT)
    u.port.deliver(b"\x00\x03", CLIENT)  # too short
    u.port.deliver(b"\x00\x09\x00\x01", CLIENT)  # unknown opcode
    u.data(0, b"block zero")
    u.data(40000, b"far away")  # an old number, not a gap
    assert u.replies() == []
    u.data(1, b"fine")
    assert u.replies() == [Ack(1)]
    assert bytes(u.file.data) == b"fine"
    u.dally()


# -- failures -----------------------------------------------------------------


def test_timeout_before_any_data_gives_up_after_max_retries():
    u = Upload(maxRetries=3)
    sent = len(u.replies())
    for _ in range(10):
        u.reactor.advance(1.0)
        sent += len(u.replies())
    assert sent == 1 + 3
    assert u.outcomes == [("error", "timeout", None)]
    assert u.file.aborts == 1 and u.file.commits == 0
    u.assertClosed()


def test_timeout_midway_aborts():
    u = Upload(maxRetries=2)
    u.replies()
    u.data(1, b"a" * 512)
    assert u.replies() == [Ack(1)]
    u.wait(10)
    assert u.replies() == [Ack(1), Ack(1)]
    assert u.outcomes == [("error", "timeout", None)]
    assert u.transfer.retransmits == 2
    assert u.file.aborts == 1
    u.assertClosed()


def test_client_error_aborts_quietly():
    u = Upload()
    u.replies()
    u.data(1, b"a" * 512)
    u.replies()
    u.port.deliver(encodeError(0, "user cancelled"), CLIENT)
    assert u.replies() == []
    assert u.outcomes == [("error", "client_error", 0)]
    assert u.file.aborts == 1 and u.file.commits == 0
    u.assertClosed()


def test_client_error_8_after_oack():
    u = Upload(oack=(("blksize", "1024"),), blksize=1024)
    u.replies()
    u.port.deliver(encodeError(8, "no"), CLIENT)
    assert u.outcomes == [("error", "client_error", 8)]
    u.assertClosed()


def test_disk_full_from_the_sink_is_error_3_and_aborts():
    u = Upload(MemoryFile(failAfter=1000))
    u.replies()
    u.data(1, b"a" * 512)
    assert u.replies() == [Ack(1)]
    u.data(2, b"b" * 512)
    assert u.replies() == [Error(3, "Disk full or allocation exceeded")]
    assert u.outcomes == [("error", "disk_full", 3)]
    assert u.file.aborts == 1 and u.file.commits == 0
    u.assertClosed()


def test_other_refusal_from_the_sink_is_passed_on():
    u = Upload(MemoryFile(failAfter=0, refusal=RequestRefused(2, "Read-only storage")))
    u.replies()
    u.data(1, b"x")
    assert u.replies() == [Error(2, "Read-only storage")]
    assert u.outcomes == [("error", "access_denied", 2)]
    u.assertClosed()


def test_a_bug_in_the_sink_is_error_0_not_a_traceback():
    u = Upload(MemoryFile(failAfter=0, refusal=ZeroDivisionError("oops")))
    u.replies()
    u.data(1, b"x")
    assert u.replies() == [Error(0, "Write error")]
    assert u.outcomes == [("error", "aborted", 0)]
    assert u.file.aborts == 1
    u.assertClosed()


def test_max_bytes_exceeded_midway_is_error_3_and_aborts():
    u = Upload(maxBytes=1500)
    u.replies()
    u.data(1, b"a" * 512)
    u.data(2, b"b" * 512)
    assert u.replies() == [Ack(1), Ack(2)]
    u.data(3, b"c" * 512)  # 1536 > 1500
    assert u.replies() == [Error(3, "Disk full or allocation exceeded")]
    assert u.outcomes == [("error", "disk_full", 3)]
    assert u.transfer.bytesReceived == 1024
    assert len(u.file.writes) == 2 and u.file.aborts == 1
    u.assertClosed()


def test_max_bytes_exactly_reached_is_fine():
    u = Upload(maxBytes=1000)
    u.replies()
    u.send(blob(1000))
    assert u.outcomes == [("ok", "transfer_complete", None)]
    u.dally()


def test_data_larger_than_blksize_is_error_4():
    u = Upload(blksize=512)
    u.replies()
    u.data(1, b"x" * 513)
    assert u.replies() == [Error(4, "DATA larger than the block size")]
    assert u.outcomes == [("error", "illegal_operation", 4)]
    assert u.file.aborts == 1
    u.assertClosed()


def test_failing_commit_is_an_error_and_aborts():
    u = Upload()
    u.replies()

    def commit() -> None:
        raise diskFull()

    u.file.commit = commit  # type: ignore[method-assign]
    u.data(1, b"x")
    assert u.replies() == [Error(3, "Disk full or allocation exceeded")]
    assert u.outcomes == [("error", "disk_full", 3)]
    assert u.file.aborts == 1
    u.assertClosed()


# -- a commit that takes time (an embedder's sink) ----------------------------------


def test_deferred_commit_delays_the_final_ack():
    u = Upload()
    u.replies()
    stored: Deferred[None] = Deferred()
    u.file.commitResult = stored
    u.data(1, b"x")
    assert u.replies() == [] and u.outcomes == []
    u.data(1, b"x")  # the client repeats: nothing to say yet
    assert u.replies() == []
    assert u.reactor.getDelayedCalls() == []
    stored.callback(None)
    assert u.replies() == [Ack(1)]
    assert u.outcomes == [("ok", "transfer_complete", None)]
    u.dally()


def test_deferred_commit_failure_is_an_error():
    u = Upload()
    u.replies()
    stored: Deferred[None] = Deferred()
    u.file.commitResult = stored
    u.data(1, b"x")
    stored.errback(RequestRefused(0, "Upstream said 500", "aborted"))
    assert u.replies() == [Error(0, "Upstream said 500")]
    assert u.outcomes == [("error", "aborted", 0)]
    assert u.file.aborts == 1
    u.assertClosed()


def test_stop_during_a_deferred_commit_cancels_it_and_aborts():
    u = Upload()
    u.replies()
    cancelled = []
    stored: Deferred[None] = Deferred(lambda d: cancelled.append(d))
    u.file.commitResult = stored
    u.data(1, b"x")
    u.transfer.stop(("error", "aborted", None))
    assert cancelled == [stored]
    assert u.outcomes == [("error", "aborted", None)]
    assert u.file.aborts == 1
    assert u.replies() == []
    u.assertClosed()


# -- stopping ------------------------------------------------------------------


def test_stop_midway_aborts():
    u = Upload()
    u.replies()
    u.data(1, b"a" * 512)
    u.replies()
    u.transfer.stop(("error", "aborted", None))
    assert u.outcomes == [("error", "aborted", None)]
    assert u.file.aborts == 1
    u.assertClosed()


def test_stop_while_dallying_closes_without_a_second_outcome():
    u = Upload()
    u.replies()
    u.data(1, b"done")
    u.replies()
    u.transfer.stop(("error", "aborted", None))
    assert u.outcomes == [("ok", "transfer_complete", None)]
    assert u.file.aborts == 0
    u.assertClosed()


def test_client_error_while_dallying_changes_nothing():
    u = Upload()
    u.replies()
    u.data(1, b"done")
    u.replies()
    u.port.deliver(encodeError(0, "bye"), CLIENT)
    assert u.outcomes == [("ok", "transfer_complete", None)]
    assert u.file.aborts == 0
    u.assertClosed()


# -- with the local sink -------------------------------------------------------------


def localUpload(root: Path, name: str, **kwargs: Any) -> Upload:
    sink = LocalWriteSink(str(root), allowCreate=True)
    file = sink.openWrite(WriteRequest(name, CLIENT[0], CLIENT[1], "octet"))
    verifyObject(IWriteFile, file)
    upload = Upload(file, **kwargs)
    upload.sink = sink  # type: ignore[attr-defined]
    return upload


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.endswith(".ctftp-part"))


def test_local_upload_replaces_the_old_file_only_at_the_end(tmp_path):
    target = tmp_path / "config.txt"
    target.write_bytes(b"old content")
    u = localUpload(tmp_path, "config.txt")
    u.replies()
    data = blob(2000)
    u.data(1, data[:512])
    u.data(2, data[512:1024])
    assert u.replies() == [Ack(1), Ack(2)]
    assert target.read_bytes() == b"old content"
    assert len(leftovers(tmp_path)) == 1
    u.send(data[1024:], first=3)
    assert target.read_bytes() == data
    assert leftovers(tmp_path) == []
    u.dally()


def test_local_upload_timing_out_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "config.txt"
    target.write_bytes(b"old content")
    u = localUpload(tmp_path, "config.txt", maxRetries=2)
    u.replies()
    u.data(1, b"n" * 512)
    u.wait(100)
    assert u.outcomes == [("error", "timeout", None)]
    assert target.read_bytes() == b"old content"
    assert leftovers(tmp_path) == []
    assert u.sink.uploading == set()  # type: ignore[attr-defined]
    u.assertClosed()


def test_local_upload_client_error_leaves_no_new_file(tmp_path):
    u = localUpload(tmp_path, "new.bin")
    u.replies()
    u.data(1, b"n" * 512)
    u.port.deliver(encodeError(0, "cancel"), CLIENT)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    u.assertClosed()


def test_local_upload_disk_full_is_error_3_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "dump.bin"
    target.write_bytes(b"previous dump")
    u = localUpload(tmp_path, "dump.bin")
    u.replies()
    u.data(1, b"a" * 512)
    assert u.replies() == [Ack(1)]

    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    u.data(2, b"b" * 512)
    monkeypatch.undo()
    assert u.replies() == [Error(3, "Disk full or allocation exceeded")]
    assert u.outcomes == [("error", "disk_full", 3)]
    assert target.read_bytes() == b"previous dump"
    assert leftovers(tmp_path) == []
    u.assertClosed()


def test_local_upload_max_bytes_cleans_up(tmp_path):
    u = localUpload(tmp_path, "big.bin", maxBytes=600)
    u.replies()
    u.data(1, b"a" * 512)
    u.data(2, b"b" * 512)
    assert u.replies() == [Ack(1), Error(3, "Disk full or allocation exceeded")]
    assert list(tmp_path.iterdir()) == []
    u.assertClosed()


def test_local_netascii_upload(tmp_path):
    u = localUpload(tmp_path, "notes.txt", netascii=True)
    u.replies()
    u.send(b"one\r\ntwo\r\n")
    assert (tmp_path / "notes.txt").read_bytes() == b"one\ntwo\n"
    u.dally()


def test_acks_on_the_clients_cue_count_against_max_retries():
    u = Upload(maxRetries=2)
    u.replies()
    u.data(1, b"a" * 512)
    assert u.replies() == [Ack(1)]
    for _ in range(5):  # a client that repeats block 1 forever
        u.data(1, b"a" * 512)
    assert u.replies() == [Ack(1), Ack(1)]  # 1 + max_retries ACK 1 in all
    u.reactor.advance(1.0)  # the timer finds the budget spent
    assert u.replies() == []
    assert u.outcomes == [("error", "timeout", None)]
    assert u.file.aborts == 1
    u.assertClosed()


def test_a_new_block_renews_the_budget():
    u = Upload(maxRetries=1)
    u.replies()
    u.data(1, b"a" * 512)
    u.data(1, b"a" * 512)
    u.data(1, b"a" * 512)
    assert u.replies() == [Ack(1), Ack(1)]
    u.data(2, b"b" * 512)
    u.data(2, b"b" * 512)
    assert u.replies() == [Ack(2), Ack(2)]
    u.data(3, b"")
    assert u.replies() == [Ack(3)]
    assert bytes(u.file.data) == b"a" * 512 + b"b" * 512
    u.dally()


# -- a lossy network ------------------------------------------------------------


def lossyUpload(seed: int, blocks: int, blksize: int, windowsize: int) -> None:
    """An RFC 7440 sender over a network that drops, repeats and reorders
    packets both ways; the upload must still be byte-exact, written once."""
    rng = random.Random(seed)
    data = rng.randbytes(blksize * (blocks - 1) + rng.randrange(blksize))
    oack = (("windowsize", str(windowsize)),) if windowsize > 1 else ()
    u = Upload(blksize=blksize, windowsize=windowsize, oack=oack, maxRetries=1000)
    acked = 0  # last block the sender saw acknowledged
    for _ in range(100 * blocks):
        replies = [p for p in u.replies() if rng.random() > 0.2]
        for reply in replies:
            assert isinstance(reply, (Ack, OptionAck)), reply
            if isinstance(reply, Ack):
                ahead = (reply.block - acked) & 0xFFFF
                if ahead <= windowsize:  # else a stale ACK from before a rollover
                    acked += ahead
        if acked == blocks or not u.port.listening:
            break
        # The sender's window (again, when nothing new was acknowledged).
        packets = [
            encodeData(n & 0xFFFF, data[(n - 1) * blksize : n * blksize])
            for n in range(acked + 1, min(acked + windowsize, blocks) + 1)
        ]
        packets += [p for p in packets if rng.random() < 0.1]
        if rng.random() < 0.2:
            rng.shuffle(packets)
        for packet in packets:
            if rng.random() > 0.2 and u.port.listening:
                u.port.deliver(packet, CLIENT)
        if rng.random() < 0.3:
            u.reactor.advance(u.transfer.timeout / 2)
    assert u.outcomes == [("ok", "transfer_complete", None)]
    assert bytes(u.file.data) == data  # in order, nothing twice, nothing missing
    assert u.file.commits == 1 and u.file.aborts == 0
    if u.port.listening:
        u.reactor.advance(u.transfer.timeout)
    u.wait(u.transfer.timeout * 1002)
    u.assertClosed()


@pytest.mark.parametrize("seed", range(12))
def test_lossy_network(seed):
    lossyUpload(seed, blocks=60, blksize=16, windowsize=1 + seed % 6)


def test_lossy_network_with_rollover():
    lossyUpload(99, blocks=65536 + 300, blksize=8, windowsize=64)
