"""
Netascii (RFC 764, RFC 1350) conversion, the way tftp-hpa does it.

Sending: every LF becomes CR LF and every CR becomes CR NUL, byte by byte and
without state, so a file that already holds CR LF goes out as CR NUL CR LF and
comes back unchanged.  Receiving: CR LF becomes LF, CR NUL becomes CR, a CR
followed by any other byte is kept together with that byte, and a CR that ends
the stream is kept.

Everything here works on whole chunks with C-level ``bytes`` methods instead
of per-byte Python loops, because netascii runs on the data path of every
netascii transfer.  There is no I/O in this module: the reader pulls raw bytes
from a callable it is given.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["NetasciiDecoder", "NetasciiReader", "encode", "encodedSize"]

_CR = b"\r"


def encode(data: bytes) -> bytes:
    """
    Convert raw bytes to netascii.

    CR is expanded first so that the CRs introduced by the LF expansion are not
    expanded again.  The conversion is stateless per byte, so chunks of a file
    can be encoded independently and concatenated.
    """
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


def encodedSize(data: bytes) -> int:
    """
    Return ``len(encode(data))`` without building the encoded copy.

    Used for the ``tsize`` option of a netascii read, which must report the
    converted size: each CR and each LF grows by exactly one byte.
    """
    return len(data) + data.count(b"\r") + data.count(b"\n")


class NetasciiReader:
    """
    Turns a sequential ``read(n) -> bytes`` function of raw file bytes into
    one of encoded bytes.

    A transfer needs DATA packets of exactly ``blksize`` bytes except the last
    one, but encoding grows the data by an unpredictable amount, so the
    encoded overflow of one block is kept for the next.  Since netascii
    encoding never shrinks data, asking the source for as many raw bytes as
    are still missing always suffices unless the source is at its end.
    """

    __slots__ = ("_buffer", "_eof", "_read")

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._buffer = b""
        self._eof = False

    def read(self, size: int) -> bytes:
        """
        Return exactly ``size`` encoded bytes; fewer only at the end of the
        stream, and ``b""`` once it is exhausted.

        A source returning fewer bytes than asked is read again; only ``b""``
        from the source counts as its end.
        """
        buffer = self._buffer
        if len(buffer) < size and not self._eof:
            parts = [buffer]
            have = len(buffer)
            while have < size:
                raw = self._read(size - have)
                if not raw:
                    self._eof = True
                    break
                encoded = encode(raw)
                parts.append(encoded)
                have += len(encoded)
            buffer = b"".join(parts)
        if len(buffer) <= size:
            self._buffer = b""
            return buffer
        self._buffer = buffer[size:]
        return buffer[:size]


class NetasciiDecoder:
    """
    Stateful netascii to raw conversion for a received stream.

    A CR as the last byte of one chunk cannot be resolved until the next
    chunk shows whether LF, NUL or something else follows it, so it is held
    back; ``flush`` releases it at the end of the stream.
    """

    __slots__ = ("_pendingCR",)

    def __init__(self) -> None:
        self._pendingCR = False

    def decode(self, chunk: bytes) -> bytes:
        """
        Decode one chunk of the netascii stream, holding back a trailing CR.

        CR LF is replaced before CR NUL: removing the CR of a CR LF leaves an
        LF behind, which can never form a new CR NUL pair, so the two ordered
        replacements give the same result as tftp-hpa's byte-by-byte loop.
        """
        if self._pendingCR:
            chunk = _CR + chunk
        if chunk.endswith(_CR):
            self._pendingCR = True
            chunk = chunk[:-1]
        else:
            self._pendingCR = False
        if _CR not in chunk:
            return chunk
        return chunk.replace(b"\r\n", b"\n").replace(b"\r\0", b"\r")

    def flush(self) -> bytes:
        """Return what is still held back at the end of the stream: a lone CR is kept."""
        if self._pendingCR:
            self._pendingCR = False
            return _CR
        return b""
