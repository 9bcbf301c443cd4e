"""Hypothesis strategies for TFTP packets, reusable by any test module.

Import with ``from strategies import ...`` (pytest puts ``tests/unit`` on
``sys.path``), or load this file by path from another test folder.

Names, modes and option strings are generated as *wire bytes* first and then
decoded the way :mod:`ctftp.packets` decodes them (UTF-8 with
``surrogateescape``), so every generated ``str`` survives an encode/decode
round trip: the codec maps bytes to text one-to-one, but not every Python
``str`` (e.g. a pair of escaped surrogates that happens to spell valid UTF-8)
comes back as itself.
"""

from __future__ import annotations

from hypothesis import strategies as st

from ctftp.packets import (
    OP_ACK,
    OP_DATA,
    OP_ERROR,
    OP_OACK,
    OP_RRQ,
    OP_WRQ,
    encodeAck,
    encodeData,
    encodeError,
    encodeOptionAck,
    encodeRequest,
)

__all__ = [
    "wireText",
    "filenames",
    "modeSpellings",
    "optionNames",
    "optionValues",
    "numericStrings",
    "optionLists",
    "uniqueOptionLists",
    "blockNumbers",
    "payloads",
    "errorMessages",
    "requestDatagrams",
    "dataDatagrams",
    "ackDatagrams",
    "errorDatagrams",
    "oackDatagrams",
    "validDatagrams",
    "mutatedDatagrams",
    "anyDatagrams",
    "KNOWN_OPTIONS",
    "MODE_NAMES",
]

#: Option names ctftp understands, plus two it must ignore.
KNOWN_OPTIONS = (
    "blksize",
    "blksize2",
    "tsize",
    "timeout",
    "utimeout",
    "windowsize",
    "multicast",
    "rollover",
)

#: The transfer modes a request may name (case-insensitively).
MODE_NAMES = ("octet", "netascii", "binary")


def _decoded(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def wireText(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    """Any NUL-free byte string, as the codec decodes it (UTF-8 + surrogateescape)."""
    return st.binary(min_size=min_size, max_size=max_size).map(
        lambda b: _decoded(b.replace(b"\0", b"\x01"))
    )


#: A non-empty filename: any bytes but NUL, including bytes that are not UTF-8.
filenames = wireText(min_size=1, max_size=60)


@st.composite
def modeSpellings(draw: st.DrawFn, names: tuple[str, ...] = MODE_NAMES) -> str:
    """An accepted mode name in random letter case (``OcTeT``)."""
    name = draw(st.sampled_from(names))
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if f else c for c, f in zip(name, flips, strict=True))


@st.composite
def _caseShuffled(draw: st.DrawFn, name: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if f else c for c, f in zip(name, flips, strict=True))


#: An option name: a known one in any letter case, or arbitrary non-empty text.
optionNames = st.one_of(
    st.sampled_from(KNOWN_OPTIONS).flatmap(_caseShuffled),
    wireText(min_size=1, max_size=12),
)

#: A decimal number as a client would write it, sometimes with padding zeros
#: or surrounding spaces; never longer than 40 digits.
numericStrings = st.one_of(
    st.integers(min_value=0, max_value=300_000_000).map(str),
    st.integers(min_value=0, max_value=10**40).map(str),
    st.integers(min_value=0, max_value=99999).map(lambda n: f"00{n}"),
    st.integers(min_value=0, max_value=99999).map(lambda n: f" {n} "),
)

#: An option value: usually a number, sometimes garbage (``-1``, ``1e3``, text).
optionValues = st.one_of(
    numericStrings,
    st.sampled_from(["", "-1", "+5", "1e3", "0x10", "12a", "١٢٣", " ", "1.5"]),
    wireText(max_size=12),
)


def optionLists(max_size: int = 8) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Option (name, value) pairs as a client might send them, repeats allowed."""
    return st.lists(st.tuples(optionNames, optionValues), max_size=max_size)


def uniqueOptionLists(max_size: int = 8) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Option pairs whose names differ case-insensitively: what ``decodeRequest``
    hands on unchanged (it keeps the first of repeated names)."""
    return st.lists(
        st.tuples(optionNames, optionValues),
        max_size=max_size,
        unique_by=lambda pair: pair[0].lower(),
    )


blockNumbers = st.integers(min_value=0, max_value=0xFFFF)
payloads = st.binary(max_size=1500)
#: Error texts without NUL (the encoder drops NULs) and valid Unicode.
errorMessages = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
    max_size=60,
)


@st.composite
def requestDatagrams(draw: st.DrawFn) -> bytes:
    opcode = draw(st.sampled_from([OP_RRQ, OP_WRQ]))
    return encodeRequest(opcode, draw(filenames), draw(modeSpellings()), draw(optionLists()))


dataDatagrams = st.builds(encodeData, blockNumbers, payloads)
ackDatagrams = st.builds(encodeAck, blockNumbers)
errorDatagrams = st.builds(encodeError, st.integers(0, 0xFFFF), errorMessages)
oackDatagrams = st.builds(encodeOptionAck, optionLists())

#: Well-formed packets of every kind.
validDatagrams = st.one_of(
    requestDatagrams(), dataDatagrams, ackDatagrams, errorDatagrams, oackDatagrams
)


@st.composite
def mutatedDatagrams(draw: st.DrawFn) -> bytes:
    """A well-formed packet with a few bytes changed, cut off, or appended."""
    data = bytearray(draw(validDatagrams))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["flip", "cut", "append", "nul"]))
        if action == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[draw(st.integers(0, len(data))) :]
        elif action == "append":
            data += draw(st.binary(max_size=8))
        elif action == "nul" and data:
            data.insert(draw(st.integers(0, len(data))), 0)
    return bytes(data)


#: Anything a socket could deliver: random bytes, near-valid and valid packets,
#: and random bytes behind a real opcode.
anyDatagrams = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda op, rest: op.to_bytes(2, "big") + rest,
        st.sampled_from([0, OP_RRQ, OP_WRQ, OP_DATA, OP_ACK, OP_ERROR, OP_OACK, 7, 0xFFFF]),
        st.binary(max_size=100),
    ),
    mutatedDatagrams(),
)
