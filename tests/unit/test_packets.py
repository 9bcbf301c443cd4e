"""Tests for ctftp.packets: the TFTP codec (SPEC section 3).

Every encoder is checked against hand-written wire bytes and round-tripped
through the decoder; every malformed shape SPEC section 3 names raises
MalformedPacket; and Hypothesis checks that no datagram whatsoever makes a
decoder raise anything else.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import (
    anyDatagrams,
    blockNumbers,
    errorMessages,
    filenames,
    modeSpellings,
    optionLists,
    payloads,
    uniqueOptionLists,
    validDatagrams,
    wireText,
)

from ctftp.packets import (
    MODES,
    OP_ACK,
    OP_DATA,
    OP_ERROR,
    OP_OACK,
    OP_RRQ,
    OP_WRQ,
    Ack,
    Data,
    Error,
    ErrorCode,
    MalformedPacket,
    OptionAck,
    Request,
    decode,
    decodeRequest,
    encodeAck,
    encodeData,
    encodeError,
    encodeOptionAck,
    encodeRequest,
)

# -- encoders against literal wire bytes --------------------------------------


def test_opcodes_and_error_codes_are_rfc_values():
    assert (OP_RRQ, OP_WRQ, OP_DATA, OP_ACK, OP_ERROR, OP_OACK) == (1, 2, 3, 4, 5, 6)
    assert [int(c) for c in ErrorCode] == list(range(9))
    assert ErrorCode.OPTION_REFUSED == 8 and ErrorCode.UNKNOWN_TID == 5


def test_encode_request_wire_bytes():
    assert encodeRequest(OP_RRQ, "pxelinux.0") == b"\x00\x01pxelinux.0\x00octet\x00"
    assert (
        encodeRequest(OP_WRQ, "a/b", "netascii", [("blksize", "1428"), ("tsize", "0")])
        == b"\x00\x02a/b\x00netascii\x00blksize\x001428\x00tsize\x000\x00"
    )


def test_encode_data_wire_bytes_and_block_wraps():
    assert encodeData(1, b"abc") == b"\x00\x03\x00\x01abc"
    assert encodeData(0xFFFF, b"") == b"\x00\x03\xff\xff"
    # Absolute block numbers go on the wire modulo 65536: 65536 is block 0.
    assert encodeData(0x10000, b"x") == b"\x00\x03\x00\x00x"
    assert encodeData(0x10005, b"") == b"\x00\x03\x00\x05"


def test_encode_ack_wire_bytes_and_block_wraps():
    assert encodeAck(0) == b"\x00\x04\x00\x00"
    assert encodeAck(258) == b"\x00\x04\x01\x02"
    assert encodeAck(0x10001) == b"\x00\x04\x00\x01"


def test_encode_error_wire_bytes():
    assert encodeError(1, "File not found") == b"\x00\x05\x00\x01File not found\x00"
    assert encodeError(ErrorCode.OPTION_REFUSED, "") == b"\x00\x05\x00\x08\x00"
    # A NUL inside the message would end it early on the wire: it is dropped.
    assert encodeError(0, "a\0b") == b"\x00\x05\x00\x00ab\x00"
    assert encodeError(0, "é") == b"\x00\x05\x00\x00\xc3\xa9\x00"


def test_encode_option_ack_wire_bytes():
    assert encodeOptionAck([]) == b"\x00\x06"
    assert (
        encodeOptionAck((("BlkSize", "1024"), ("tsize", "3000")))
        == b"\x00\x06BlkSize\x001024\x00tsize\x003000\x00"
    )


# -- round trips ---------------------------------------------------------------


@given(blockNumbers, payloads)
def test_data_round_trip(block, payload):
    assert decode(encodeData(block, payload)) == Data(block, payload)


@given(st.integers(min_value=0, max_value=2**32))
def test_data_and_ack_block_numbers_round_trip_modulo_65536(block):
    assert decode(encodeData(block, b"p")) == Data(block % 65536, b"p")
    assert decode(encodeAck(block)) == Ack(block % 65536)


@given(blockNumbers)
def test_ack_round_trip(block):
    assert decode(encodeAck(block)) == Ack(block)


@given(st.integers(min_value=0, max_value=0xFFFF), errorMessages)
def test_error_round_trip(code, message):
    assert decode(encodeError(code, message)) == Error(code, message)


@given(optionLists())
def test_option_ack_round_trip(options):
    assert decode(encodeOptionAck(options)) == OptionAck(tuple(options))


@given(
    st.sampled_from([OP_RRQ, OP_WRQ]),
    filenames,
    modeSpellings(),
    uniqueOptionLists().map(lambda opts: [(n, v) for n, v in opts if n]),
)
def test_request_round_trip(opcode, filename, mode, options):
    datagram = encodeRequest(opcode, filename, mode, options)
    expected = Request(opcode, filename, MODES[mode.lower()], mode, tuple(options))
    assert decodeRequest(datagram) == expected
    assert decode(datagram) == expected
    assert expected.isRead == (opcode == OP_RRQ)
    # decode -> encode gives the same bytes back.
    request = decodeRequest(datagram)
    assert (
        encodeRequest(request.opcode, request.filename, request.rawMode, request.options)
        == datagram
    )


@given(validDatagrams)
def test_every_well_formed_packet_decodes(datagram):
    packet = decode(datagram)
    assert isinstance(packet, Request | Data | Ack | Error | OptionAck)


# -- malformed requests (SPEC section 3) ---------------------------------------


@pytest.mark.parametrize(
    "datagram",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00", id="one-byte"),
        pytest.param(b"\x01", id="one-byte-nonzero"),
    ],
)
def test_too_short_is_malformed(datagram):
    with pytest.raises(MalformedPacket, match="too short"):
        decode(datagram)
    with pytest.raises(MalformedPacket, match="too short"):
        decodeRequest(datagram)


@pytest.mark.parametrize(
    "datagram",
    [
        b"\x00\x04\x00",  # ACK with one byte of block number
        b"\x00\x04",
        b"\x00\x03\x00",  # DATA without a whole block number
        b"\x00\x05\x00",  # ERROR without a whole code
        b"\x00\x05",
    ],
)
def test_truncated_data_ack_error_are_malformed(datagram):
    with pytest.raises(MalformedPacket, match="too short"):
        decode(datagram)


@pytest.mark.parametrize("opcode", [0, 7, 8, 0x0100, 0xFFFF])
def test_unknown_opcode_is_malformed(opcode):
    datagram = opcode.to_bytes(2, "big") + b"file\x00octet\x00"
    with pytest.raises(MalformedPacket, match=f"Unknown opcode {opcode}"):
        decode(datagram)
    with pytest.raises(MalformedPacket):
        decodeRequest(datagram)


@pytest.mark.parametrize("opcode", [OP_DATA, OP_ACK, OP_ERROR, OP_OACK])
def test_decode_request_refuses_other_packets(opcode):
    with pytest.raises(MalformedPacket, match="Not a request"):
        decodeRequest(opcode.to_bytes(2, "big") + b"\x00\x01file\x00octet\x00")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"file", id="no-nul-after-filename"),
        pytest.param(b"file\x00", id="no-mode"),
        pytest.param(b"file\x00octet", id="no-nul-after-mode"),
        pytest.param(b"file\x00netascii", id="no-nul-after-netascii"),
    ],
)
@pytest.mark.parametrize("opcode", [OP_RRQ, OP_WRQ])
def test_missing_nul_terminators_are_malformed(opcode, body):
    datagram = opcode.to_bytes(2, "big") + body
    with pytest.raises(MalformedPacket):
        decodeRequest(datagram)
    with pytest.raises(MalformedPacket):
        decode(datagram)


def test_missing_nul_after_mode_is_malformed_not_a_mode_with_a_tail():
    # "octet" with no NUL must not be taken as mode octet.
    with pytest.raises(MalformedPacket, match="NUL"):
        decodeRequest(b"\x00\x01file\x00octet")


@pytest.mark.parametrize("opcode", [OP_RRQ, OP_WRQ])
def test_empty_filename_is_malformed(opcode):
    with pytest.raises(MalformedPacket, match="Empty filename"):
        decodeRequest(opcode.to_bytes(2, "big") + b"\x00octet\x00")


@pytest.mark.parametrize(
    "mode",
    [b"mail", b"MAIL", b"Mail", b"", b"bogus", b"octets", b"octe", b"net ascii", b" octet"],
)
def test_mail_and_unknown_modes_are_malformed(mode):
    with pytest.raises(MalformedPacket, match="Unsupported transfer mode"):
        decodeRequest(b"\x00\x01file\x00" + mode + b"\x00")


def test_non_ascii_mode_is_malformed_and_message_is_printable():
    with pytest.raises(MalformedPacket) as info:
        decodeRequest(b"\x00\x01file\x00oct\xe9t\x00")
    # The message goes into an ERROR 4: it must encode cleanly.
    assert encodeError(4, str(info.value)).startswith(b"\x00\x05\x00\x04Unsupported")


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("octet", "octet"),
        ("OCTET", "octet"),
        ("Octet", "octet"),
        ("oCtEt", "octet"),
        ("netascii", "netascii"),
        ("NETASCII", "netascii"),
        ("NetAscii", "netascii"),
        ("binary", "octet"),
        ("BINARY", "octet"),
        ("Binary", "octet"),
    ],
)
def test_modes_are_case_insensitive_and_binary_is_octet(raw, normal):
    request = decodeRequest(encodeRequest(OP_RRQ, "f", raw))
    assert request.mode == normal
    assert request.rawMode == raw  # the client's spelling is kept for logs


def test_mail_is_not_in_modes_table():
    assert set(MODES) == {"octet", "binary", "netascii"}
    assert set(MODES.values()) == {"octet", "netascii"}


# -- options -------------------------------------------------------------------


def test_options_keep_client_spelling_and_order():
    datagram = encodeRequest(
        OP_RRQ,
        "f",
        "octet",
        [("TSize", "0"), ("BLKSIZE", "1468"), ("windowSize", "8"), ("x-vendor", "Yes")],
    )
    assert decodeRequest(datagram).options == (
        ("TSize", "0"),
        ("BLKSIZE", "1468"),
        ("windowSize", "8"),
        ("x-vendor", "Yes"),
    )


def test_repeated_option_names_keep_the_first_case_insensitively():
    datagram = b"\x00\x01f\x00octet\x00blksize\x001024\x00tsize\x000\x00BlkSize\x00512\x00"
    assert decodeRequest(datagram).options == (("blksize", "1024"), ("tsize", "0"))


def test_a_non_ascii_look_alike_is_not_a_repeat():
    """Names compare in ASCII only: a Kelvin sign does not make ``blksize``."""
    kelvin = "bl\u212asize".encode()
    datagram = b"\x00\x01f\x00octet\x00" + kelvin + b"\x00512\x00blksize\x001024\x00"
    assert decodeRequest(datagram).options == (("bl\u212asize", "512"), ("blksize", "1024"))


def test_repeated_option_first_wins_even_if_its_value_is_empty():
    datagram = b"\x00\x01f\x00octet\x00blksize\x00\x00blksize\x00512\x00"
    assert decodeRequest(datagram).options == (("blksize", ""),)


@pytest.mark.parametrize("padding", [b"\x00", b"\x00\x00", b"\x00\x00\x00", b"\x00" * 20])
def test_empty_string_padding_after_options_is_tolerated(padding):
    datagram = b"\x00\x01pxelinux.0\x00octet\x00tsize\x000\x00blksize\x001456\x00" + padding
    request = decodeRequest(datagram)
    assert request.filename == "pxelinux.0"
    assert request.options == (("tsize", "0"), ("blksize", "1456"))


def test_padding_right_after_mode_is_tolerated():
    request = decodeRequest(b"\x00\x01f\x00octet\x00\x00\x00\x00")
    assert (request.filename, request.mode, request.options) == ("f", "octet", ())


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b"blksize\x00", id="nul-terminated-name"),
        pytest.param(b"blksize", id="unterminated-name"),
        pytest.param(b"blksize\x001024", id="unterminated-value"),
    ],
)
def test_trailing_option_without_complete_value_is_ignored(tail):
    datagram = b"\x00\x01f\x00octet\x00tsize\x000\x00" + tail
    assert decodeRequest(datagram).options == (("tsize", "0"),)


def test_option_with_empty_value_is_kept():
    assert decodeRequest(b"\x00\x01f\x00octet\x00tsize\x00\x00").options == (("tsize", ""),)


def test_request_without_options_has_empty_tuple():
    request = decodeRequest(b"\x00\x02up.bin\x00octet\x00")
    assert request == Request(OP_WRQ, "up.bin", "octet", "octet", ())
    assert not request.isRead


# -- filenames -----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe",
        b"caf\xe9.bin",  # latin-1 e-acute, not UTF-8
        b"\xc3\xa9t\xc3\xa9",  # valid UTF-8
        b"\xc3",  # truncated UTF-8
        b"\xed\xa0\x80",  # an encoded surrogate: invalid UTF-8
        b"dir\\sub/file",
        b"/pxelinux.0",
    ],
)
def test_filename_bytes_survive_decode_encode(raw):
    datagram = b"\x00\x01" + raw + b"\x00octet\x00"
    request = decodeRequest(datagram)
    assert request.filename.encode("utf-8", "surrogateescape") == raw
    assert encodeRequest(OP_RRQ, request.filename, request.rawMode) == datagram


@given(st.binary(min_size=1, max_size=80).filter(lambda b: b"\0" not in b))
@example(b"\x80\xff")
def test_any_filename_bytes_survive_decode_encode(raw):
    datagram = b"\x00\x01" + raw + b"\x00octet\x00"
    filename = decodeRequest(datagram).filename
    assert filename.encode("utf-8", "surrogateescape") == raw
    assert encodeRequest(OP_RRQ, filename) == datagram


def test_filename_is_not_normalised_by_the_codec():
    # Cleaning (leading "/", backslashes) is the resolver's job, not the codec's.
    assert decodeRequest(b"\x00\x01/a\\b\x00octet\x00").filename == "/a\\b"


def test_nul_in_filename_splits_it_on_the_wire():
    # b"a\0b\0octet\0": filename "a", mode "b" -> refused as a mode, so nothing
    # after a NUL can ever reach the file system as part of a name.
    with pytest.raises(MalformedPacket, match="Unsupported transfer mode 'b'"):
        decodeRequest(b"\x00\x01a\x00b\x00octet\x00")


def test_nul_in_filename_with_valid_mode_keeps_only_the_prefix():
    request = decodeRequest(b"\x00\x01a\x00octet\x00b\x00octet\x00")
    assert request.filename == "a"
    assert "\0" not in request.filename
    assert request.options == (("b", "octet"),)


# -- other packets ---------------------------------------------------------------


def test_data_keeps_payload_verbatim_including_nuls():
    assert decode(b"\x00\x03\x00\x07\x00\x00abc\x00") == Data(7, b"\x00\x00abc\x00")


def test_ack_ignores_trailing_bytes():
    assert decode(b"\x00\x04\x00\x09junk") == Ack(9)


def test_error_message_stops_at_first_nul_and_tolerates_missing_nul():
    assert decode(b"\x00\x05\x00\x02no\x00more\x00") == Error(2, "no")
    assert decode(b"\x00\x05\x00\x03unterminated") == Error(3, "unterminated")
    assert decode(b"\x00\x05\x00\x00") == Error(0, "")


def test_error_message_with_bad_utf8_decodes_with_replacement():
    assert decode(b"\x00\x05\x00\x01\xff!\x00") == Error(1, "\ufffd!")


def test_oack_decode_ignores_unterminated_tail():
    assert decode(b"\x00\x06blksize\x001024\x00tsize") == OptionAck((("blksize", "1024"),))
    assert decode(b"\x00\x06") == OptionAck(())


# -- robustness: nothing but a packet or MalformedPacket ------------------------

PACKET_TYPES = (Request, Data, Ack, Error, OptionAck)


@given(anyDatagrams)
@example(b"")
@example(b"\x00\x01\x00\x00\x00")
@example(b"\x00\x01\xff\x00\xff\x00")
@example(b"\x00\x06\x00")
def test_decode_returns_a_packet_or_raises_malformed(datagram):
    try:
        packet = decode(datagram)
    except MalformedPacket as e:
        assert str(e)  # the text goes into an ERROR 4
        encodeError(4, str(e))
    else:
        assert isinstance(packet, PACKET_TYPES)


@given(anyDatagrams)
@example(b"\x00\x02x\x00\x80\x00")
def test_decode_request_returns_a_request_or_raises_malformed(datagram):
    try:
        request = decodeRequest(datagram)
    except MalformedPacket as e:
        encodeError(4, str(e))
    else:
        assert isinstance(request, Request)
        assert request.opcode in (OP_RRQ, OP_WRQ)
        assert request.filename and "\0" not in request.filename
        assert request.mode in ("octet", "netascii")
        names = [name.lower() for name, _ in request.options]
        assert len(names) == len(set(names)) and "" not in names


@given(st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(b"\x00\x01".__add__)))
@example(b"\x00\x01abc")
def test_decode_request_on_random_bytes(datagram):
    fields = datagram[2:].split(b"\0")
    isRequest = datagram[:2] in (b"\x00\x01", b"\x00\x02")
    shapeOk = isRequest and len(fields) >= 3 and fields[0]
    goodMode = shapeOk and fields[1].lower() in (b"octet", b"netascii", b"binary")
    try:
        request = decodeRequest(datagram)
    except MalformedPacket:
        assert not goodMode
    else:
        assert goodMode
        assert request.filename.encode("utf-8", "surrogateescape") == fields[0]


@given(wireText(min_size=1))
def test_wire_text_strategy_round_trips(text):
    # Guard for strategies.py: generated text is exactly what the codec produces.
    assert text.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape") == text
