"""Tests for ctftp.netascii: tftp-hpa's conversion rules, streaming and sizes."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctftp.netascii import NetasciiDecoder, NetasciiReader, encode, encodedSize

# Bytes biased towards the interesting ones, so CR/LF/NUL runs actually occur.
interesting = st.binary() | st.lists(st.sampled_from(b"\r\n\0ab")).map(bytes)


def decodeChunks(data: bytes, cuts: list[int]) -> bytes:
    """Decode ``data`` split at the given positions, then flush."""
    decoder = NetasciiDecoder()
    out = []
    previous = 0
    for cut in sorted({min(c, len(data)) for c in cuts}) + [len(data)]:
        out.append(decoder.decode(data[previous:cut]))
        previous = cut
    out.append(decoder.flush())
    return b"".join(out)


def referenceDecode(data: bytes) -> bytes:
    """tftp-hpa's byte-by-byte receive loop, as the oracle."""
    out = bytearray()
    previous = -1
    for byte in data:
        if previous == 13 and byte == 10:
            out[-1] = 10
        elif not (previous == 13 and byte == 0):
            out.append(byte)
        previous = byte
    return bytes(out)


@pytest.mark.parametrize(
    ("raw", "wire"),
    [
        (b"", b""),
        (b"abc", b"abc"),
        (b"a\nb", b"a\r\nb"),
        (b"a\rb", b"a\r\0b"),
        (b"a\r\nb", b"a\r\0\r\nb"),
        (b"\n\n", b"\r\n\r\n"),
        (b"\r", b"\r\0"),
        (b"\0", b"\0"),
    ],
)
def test_encode(raw: bytes, wire: bytes) -> None:
    assert encode(raw) == wire
    assert encodedSize(raw) == len(wire)


@pytest.mark.parametrize(
    ("wire", "raw"),
    [
        (b"", b""),
        (b"a\r\nb", b"a\nb"),
        (b"a\r\0b", b"a\rb"),
        (b"a\rb", b"a\rb"),  # CR followed by anything else is kept with it
        (b"\r\r\n", b"\r\n"),
        (b"\r\0\n", b"\r\n"),
        (b"\r\0\0", b"\r\0"),
        (b"abc\r", b"abc\r"),  # CR at the very end of the stream is kept
        (b"\r", b"\r"),
    ],
)
def test_decode(wire: bytes, raw: bytes) -> None:
    decoder = NetasciiDecoder()
    assert decoder.decode(wire) + decoder.flush() == raw


def test_crAtChunkEnd() -> None:
    """A CR ending one chunk is resolved by the first byte of the next."""
    decoder = NetasciiDecoder()
    assert decoder.decode(b"line\r") == b"line"
    assert decoder.decode(b"\nnext\r") == b"\nnext"
    assert decoder.decode(b"\0x\r") == b"\rx"
    assert decoder.decode(b"") == b""
    assert decoder.decode(b"y") == b"\ry"
    assert decoder.flush() == b""


def test_crAtStreamEndAfterEmptyChunks() -> None:
    decoder = NetasciiDecoder()
    assert decoder.decode(b"\r") == b""
    assert decoder.decode(b"") == b""
    assert decoder.flush() == b"\r"
    assert decoder.flush() == b""


def test_flushResetsState() -> None:
    """After flush the decoder starts a fresh stream."""
    decoder = NetasciiDecoder()
    decoder.decode(b"\r")
    decoder.flush()
    assert decoder.decode(b"\n") == b"\n"


@given(interesting, st.lists(st.integers(min_value=0, max_value=300)))
def test_roundTrip(raw: bytes, cuts: list[int]) -> None:
    assert decodeChunks(encode(raw), cuts) == raw


@given(interesting, st.lists(st.integers(min_value=0, max_value=300)))
def test_decodeMatchesReference(wire: bytes, cuts: list[int]) -> None:
    """Arbitrary (not only well-formed) netascii decodes like tftp-hpa's loop."""
    assert decodeChunks(wire, cuts) == referenceDecode(wire)


@given(interesting)
def test_encodedSize(raw: bytes) -> None:
    assert encodedSize(raw) == len(encode(raw))


@given(interesting, st.lists(st.integers(min_value=1, max_value=70), min_size=1))
def test_readerExactSizes(raw: bytes, sizes: list[int]) -> None:
    """Every call yields exactly ``size`` bytes until the end, then the rest, then b""."""
    reader = NetasciiReader(io.BytesIO(raw).read)
    expected = encode(raw)
    out = []
    position = 0
    index = 0
    while True:
        size = sizes[index % len(sizes)]
        index += 1
        block = reader.read(size)
        assert block == expected[position : position + size]
        out.append(block)
        position += len(block)
        if len(block) < size:
            break
    assert b"".join(out) == expected
    assert reader.read(sizes[0]) == b""


@given(interesting, st.integers(min_value=1, max_value=20))
def test_readerShortSourceReads(raw: bytes, size: int) -> None:
    """A source that returns fewer bytes than asked is read again, not taken as the end."""
    source = io.BytesIO(raw)
    reader = NetasciiReader(lambda n: source.read(min(n, 1)))
    blocks = iter(lambda: reader.read(size), b"")
    result = list(blocks)
    assert b"".join(result) == encode(raw)
    assert all(len(block) == size for block in result[:-1])


def test_readerEmpty() -> None:
    reader = NetasciiReader(io.BytesIO(b"").read)
    assert reader.read(512) == b""
    assert reader.read(512) == b""


def test_readerExactMultiple() -> None:
    """An encoded stream that fills its last block exactly is followed by b""."""
    reader = NetasciiReader(io.BytesIO(b"ab\n").read)  # encodes to 4 bytes
    assert reader.read(2) == b"ab"
    assert reader.read(2) == b"\r\n"
    assert reader.read(2) == b""


def test_readerSplitsExpansion() -> None:
    """An expansion crossing a block boundary is split across blocks."""
    reader = NetasciiReader(io.BytesIO(b"\n\n\n").read)
    assert reader.read(1) == b"\r"
    assert reader.read(2) == b"\n\r"
    assert reader.read(4) == b"\n\r\n"
