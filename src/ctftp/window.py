"""The DATA packets a read transfer keeps until they are acknowledged.

A read has up to ``windowsize`` blocks in flight (1 in lock-step), and keeps
their packets: a gap the client reports, or the timer, sends them again.
Built one by one, each block cost two new objects and a copy (the bytes
read, then the header concatenated in front). Here each block has a fixed
slot instead, ``[4-byte DATA header | blksize bytes of payload]`` in a
``bytearray``; block ``n`` lives in slot ``(n - 1) % windowsize``, which a
window never holds twice. A local file's window of two blocks or more is
read straight into the payloads of a run of slots with one ``readv``
(:meth:`DataWindow.fill`); other sources, and lock-step, where a ``read``
costs less Python than a ``readv`` of one buffer, hand over bytes that are
copied into their slot (:meth:`DataWindow.store`). The packets go out as ``memoryview`` slices of
the slots, a window of them in one ``sendmsg`` with UDP GSO.

A slot is allocated the first time a block needs it, and a window is read
no further than the file's size says, so a small file asked for with a large
window holds only the slots of its own blocks.

The views handed out are overwritten when their slots take later blocks: a
transport must send them, or copy them, before the transfer reads on (UDP
ports send at once; ``ctftp.testing``'s in-memory ports copy).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Sequence

__all__ = ["DataWindow", "ReadInto"]

_DATA_HEADER = struct.Struct("!HH")
_OP_DATA = 3
_NO_LIMIT = sys.maxsize

#: ``readInto(buffers, size)`` fills the buffers, ``size`` bytes in all, in
#: order and returns how many bytes it read: fewer only at the end of the
#: file (``LocalFile.readInto``).
ReadInto = Callable[[Sequence[memoryview], int], int]


class DataWindow:
    """The packets of blocks ``acked + 1 .. sent`` of one read transfer.

    Block numbers are absolute (the header carries them modulo 65536).
    ``last`` is the final block once a read has found the end of the file.
    """

    def __init__(self, blksize: int, windowsize: int, size: int | None = None) -> None:
        self.blksize = blksize
        self._slots = windowsize
        # The block after the one that should end the file, from its size
        # when known: a window is read up to it, so that a small file asked
        # for with a large window allocates its own blocks' slots only. A
        # file grown since is read on, a window at a time, once it is passed.
        self._readLimit = _NO_LIMIT if size is None else size // blksize + 2
        # Slot i's whole packet and its payload part, allocated on first use.
        # Once every slot exists the lists hold them twice over, so that a
        # run of slots wrapping around the end is one slice.
        self._packets: list[memoryview] = []
        self._payloads: list[memoryview] = []
        self._complete = False
        self.last: int | None = None
        self._lastLength = 0  # the final packet's length, header included

    def packets(self, first: int, stop: int) -> list[memoryview]:
        """The packets of blocks ``first .. stop - 1``, each built already."""
        start = (first - 1) % self._slots
        packets = self._packets[start : start + stop - first]
        if self.last is not None and first <= self.last < stop:
            index = self.last - first
            packets[index] = packets[index][: self._lastLength]
        return packets

    def store(self, block: int, payload: bytes) -> memoryview:
        """Build the packet of ``block`` from ``payload`` and return it; a
        payload shorter than a block makes it the last."""
        if not self._complete:
            self._allocate(block)
        slot = (block - 1) % self._slots
        length = len(payload)
        self._payloads[slot][:length] = payload
        packet = self._packets[slot]
        _DATA_HEADER.pack_into(packet, 0, _OP_DATA, block & 0xFFFF)
        if length < self.blksize:
            self._end(block, length)
            return packet[: self._lastLength]
        return packet

    def fill(self, readInto: ReadInto, first: int, count: int) -> list[memoryview]:
        """Read blocks ``first .. first + count - 1`` with one ``readInto``
        and return their packets: ``count`` of them; fewer when the file
        ended (``last`` is then set), or when the read stopped at the block
        that should end the file, by its size, and the file goes on."""
        if first + count > self._readLimit:
            if first < self._readLimit:
                count = self._readLimit - first
            else:
                self._readLimit = _NO_LIMIT
        if not self._complete:
            self._allocate(first + count - 1)
        start = (first - 1) % self._slots
        end = start + count
        packets = self._packets[start:end]
        wanted = count * self.blksize
        got = readInto(self._payloads[start:end], wanted)
        if got < wanted:
            full, rest = divmod(got, self.blksize)
            self._end(first + full, rest)
            del packets[full + 1 :]
            packets[full] = packets[full][: self._lastLength]
        pack = _DATA_HEADER.pack_into
        block = first
        for packet in packets:
            pack(packet, 0, _OP_DATA, block & 0xFFFF)
            block += 1
        return packets

    def payloadBytes(self, blocks: int) -> int:
        """How many bytes of the file blocks ``1 .. blocks`` carry."""
        if self.last is not None and blocks >= self.last:
            return (self.last - 1) * self.blksize + self._lastLength - 4
        return blocks * self.blksize

    def release(self) -> None:
        """Let the slots go (the transfer ended)."""
        self._packets = []
        self._payloads = []

    def _end(self, block: int, length: int) -> None:
        self.last = block
        self._lastLength = length + 4

    def _allocate(self, block: int) -> None:
        """Make sure the slots up to ``block``'s exist. Blocks are built in
        order, so slots are first used in order, and a run of slots wraps
        around the end only once every slot exists."""
        packets, payloads = self._packets, self._payloads
        needed = min(block, self._slots)
        while len(packets) < needed:
            packet = memoryview(bytearray(4 + self.blksize))
            packets.append(packet)
            payloads.append(packet[4:])
        if needed == self._slots:
            self._complete = True
            packets += packets
            payloads += payloads
