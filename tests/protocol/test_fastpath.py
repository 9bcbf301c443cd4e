"""The fast paths of the read path (docs/performance.md) send exactly what the
plain paths send: the same datagrams to the same address, the same errors.

Real loopback sockets where the fast path is a socket call; no timing here.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import random
import select
import socket
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CLIENT, Error, Harness, OptionAck
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import error, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import capturedLogs

from ctftp import logs
from ctftp.errors import RequestRefused
from ctftp.events import LogEventObserver, TransferRecord, quoteName
from ctftp.packets import decode, encodeAck
from ctftp.sources import IReadFile, LocalFile, LocalFileSource
from ctftp.testing import MemoryDatagramPort
from ctftp.transfer import ReadTransfer
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


class Recording(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, addr))


def _portWithThreeWaiting(
    protocol: DatagramProtocol, receiver: socket.socket, readBatch: int = 1
) -> QuietPort:
    """A listening QuietPort with ``ack 0``..``ack 2`` from ``receiver`` in its socket."""
    port = QuietPort(0, protocol, "127.0.0.1", 65536, reactor)
    port.readBatch = readBatch
    port.startListening()
    target = ("127.0.0.1", port.getHost().port)
    for n in range(3):
        receiver.sendto(b"ack %d" % n, target)
    wait = select.poll()
    wait.register(port.socket, select.POLLIN)
    assert wait.poll(5000)
    return port


def test_quiet_port_reads_one_datagram_a_call_and_read_queued_reads_all(receiver):
    protocol = Recording()
    port = _portWithThreeWaiting(protocol, receiver)
    try:
        port.doRead()
        assert protocol.received == [(b"ack 0", receiver.getsockname())]
        port.readQueued()
        assert [d for d, _ in protocol.received] == [b"ack 0", b"ack 1", b"ack 2"]
        port.doRead()  # nothing waits: no exception, nothing delivered
        port.readQueued()
        assert len(protocol.received) == 3
    finally:
        port.stopReading()
        port.connectionLost()


def test_a_shared_port_reads_up_to_its_batch_a_call(receiver):
    protocol = Recording()
    port = _portWithThreeWaiting(protocol, receiver, readBatch=2)
    try:
        port.doRead()
        assert [d for d, _ in protocol.received] == [b"ack 0", b"ack 1"]
        port.doRead()  # one waits, then EAGAIN ends the batch quietly
        assert [d for d, _ in protocol.received] == [b"ack 0", b"ack 1", b"ack 2"]
    finally:
        port.stopReading()
        port.connectionLost()


class ClosingOnFirst(Recording):
    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        super().datagramReceived(datagram, addr)
        self.transport.stopListening()  # type: ignore[union-attr]


def test_a_port_closed_by_its_protocol_stops_reading_at_once(receiver):
    """A transfer that ends on a datagram closes its port right there (no
    timer): the rest of a batch or of readQueued is not read from it."""
    protocol = ClosingOnFirst()
    port = _portWithThreeWaiting(protocol, receiver)
    assert not port.socket.getblocking()
    assert not os.get_inheritable(port.socket.fileno())
    port.readQueued()
    assert [d for d, _ in protocol.received] == [b"ack 0"]
    assert not port.connected and not hasattr(port, "socket")
    assert not [c for c in reactor.getDelayedCalls() if c.func == port.connectionLost]


@pytest.mark.parametrize(
    ("interface", "family"), [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)]
)
def test_quiet_port_family_is_twisteds_checked_once_per_interface(interface, family):
    """The family comes from Twisted's own check the first time an interface
    is seen; a name that is not an address is still refused at once."""
    for _ in range(2):
        port = QuietPort(0, DatagramProtocol(), interface, 65536, reactor)
        assert port.addressFamily == family
    with pytest.raises(error.InvalidAddressError):
        QuietPort(0, DatagramProtocol(), "localhost", 65536, reactor)


def test_quiet_port_closes_with_the_protocol_stopped_and_nothing_watched(receiver):
    """Closing stops reading, stops the protocol and closes the socket; the
    log prefix, built when asked for, names the protocol as Twisted's does."""
    protocol = Recording()
    port = _portWithThreeWaiting(protocol, receiver)
    assert port.logPrefix() == "Recording (UDP)"
    assert port in reactor.getReaders()
    fd = port.fileno()
    port.stopListening()
    assert port not in reactor.getReaders() and port not in reactor.getWriters()
    assert not port.connected and port.disconnected
    assert protocol.transport is None  # doStop ran: makeConnection is undone
    with pytest.raises(OSError):
        os.fstat(fd)  # closed (pytest opens nothing in between)


def test_pooled_ports_ask_for_a_large_receive_buffer():
    """Hundreds of ACKs can wait on a port that transfers share: it gets
    the listeners' buffer (as far as net.core.rmem_max allows)."""
    from ctftp.udp import LISTENER_RCVBUF, transferListener

    plain = transferListener(reactor)(0, Recording(), "127.0.0.1", 65536)
    pooled = transferListener(reactor, readBatch=64, receiveBuffer=LISTENER_RCVBUF)(
        0, Recording(), "127.0.0.1", 65536
    )
    try:
        size = {
            name: port.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # type: ignore[attr-defined]
            for name, port in (("plain", plain), ("pooled", pooled))
        }
        rmemMax = int(Path("/proc/sys/net/core/rmem_max").read_text())
        assert size["pooled"] >= size["plain"]
        if rmemMax >= 2 * size["plain"]:
            assert size["pooled"] > size["plain"]
    finally:
        plain.stopListening()
        pooled.stopListening()


# -- LocalFile: blocks of every size, in order -----------------------------


def readAll(file: IReadFile, blksize: int) -> list[bytes]:
    blocks = []
    while True:
        block = file.read(blksize)
        blocks.append(block)
        if len(block) < blksize:
            return blocks


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 200_000) | st.sampled_from([0, 512, 4096, 65464, 65536, 131072]),
    blksize=st.sampled_from([8, 512, 1428, 8192, 65464]),
)
def test_local_file_blocks_are_the_file_in_order(tmp_path_factory, size, blksize):
    data = random.Random(size).randbytes(size)
    path = tmp_path_factory.mktemp("f") / "f.bin"
    path.write_bytes(data)
    file = LocalFileSource([str(path.parent)]).openPath(str(path))
    try:
        blocks = readAll(file, blksize)
    finally:
        file.close()
    assert b"".join(blocks) == data
    assert all(len(b) == blksize for b in blocks[:-1])
    assert len(blocks) == size // blksize + 1  # a multiple of blksize ends with b""


def test_local_file_mixed_read_sizes(tmp_path):
    data = random.Random(7).randbytes(100_000)
    (tmp_path / "f.bin").write_bytes(data)
    file = LocalFileSource([str(tmp_path)]).openPath(str(tmp_path / "f.bin"))
    got = bytearray()
    for n in itertools.cycle([1, 512, 70_000, 3, 1428]):
        chunk = file.read(n)
        got += chunk
        if len(chunk) < n:
            break
    file.close()
    assert bytes(got) == data


def readAllInto(file: LocalFile, blksize: int, counts: list[int]) -> list[bytes]:
    """The file's blocks as ``DataWindow.fill`` asks for them: ``counts[i]``
    blocks in the i-th call (cycling), each into a buffer of its own."""
    blocks = []
    for count in itertools.cycle(counts):
        buffers = [memoryview(bytearray(blksize)) for _ in range(count)]
        got = file.readInto(buffers, count * blksize)
        full, rest = divmod(got, blksize)
        blocks += [bytes(b) for b in buffers[:full]]
        if full < count:
            return [*blocks, bytes(buffers[full][:rest])]
    raise AssertionError("unreachable")


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 200_000) | st.sampled_from([0, 512, 4096, 65464, 65536, 131072]),
    blksize=st.sampled_from([8, 512, 1428, 8192, 65464]),
    counts=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    shortReads=st.booleans(),
)
def test_local_file_read_into_gives_the_blocks_read_gives(
    tmp_path_factory, size, blksize, counts, shortReads
):
    """The same blocks as :func:`readAll`, however many a call asks for,
    and when the system returns fewer bytes than asked before the end."""
    data = random.Random(size).randbytes(size)
    path = tmp_path_factory.mktemp("f") / "f.bin"
    path.write_bytes(data)
    file = LocalFileSource([str(path.parent)]).openPath(str(path))
    realReadv = os.readv

    def shortReadv(fd: int, buffers: Any) -> int:
        return realReadv(fd, [buffers[0][: max(1, len(buffers[0]) // 3)]])

    with pytest.MonkeyPatch.context() as patch:
        if shortReads:
            patch.setattr(os, "readv", shortReadv)
        try:
            blocks = readAllInto(file, blksize, counts)
        finally:
            file.close()
    assert b"".join(blocks) == data
    assert all(len(b) == blksize for b in blocks[:-1])
    assert len(blocks) == size // blksize + 1


def test_local_file_read_into_more_buffers_than_one_readv_takes(tmp_path):
    data = random.Random(3).randbytes(3000 * 8 + 5)
    (tmp_path / "f.bin").write_bytes(data)
    file = LocalFileSource([str(tmp_path)]).openPath(str(tmp_path / "f.bin"))
    buffers = [memoryview(bytearray(8)) for _ in range(4000)]
    try:
        assert file.readInto(buffers, 4000 * 8) == len(data)
    finally:
        file.close()
    assert b"".join(bytes(b) for b in buffers)[: len(data)] == data


# -- a window goes to the transport in one call -----------------------------


def windowedClient(h: Harness, port: Any, blksize: int, dropData: int, dropAck: int) -> bytes:
    """An RFC 7440 client: takes what the server sent, loses every
    ``dropData``-th DATA and every ``dropAck``-th ACK, and ACKs the last
    block received in order; returns the file."""
    received = bytearray()
    expected = 1
    seen = acks = 0
    for _ in range(1_000_000):
        out = port.take()
        if not out:
            if not port.listening:
                return bytes(received)
            h.reactor.advance(h.config.timeout_sec)
            continue
        for datagram, _ in out:
            packet = decode(datagram)
            if isinstance(packet, OptionAck):
                port.deliver(encodeAck(0), CLIENT)
                break
            seen += 1
            if seen % dropData == 0:
                continue
            if packet.block == expected & 0xFFFF:
                received += packet.payload
                expected += 1
        else:
            acks += 1
            if acks % dropAck:
                port.deliver(encodeAck((expected - 1) & 0xFFFF), CLIENT)
    raise AssertionError("transfer did not end")


def transcript(h: Harness, name: str, options: tuple[tuple[str, str], ...], blksize: int):
    h.request(name, options=options)
    port = h.transferPort()
    sent: list[bytes] = []
    take = port.take

    def recordingTake() -> list[tuple[bytes, Any]]:
        out = take()
        sent.extend(d for d, _ in out)
        return out

    port.take = recordingTake  # type: ignore[method-assign]
    return windowedClient(h, port, blksize, dropData=37, dropAck=11), sent


def sameTransfers(
    harness: Callable[..., Harness],
    size: int,
    options: tuple[tuple[str, str], ...],
    blksize: int,
    change: Callable[[], None],
) -> tuple[Any, list[bytes]]:
    """Serve a random file of ``size`` bytes to the lossy client twice, before
    and after ``change()`` (a monkeypatch of the path under test), and check
    that both send the same packets, end alike and leave no timer. Return
    the first transfer's record and packets."""
    before = harness()
    data = before.write("f.bin", random.Random(size).randbytes(size))
    beforeFile, beforeSent = transcript(before, "f.bin", options, blksize)
    change()
    after = harness()
    after.write("f.bin", data)
    afterFile, afterSent = transcript(after, "f.bin", options, blksize)

    assert beforeFile == afterFile == data
    assert beforeSent == afterSent
    first, second = before.recorder.ended[0], after.recorder.ended[0]
    assert (first.status, first.bytes, first.retransmits) == (
        second.status,
        second.bytes,
        second.retransmits,
    )
    assert first.status == "ok" and first.bytes == size
    assert before.reactor.getDelayedCalls() == after.reactor.getDelayedCalls() == []
    return first, beforeSent


@pytest.mark.parametrize(
    ("size", "blksize", "windowsize"),
    [
        (8 * (65536 + 300) - 3, 8, 16),  # rolls the block number over
        (1428 * 16 * 40, 1428, 16),  # a multiple of the window and of blksize
        (300_001, 1428, 7),
        (1_000_000, 8192, 8),  # 8 x 8196 bytes: more than one sendmsg holds
        (50_000, 512, 1),  # lock-step: one packet a time, no batch
    ],
)
def test_windows_batched_send_the_same_packets_as_one_by_one(
    harness, monkeypatch, size, blksize, windowsize
):
    options = (("blksize", str(blksize)), ("windowsize", str(windowsize)))
    plain = harness()
    data = plain.write("f.bin", random.Random(size).randbytes(size))
    plainFile, plainSent = transcript(plain, "f.bin", options, blksize)

    batches: list[int] = []

    def writeDatagrams(self: MemoryDatagramPort, datagrams: list[bytes], addr: Any) -> None:
        batches.append(len(datagrams))
        for datagram in datagrams:
            self.write(datagram, addr)

    monkeypatch.setattr(MemoryDatagramPort, "writeDatagrams", writeDatagrams, raising=False)
    batched = harness()
    batchedFile, batchedSent = transcript(batched, "f.bin", options, blksize)

    assert plainFile == batchedFile == data
    assert batchedSent == plainSent
    assert plain.recorder.ended[0].retransmits == batched.recorder.ended[0].retransmits > 0
    assert batched.recorder.ended[0].status == "ok"
    assert batched.reactor.getDelayedCalls() == []
    if windowsize > 1:
        assert max(batches) == windowsize
    else:
        assert batches == []


@pytest.mark.parametrize(
    ("size", "blksize", "windowsize"),
    [
        (8 * (65536 + 300) - 3, 8, 16),  # rolls the block number over
        (1428 * 16 * 40, 1428, 16),  # a multiple of the window and of blksize
        (300_001, 1428, 7),
        (50_000, 512, 1),  # lock-step
        (3 * 1428 + 5, 1428, 64),  # fewer blocks than the window
    ],
)
def test_windows_read_at_once_send_the_same_packets_as_blocks_read_one_by_one(
    harness, monkeypatch, size, blksize, windowsize
):
    """A local file's windows read with one ``readInto`` (ctftp.window) send
    the packets that reading it a block at a time sends, under loss."""
    options = (("blksize", str(blksize)), ("windowsize", str(windowsize)))

    def oneByOne() -> None:
        monkeypatch.delattr(LocalFile, "readInto")

    atOnce, sent = sameTransfers(harness, size, options, blksize, oneByOne)
    assert atOnce.retransmits > 0 or len(sent) < 37  # the client lost a DATA


@pytest.mark.parametrize(
    ("size", "blksize"),
    [
        (8 * (65536 + 300) - 3, 8),  # rolls the block number over
        (1428 * 40, 1428),  # a multiple of blksize: ends with an empty DATA
        (50_000, 512),
        (0, 512),
    ],
)
def test_lock_step_path_sends_the_same_packets_as_the_window_path(
    harness, monkeypatch, size, blksize
):
    """Lock-step's own path after an ACK (``ReadTransfer._sendNext``) sends
    what the general path sends for a window of one block, under loss."""

    def generalPath() -> None:
        monkeypatch.setattr(ReadTransfer, "_sendNext", ReadTransfer._sendWindow)

    sameTransfers(harness, size, (("blksize", str(blksize)),), blksize, generalPath)


@pytest.mark.parametrize(("windowsize", "readsInto"), [(1, False), (2, True)])
def test_a_window_of_one_block_is_read_with_read(harness, monkeypatch, windowsize, readsInto):
    """Lock-step costs less Python with ``read`` and a copy into the slot
    than with a ``readv`` of one buffer (benchmarks/perack.py)."""
    calls: list[int] = []
    real = LocalFile.readInto

    def countingReadInto(self: LocalFile, buffers: Any, size: int) -> int:
        calls.append(len(buffers))
        return real(self, buffers, size)

    monkeypatch.setattr(LocalFile, "readInto", countingReadInto)
    h = harness()
    data = h.write("f.bin", random.Random(9).randbytes(5000))
    options = (("blksize", "512"), ("windowsize", str(windowsize)))
    got, _ = transcript(h, "f.bin", options, 512)
    assert got == data
    assert bool(calls) is readsInto


def test_a_file_grown_since_it_was_opened_is_sent_whole(harness):
    """Its size at open bounds the first read of a window, not the transfer."""
    h = harness()
    data = h.write("f.bin", random.Random(5).randbytes(3000))
    h.request("f.bin", options=(("blksize", "1428"), ("windowsize", "16")))
    port = h.transferPort()
    grown = data + random.Random(6).randbytes(40_000)
    (h.root / "f.bin").write_bytes(grown)  # the same file, written over in place
    assert isinstance(decode(port.take()[0][0]), OptionAck)
    port.deliver(encodeAck(0), CLIENT)
    window = [decode(d) for d, _ in port.take()]
    assert [p.block for p in window] == list(range(1, 17))  # a whole window
    for _ in range(10):  # 43,000 bytes: 31 blocks, the last short
        if len(window[-1].payload) < 1428:
            break
        port.deliver(encodeAck(window[-1].block), CLIENT)
        window += [decode(d) for d, _ in port.take()]
    assert [p.block for p in window] == list(range(1, 32))
    assert b"".join(p.payload for p in window) == grown
    port.deliver(encodeAck(31), CLIENT)
    assert (h.recorder.ended[0].bytes, h.recorder.ended[0].retransmits) == (len(grown), 0)


def failThirdRead(monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    """Make ``LocalFile.read`` raise ``failure`` at its third call."""
    reads = 0
    real = LocalFile.read

    def failingRead(self: LocalFile, size: int) -> bytes:
        nonlocal reads
        reads += 1
        if reads == 3:
            raise failure
        return real(self, size)

    monkeypatch.setattr(LocalFile, "read", failingRead)


def test_read_error_mid_window_sends_the_blocks_read_before_the_error(harness, monkeypatch):
    h = harness()
    h.write("f.bin", bytes(range(256)) * 40)
    failThirdRead(monkeypatch, OSError(5, "Input/output error"))
    monkeypatch.delattr(LocalFile, "readInto")  # read a block at a time
    h.request("f.bin", options=(("windowsize", "4"),))
    port = h.transferPort()
    port.take()  # OACK
    port.deliver(encodeAck(0), CLIENT)
    sent = [decode(d) for d, _ in port.take()]
    assert [p.block for p in sent[:2]] == [1, 2]
    assert isinstance(sent[2], Error) and len(sent) == 3
    assert h.recorder.ended[0].message == "aborted"


@pytest.mark.parametrize(
    "failure, sent, outcome",
    [
        (OSError(errno.EIO, "Input/output error"), (0, "Read error"), ("error", "aborted", 0)),
        (RequestRefused(2, "Gone private"), (2, "Gone private"), ("error", "access_denied", 2)),
    ],
)
def test_lock_step_read_error_after_an_ack_ends_with_its_error(
    harness, monkeypatch, failure, sent, outcome
):
    """Lock-step's own path (``ReadTransfer._sendNext``) ends a transfer
    whose read fails as the window path does: the blocks before went out,
    then the ERROR, and no timer is left."""
    h = harness()
    h.write("f.bin", bytes(range(256)) * 8)
    failThirdRead(monkeypatch, failure)
    h.request("f.bin")
    port = h.transferPort()
    assert [decode(d).block for d, _ in port.take()] == [1]
    port.deliver(encodeAck(1), CLIENT)
    assert [decode(d).block for d, _ in port.take()] == [2]
    port.deliver(encodeAck(2), CLIENT)
    [error] = [decode(d) for d, _ in port.take()]
    assert isinstance(error, Error) and (error.code, error.message) == sent
    [record] = h.recorder.ended
    assert (record.status, record.message, record.errorCode) == outcome
    assert record.bytes == 1024
    assert h.reactor.getDelayedCalls() == []


def test_read_error_in_a_window_read_at_once_resends_then_ends(harness, monkeypatch):
    """A window read with one ``readInto`` is all or nothing: the blocks a
    gap asks for again go out, then the ERROR."""
    h = harness()
    h.write("f.bin", bytes(range(256)) * 40)
    calls = 0
    real = LocalFile.readInto

    def failingReadInto(self: LocalFile, buffers: Any, size: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(5, "Input/output error")
        return real(self, buffers, size)

    monkeypatch.setattr(LocalFile, "readInto", failingReadInto)
    h.request("f.bin", options=(("blksize", "512"), ("windowsize", "4")))
    port = h.transferPort()
    port.take()  # OACK
    port.deliver(encodeAck(0), CLIENT)
    assert [decode(d).block for d, _ in port.take()] == [1, 2, 3, 4]
    port.deliver(encodeAck(2), CLIENT)  # blocks 3 and 4 lost: resent, then 5 and 6 read
    sent = [decode(d) for d, _ in port.take()]
    assert [p.block for p in sent[:2]] == [3, 4]
    assert isinstance(sent[2], Error) and len(sent) == 3
    assert h.recorder.ended[0].message == "aborted"


# -- QuietPort.writeDatagrams on a real socket ------------------------------


@pytest.fixture
def bigReceiver(receiver: socket.socket) -> socket.socket:
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    return receiver


def datagrams(sizes: list[int]) -> list[bytes]:
    return [
        struct.pack("!HH", 3, n & 0xFFFF) + random.Random(n).randbytes(size - 4)
        for n, size in enumerate(sizes)
    ]


@pytest.mark.parametrize(
    "sizes",
    [
        [1432] * 16,
        [1432] * 15 + [100],  # the final short block ends a run
        [1432] * 3 + [4],  # an empty final DATA
        [516] * 200,  # more than 64 segments
        [8196] * 10,  # more than 65,000 bytes
        [1432, 1432, 700, 1432, 1432],  # a short one inside: a new run after it
        [65468, 65468],  # too large for a run
        [100],
    ],
)
def test_quiet_port_write_datagrams_arrive_one_by_one(quietPort, bigReceiver, sizes):
    sent = datagrams(sizes)
    quietPort.writeDatagrams(sent, bigReceiver.getsockname())
    got = [bigReceiver.recv(65536) for _ in sent]
    assert got == sent
    if sys.platform == "linux":
        assert quietPort.gso  # the kernel took the segments: GSO was used


class RefusingSocket:
    """A socket whose ``sendmsg`` fails as a kernel without UDP GSO does."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real

    def sendmsg(self, *args: Any) -> int:
        raise OSError(errno.EIO, "Input/output error")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_quiet_port_without_gso_sends_one_by_one(quietPort, bigReceiver):
    quietPort.socket = RefusingSocket(quietPort.socket)
    quietPort.gso = True
    sent = datagrams([1432] * 20 + [9])
    quietPort.writeDatagrams(sent, bigReceiver.getsockname())
    assert [bigReceiver.recv(65536) for _ in sent] == sent
    assert not quietPort.gso
    quietPort.socket = quietPort.socket.real


# -- the EVENT line's SPEC 8 object is built only when it can be seen -------


@pytest.fixture
def endedRecord() -> TransferRecord:
    record = TransferRecord(
        op="read",
        filename='SEP0001"x.cnf.xml',
        mode="octet",
        clientHost="192.168.10.50",
        clientPort=40000,
        listener="0.0.0.0:69",
        start=1764670561.204,
        resolved="SEP0001.cnf.xml",
        bytes=3456,
        blksize=1428,
    )
    record.status, record.message, record.end = "ok", "transfer_complete", 1764670561.311
    return record


@pytest.fixture
def logSetup(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    def configure(logFormat: str) -> Path:
        logs.configure(str(tmp_path), "info", logFormat)
        return tmp_path / logs.LOG_FILE_NAME

    yield configure
    if logs._current is not None:
        logs._current.close()


EVENT_LINE = (
    'EVENT type=1 client=192.168.10.50:40000 file="SEP0001\\"x.cnf.xml" bytes=3456'
    " status=ok msg=transfer_complete"
)


def test_text_log_alone_gets_the_same_line_without_the_object(logSetup, endedRecord):
    path = logSetup("text")
    assert not logs.structuredFieldsWanted()
    LogEventObserver("host-a").transferEnded(endedRecord)
    [line] = path.read_text().splitlines()
    assert line.endswith("] [INFO] " + EVENT_LINE)


def test_json_log_gets_the_object(logSetup, endedRecord):
    path = logSetup("json")
    assert logs.structuredFieldsWanted()
    LogEventObserver("host-a").transferEnded(endedRecord)
    [line] = path.read_text().splitlines()
    written = json.loads(line)
    assert written["message"] == EVENT_LINE
    assert written["event"] == endedRecord.asEvent("host-a")


def test_an_observer_on_the_publisher_gets_the_object(logSetup, endedRecord):
    path = logSetup("text")
    seen: list[dict[str, Any]] = []
    logs.publisher.addObserver(seen.append)
    try:
        assert logs.structuredFieldsWanted()
        LogEventObserver("host-a").transferEnded(endedRecord)
    finally:
        logs.publisher.removeObserver(seen.append)
    assert not logs.structuredFieldsWanted()
    [logged] = seen
    assert logged["event"] == endedRecord.asEvent("host-a")
    assert path.read_text().splitlines()[0].endswith(EVENT_LINE)


def test_without_log_dir_the_global_publisher_gets_the_object(endedRecord):
    assert logs.structuredFieldsWanted()  # unconfigured: everything is forwarded
    with capturedLogs() as captured:
        LogEventObserver("host-a").transferEnded(endedRecord)
    [logged] = [e for e in captured if e.get("log_namespace") == "ctftp.events"]
    assert logged["event"] == endedRecord.asEvent("host-a")


# -- quoteName returns a plain name as it is ---------------------------------


def slowQuoteName(name: str) -> str:
    """quoteName without its shortcut for names with nothing to escape."""
    out = name.translate({ord('"'): '\\"', ord("\\"): "\\\\", 10: "\\n", 13: "\\r", 9: "\\t"})
    return "".join(
        c
        if c.isprintable()
        else f"\\x{ord(c) - 0xDC00:02x}"
        if 0xDC80 <= ord(c) <= 0xDCFF
        else f"\\x{ord(c):02x}"
        if ord(c) < 0x100
        else f"\\u{ord(c):04x}"
        for c in out
    )


@settings(max_examples=300)
@given(
    st.text()
    | st.binary().map(lambda b: b.decode("utf-8", "surrogateescape"))
    | st.sampled_from(["SEP000000000123.cnf.xml", 'a"b', "a\\b", "a\tb", "pxelinux.cfg/01-aa"])
)
def test_quote_name_is_the_escaping_it_was(name):
    assert quoteName(name) == slowQuoteName(name)
