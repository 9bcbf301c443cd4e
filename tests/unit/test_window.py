"""ctftp.window.DataWindow: the packets of the blocks in flight, in slots."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pytest

from ctftp.packets import Data, decode
from ctftp.window import DataWindow


def readerOf(data: bytes):
    """A ``readInto`` over ``data``, as ``LocalFile.readInto`` reads a file."""
    stream = io.BytesIO(data)

    def readInto(buffers: Sequence[memoryview], size: int) -> int:
        got = 0
        for buffer in buffers:
            n = stream.readinto(buffer)
            got += n
            if n < len(buffer):
                break
        return got

    return readInto


def blocks(packets: list[memoryview]) -> list[tuple[int, bytes]]:
    out = []
    for packet in packets:
        data = decode(bytes(packet))
        assert isinstance(data, Data)
        out.append((data.block, data.payload))
    return out


def test_fill_builds_each_packet_and_finds_the_end():
    data = bytes(range(256)) * 10  # 2,560 bytes: 5 blocks of 512, then an empty one
    window = DataWindow(512, 4)
    readInto = readerOf(data)
    assert blocks(window.fill(readInto, 1, 4)) == [
        (n, data[(n - 1) * 512 : n * 512]) for n in (1, 2, 3, 4)
    ]
    assert window.last is None
    assert blocks(window.fill(readInto, 5, 4)) == [(5, data[2048:]), (6, b"")]
    assert window.last == 6
    assert window.payloadBytes(4) == 2048
    assert window.payloadBytes(6) == len(data)


def test_a_run_of_slots_wraps_around_and_resends_what_it_holds():
    data = bytes(range(200)) * 3  # 600 bytes in blocks of 100: 1..6 full, 7 empty
    window = DataWindow(100, 4)
    readInto = readerOf(data)
    window.fill(readInto, 1, 4)
    # blocks 1 and 2 acknowledged: 5 and 6 take their slots, 3 and 4 stay
    assert [b for b, _ in blocks(window.fill(readInto, 5, 2))] == [5, 6]
    again = blocks(window.packets(3, 7))
    assert again == [(n, data[(n - 1) * 100 : n * 100]) for n in (3, 4, 5, 6)]
    assert blocks(window.fill(readInto, 7, 2)) == [(7, b"")]
    assert blocks(window.packets(6, 8)) == [(6, data[500:]), (7, b"")]


def test_block_numbers_roll_over_on_the_wire():
    window = DataWindow(8, 4)
    window.fill(readerOf(b"x" * 8 * 70000), 65535, 3)
    assert [b for b, _ in blocks(window.packets(65535, 65538))] == [65535, 0, 1]


def test_stored_payloads_make_the_same_packets():
    window = DataWindow(512, 2)
    assert blocks([window.store(1, b"a" * 512)]) == [(1, b"a" * 512)]
    assert blocks([window.store(2, b"b" * 512)]) == [(2, b"b" * 512)]
    assert blocks([window.store(3, b"c" * 10)]) == [(3, b"c" * 10)]  # slot of block 1
    assert window.last == 3
    assert blocks(window.packets(2, 4)) == [(2, b"b" * 512), (3, b"c" * 10)]
    assert window.payloadBytes(3) == 1034


@pytest.mark.parametrize(("size", "slots"), [(0, 1), (1000, 2), (4096, 9), (10**6, 64)])
def test_a_small_file_holds_only_its_own_blocks(size, slots):
    window = DataWindow(512, 64, size=size)
    readInto = readerOf(bytes(size))
    block = 1
    while window.last is None:
        block += len(window.fill(readInto, block, 64))
    assert len(set(map(id, window._packets))) == slots


def test_a_file_longer_than_its_size_said_is_read_on():
    data = bytes(range(100)) * 10  # 1,000 bytes, where the size said 250
    window = DataWindow(100, 8, size=250)
    readInto = readerOf(data)
    assert [b for b, _ in blocks(window.fill(readInto, 1, 8))] == [1, 2, 3]
    assert window.last is None
    assert [b for b, _ in blocks(window.fill(readInto, 4, 5))] == [4, 5, 6, 7, 8]
    got = blocks(window.packets(1, 9))
    assert b"".join(payload for _, payload in got) == data[:800]
    assert blocks(window.fill(readInto, 9, 8)) == [(9, data[800:900]), (10, data[900:]), (11, b"")]


def test_release_lets_the_slots_go():
    window = DataWindow(512, 4)
    window.fill(readerOf(bytes(3000)), 1, 4)
    window.release()
    assert window._packets == [] and window._payloads == []
