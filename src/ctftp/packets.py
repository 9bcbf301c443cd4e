"""TFTP packet codec (RFC 1350, RFC 2347 OACK).

Pure functions over bytes: no sockets, no clock. Every decoder either returns a
packet or raises :class:`MalformedPacket`, whose message is what a peer is told
in an ERROR 4; the listener and the transfers decide whether to answer or stay
silent.

Filenames are bytes on the wire and bytes on disk. They are decoded with
UTF-8 and ``surrogateescape`` so that any byte sequence maps one-to-one to a
``str`` that ``os`` functions turn back into the same bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

__all__ = [
    "OP_RRQ",
    "OP_WRQ",
    "OP_DATA",
    "OP_ACK",
    "OP_ERROR",
    "OP_OACK",
    "ErrorCode",
    "MalformedPacket",
    "Request",
    "Data",
    "Ack",
    "Error",
    "OptionAck",
    "decode",
    "decodeRequest",
    "encodeData",
    "encodeAck",
    "encodeError",
    "encodeOptionAck",
    "encodeRequest",
    "MODES",
    "UnsupportedMode",
    "optionKey",
    "unsupportedModeMessage",
]

OP_RRQ = 1
OP_WRQ = 2
OP_DATA = 3
OP_ACK = 4
OP_ERROR = 5
OP_OACK = 6


class ErrorCode(IntEnum):
    """RFC 1350 / RFC 2347 error codes."""

    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8


#: Transfer modes accepted, by lower-cased wire name. ``binary`` is an alias of
#: ``octet`` as r-tftpd accepts it; ``mail`` is refused (RFC 1350 deprecates it).
MODES = {"octet": "octet", "binary": "octet", "netascii": "netascii"}


class MalformedPacket(ValueError):
    """A datagram that is not a valid TFTP packet; the text is safe to send."""


class UnsupportedMode(MalformedPacket):
    """A well-formed request in a mode ctftp does not serve (``mail``, or
    a name it does not know); ``request`` is the request as parsed, its
    ``mode`` the lower-cased name, so that it can be logged and counted
    like any refused request."""

    def __init__(self, request: Request) -> None:
        super().__init__(unsupportedModeMessage(request.rawMode))
        self.request = request


#: Characters of an unknown mode kept (in the request, its log line and its
#: ERROR 4). The mode is the client's text: echoed whole, a 16 KB mode of
#: control bytes made a 64 KB ERROR (a reflection from a forged source) and a
#: 30 KB one an ERROR too large to send.
MODE_SHOWN = 32


def unsupportedModeMessage(rawMode: str) -> str:
    """The ERROR 4 text for a mode ctftp does not serve (:func:`decodeRequest`
    has cut the mode to :data:`MODE_SHOWN` characters)."""
    return f"Unsupported transfer mode {rawMode!r}"


@dataclass(frozen=True, slots=True)
class Request:
    """An RRQ or WRQ.

    ``options`` keeps the client's spelling and order: the OACK must echo the
    client's names. Repeated option names keep the first occurrence.
    """

    opcode: int
    filename: str
    mode: str  # normalised: "octet" or "netascii"
    rawMode: str
    options: tuple[tuple[str, str], ...] = field(default=())

    @property
    def isRead(self) -> bool:
        return self.opcode == OP_RRQ


@dataclass(frozen=True, slots=True)
class Data:
    block: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    block: int


@dataclass(frozen=True, slots=True)
class Error:
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class OptionAck:
    options: tuple[tuple[str, str], ...]


Packet = Request | Data | Ack | Error | OptionAck

_HEADER = struct.Struct("!HH")
_OPCODE = struct.Struct("!H")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def optionKey(name: str) -> str:
    """An option name as compared: ASCII letters in lower case, as C's
    ``strcasecmp`` does. Unicode lower-casing would make ``bl\u212asize``
    (a Kelvin sign) ``blksize``."""
    return name.lower() if name.isascii() else name


def decodeRequest(datagram: bytes) -> Request:
    """Decode an RRQ or WRQ.

    Tolerant where real clients are sloppy, strict where it matters: the
    filename and mode must be NUL-terminated; an option list may be padded with
    empty strings (some PXE ROMs pad) and a trailing option name without a
    value is ignored.
    """
    if len(datagram) < 2:
        raise MalformedPacket("Packet too short")
    opcode = _OPCODE.unpack_from(datagram)[0]
    if opcode not in (OP_RRQ, OP_WRQ):
        raise MalformedPacket("Not a request")
    fields = datagram[2:].split(b"\0")
    # A well-formed request ends with NUL, so the last field is b"".
    if len(fields) < 3:
        raise MalformedPacket("Request without NUL-terminated filename and mode")
    rawName, rawMode = fields[0], fields[1]
    if not rawName:
        raise MalformedPacket("Empty filename")
    modeText = rawMode.decode("ascii", "replace")
    mode = MODES.get(modeText.lower())
    # fields[2:-1] are complete, NUL-terminated option strings; fields[-1] is
    # whatever followed the last NUL (b"" when well formed) and is ignored.
    optionFields = fields[2:-1]
    options: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i in range(0, len(optionFields) - 1, 2):
        name, value = optionFields[i], optionFields[i + 1]
        if not name:
            continue
        nameText = _text(name)
        key = optionKey(nameText)
        if key in seen:
            continue
        seen.add(key)
        options.append((nameText, _text(value)))
    if mode is None:
        if len(modeText) > MODE_SHOWN:
            modeText = modeText[:MODE_SHOWN] + "..."
        raise UnsupportedMode(
            Request(opcode, _text(rawName), modeText.lower(), modeText, tuple(options))
        )
    return Request(opcode, _text(rawName), mode, modeText, tuple(options))


def decode(datagram: bytes) -> Packet:
    """Decode any TFTP packet."""
    if len(datagram) < 2:
        raise MalformedPacket("Packet too short")
    opcode = _OPCODE.unpack_from(datagram)[0]
    if opcode == OP_ACK:
        if len(datagram) < 4:
            raise MalformedPacket("ACK too short")
        return Ack(_HEADER.unpack_from(datagram)[1])
    if opcode == OP_DATA:
        if len(datagram) < 4:
            raise MalformedPacket("DATA too short")
        return Data(_HEADER.unpack_from(datagram)[1], datagram[4:])
    if opcode == OP_ERROR:
        if len(datagram) < 4:
            raise MalformedPacket("ERROR too short")
        code = _HEADER.unpack_from(datagram)[1]
        message = datagram[4:].split(b"\0", 1)[0]
        return Error(code, message.decode("utf-8", "replace"))
    if opcode in (OP_RRQ, OP_WRQ):
        return decodeRequest(datagram)
    if opcode == OP_OACK:
        fields = datagram[2:].split(b"\0")[:-1]
        pairs = tuple(
            (_text(fields[i]), _text(fields[i + 1])) for i in range(0, len(fields) - 1, 2)
        )
        return OptionAck(pairs)
    raise MalformedPacket(f"Unknown opcode {opcode}")


def encodeData(block: int, payload: bytes) -> bytes:
    return _HEADER.pack(OP_DATA, block & 0xFFFF) + payload


def encodeAck(block: int) -> bytes:
    return _HEADER.pack(OP_ACK, block & 0xFFFF)


def encodeError(code: int, message: str) -> bytes:
    return (
        _HEADER.pack(OP_ERROR, code)
        + message.encode("utf-8", "surrogateescape").replace(b"\0", b"")
        + b"\0"
    )


def _encodeOptions(options: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> bytes:
    return b"".join(
        name.encode("utf-8", "surrogateescape")
        + b"\0"
        + value.encode("utf-8", "surrogateescape")
        + b"\0"
        for name, value in options
    )


def encodeOptionAck(options: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> bytes:
    return _OPCODE.pack(OP_OACK) + _encodeOptions(options)


def encodeRequest(
    opcode: int,
    filename: str,
    mode: str = "octet",
    options: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
) -> bytes:
    """Build an RRQ/WRQ; used by the test client and benchmarks."""
    return (
        _OPCODE.pack(opcode)
        + filename.encode("utf-8", "surrogateescape")
        + b"\0"
        + mode.encode("ascii")
        + b"\0"
        + _encodeOptions(options)
    )
