"""Tests for ctftp.options.negotiate (SPEC section 3: RFC 2347/2348/2349/7440,
tftp-hpa's blksize2 and utimeout)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import KNOWN_OPTIONS, optionLists

from ctftp.options import (
    BLKSIZE_MAX,
    BLKSIZE_MIN,
    DEFAULT_BLKSIZE,
    Negotiated,
    OptionPolicy,
    OptionRefused,
    negotiate,
)

DEFAULT = OptionPolicy()


def read(options, policy=DEFAULT, size=1000):
    return negotiate(tuple(options), policy, isRead=True, size=size)


def write(options, policy=DEFAULT, size=None):
    return negotiate(tuple(options), policy, isRead=False, size=size)


def test_constants():
    assert (BLKSIZE_MIN, BLKSIZE_MAX, DEFAULT_BLKSIZE) == (8, 65464, 512)
    assert (DEFAULT.enabled, DEFAULT.maxBlksize, DEFAULT.refused) == (True, 65464, frozenset())
    assert DEFAULT.maxWindowBytes == 16 * 1024 * 1024


def test_no_options_is_rfc1350_defaults_and_no_oack():
    assert read(()) == Negotiated(512, 1, None, None, ())
    assert write(()) == Negotiated()


# -- blksize ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [8, 9, 512, 1024, 1428, 1468, 8192, 65463, 65464])
def test_blksize_in_range_is_accepted(value):
    agreed = read([("blksize", str(value))])
    assert agreed.blksize == value
    assert agreed.oack == (("blksize", str(value)),)


@pytest.mark.parametrize("value", [0, 1, 7, 65465, 65535, 65536, 10**9])
def test_blksize_out_of_range_is_refused(value):
    with pytest.raises(OptionRefused, match="blksize"):
        read([("blksize", str(value))])


def test_blksize_refusal_names_the_client_spelling():
    with pytest.raises(OptionRefused, match="BlkSize value 7 out of range 8..65464"):
        read([("BlkSize", "7")])


@pytest.mark.parametrize(("value", "cap", "agreed"), [(1468, 1024, 1024), (65464, 8, 8)])
def test_blksize_above_max_blksize_is_lowered(value, cap, agreed):
    result = read([("blksize", str(value))], OptionPolicy(maxBlksize=cap))
    assert result.blksize == agreed
    assert result.oack == (("blksize", str(agreed)),)


def test_blksize_at_or_below_cap_is_kept():
    policy = OptionPolicy(maxBlksize=1024)
    assert read([("blksize", "1024")], policy).blksize == 1024
    assert read([("blksize", "600")], policy).blksize == 600


def test_blksize_out_of_range_is_refused_even_with_a_low_cap():
    # The range check comes before the cap: 65465 is an error, not "lowered".
    with pytest.raises(OptionRefused):
        read([("blksize", "65465")], OptionPolicy(maxBlksize=1024))


# -- blksize2 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "agreed"),
    [(8, 8), (9, 8), (15, 8), (16, 16), (1000, 512), (1024, 1024), (1468, 1024), (65464, 32768)],
)
def test_blksize2_is_the_largest_power_of_two_not_above_value(value, agreed):
    result = read([("blksize2", str(value))])
    assert result.blksize == agreed
    assert result.oack == (("blksize2", str(agreed)),)


@pytest.mark.parametrize(("value", "cap", "agreed"), [(65464, 1468, 1024), (1024, 1000, 512)])
def test_blksize2_is_also_capped(value, cap, agreed):
    result = read([("BLKSIZE2", str(value))], OptionPolicy(maxBlksize=cap))
    assert result.blksize == agreed
    assert result.oack == (("BLKSIZE2", str(agreed)),)


@pytest.mark.parametrize("value", [0, 7, 65465, 99999])
def test_blksize2_out_of_range_is_refused(value):
    with pytest.raises(OptionRefused):
        read([("blksize2", str(value))])


def test_blksize_and_blksize2_together_oack_matches_agreed_blksize():
    result = read([("blksize", "1000"), ("blksize2", "1000")])
    for name, value in result.oack:
        if name.lower() in ("blksize", "blksize2"):
            assert int(value) == result.blksize


@pytest.mark.parametrize(
    ("options", "agreed"),
    [
        ([("blksize", "600"), ("blksize2", "1468")], 512),
        ([("blksize2", "1468"), ("blksize", "600")], 512),
        ([("blksize", "2000"), ("blksize2", "1000")], 512),
        ([("blksize", "1468"), ("blksize2", "8192")], 1024),
        ([("BLKSIZE2", "65464"), ("blksize", "65464")], 32768),
    ],
)
def test_blksize_and_blksize2_agree_on_one_size_valid_for_both(options, agreed):
    """Found by a black-box review: the last of the two set the size and both
    entries echoed it (blksize 1024 to a request of 600; blksize2 600). Now a
    power of two within both, in both entries."""
    result = read(options)
    assert result.blksize == agreed
    assert [int(value) for _, value in result.oack] == [agreed, agreed]


def test_option_names_match_ascii_letters_only():
    """``bl\u212asize`` (a Kelvin sign) lower-cases to ``blksize`` in
    Unicode; C's strcasecmp, as tftpd-hpa and atftpd compare, does not."""
    assert read([("bl\u212asize", "1024")]) == read([])
    assert read([("BlkSize", "1024")]).oack == (("BlkSize", "1024"),)


# -- tsize -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1500, 2**40])
def test_tsize_on_read_reports_the_file_size(size):
    result = read([("tsize", "0")], size=size)
    assert result.tsize == size
    assert result.oack == (("tsize", str(size)),)


def test_tsize_on_read_ignores_the_clients_value():
    assert read([("tsize", "12345")], size=7).oack == (("tsize", "7"),)


def test_tsize_on_read_with_unknown_size_is_not_acknowledged():
    result = read([("tsize", "0")], size=None)
    assert result.tsize is None
    assert result.oack == ()


def test_tsize_unknown_size_drops_only_tsize():
    result = read([("tsize", "0"), ("blksize", "1024")], size=None)
    assert result.oack == (("blksize", "1024"),)


@pytest.mark.parametrize("value", ["0", "4096", "1073741824"])
def test_tsize_on_write_echoes_the_clients_value(value):
    result = write([("tsize", value)], size=999)
    assert result.tsize == int(value)
    assert result.oack == (("tsize", value),)


def test_tsize_non_numeric_is_ignored():
    assert read([("tsize", "")]).oack == ()
    assert read([("tsize", "big")]).oack == ()


# -- timeout / utimeout ------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 2, 5, 254, 255])
def test_timeout_in_range(value):
    result = read([("timeout", str(value))])
    assert result.timeout == float(value)
    assert isinstance(result.timeout, float)
    assert result.oack == (("timeout", str(value)),)


@pytest.mark.parametrize("value", [0, 256, 1000])
def test_timeout_out_of_range_is_refused(value):
    with pytest.raises(OptionRefused, match="timeout"):
        read([("timeout", str(value))])


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(10_000, 0.01), (250_000, 0.25), (1_000_000, 1.0), (255_000_000, 255.0)],
)
def test_utimeout_in_range_is_microseconds(value, seconds):
    result = read([("utimeout", str(value))])
    assert result.timeout == pytest.approx(seconds)
    assert result.oack == (("utimeout", str(value)),)


@pytest.mark.parametrize(
    ("options", "seconds", "oack"),
    [
        ([("timeout", "3"), ("utimeout", "500000")], 0.5, (("utimeout", "500000"),)),
        ([("UTIMEOUT", "500000"), ("Timeout", "3")], 3.0, (("Timeout", "3"),)),
        (
            [("timeout", "3"), ("tsize", "0"), ("utimeout", "20000")],
            0.02,
            (("tsize", "100"), ("utimeout", "20000")),
        ),
    ],
)
def test_timeout_and_utimeout_together_the_later_is_used_and_acknowledged(options, seconds, oack):
    result = read(options, size=100)
    assert result.timeout == seconds
    assert result.oack == oack


@pytest.mark.parametrize("value", [0, 9_999, 255_000_001])
def test_utimeout_out_of_range_is_refused(value):
    with pytest.raises(OptionRefused, match="utimeout"):
        read([("utimeout", str(value))])


def test_no_timeout_option_leaves_server_timeout():
    assert read([("blksize", "1024")]).timeout is None


# -- windowsize --------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 2, 16, 64, 256])
def test_windowsize_in_range(value):
    result = read([("windowsize", str(value))])
    assert result.windowsize == value
    assert result.oack == (("windowsize", str(value)),)


@pytest.mark.parametrize("value", [0, 65536, 70000])
def test_windowsize_out_of_range_is_refused(value):
    with pytest.raises(OptionRefused, match="windowsize"):
        read([("windowsize", str(value))])


def test_windowsize_max_is_lowered_to_max_window_bytes():
    # 65535 * 512 > 16 MiB: lowered to 16 MiB / 512 = 32768.
    result = read([("windowsize", "65535")])
    assert result.windowsize == 32768
    assert result.oack == (("windowsize", "32768"),)


@pytest.mark.parametrize(
    ("blksize", "windowsize", "limit", "expected"),
    [
        (65464, 65535, 16 * 1024 * 1024, 256),
        (1468, 65535, 16 * 1024 * 1024, 11428),
        (1024, 16, 16 * 1024, 16),
        (1024, 17, 16 * 1024, 16),
        (8192, 4, 10_000, 1),
        (8192, 4, 100, 1),  # never below 1
    ],
)
def test_windowsize_times_blksize_stays_within_max_window_bytes(
    blksize, windowsize, limit, expected
):
    policy = OptionPolicy(maxWindowBytes=limit)
    # windowsize first: the cap must use the blksize agreed later in the list.
    result = read([("windowsize", str(windowsize)), ("blksize", str(blksize))], policy)
    assert result.windowsize == expected
    assert result.oack == (("windowsize", str(expected)), ("blksize", str(blksize)))
    assert expected == 1 or expected * blksize <= limit


def test_windowsize_cap_uses_the_lowered_blksize():
    policy = OptionPolicy(maxBlksize=1024, maxWindowBytes=8192)
    result = read([("blksize", "65464"), ("windowsize", "100")], policy)
    assert (result.blksize, result.windowsize) == (1024, 8)


# -- values that are not numbers ----------------------------------------------------


@pytest.mark.parametrize(
    "value", ["", " ", "abc", "-1", "+8", "1e3", "0x200", "12.5", "512k", "١٢٣", "5 12"]
)
@pytest.mark.parametrize("name", ["blksize", "blksize2", "timeout", "utimeout", "windowsize"])
def test_non_numeric_values_are_ignored(name, value):
    assert read([(name, value)]) == Negotiated()


def test_numbers_with_spaces_and_leading_zeros_are_numbers():
    result = read([("blksize", " 01024 "), ("timeout", "007")])
    assert (result.blksize, result.timeout) == (1024, 7.0)
    # The OACK carries the agreed number, not the client's text.
    assert result.oack == (("blksize", "1024"), ("timeout", "7"))


def test_non_numeric_negative_windowsize_is_ignored_not_refused():
    assert read([("windowsize", "-5"), ("blksize", "1024")]).oack == (("blksize", "1024"),)


# -- unknown, refused, disabled ----------------------------------------------------


def test_unknown_options_are_ignored():
    result = read([("multicast", ""), ("x-vendor", "1"), ("rollover", "0"), ("blksize", "1024")])
    assert result.oack == (("blksize", "1024"),)
    assert not result.multicast  # the policy does not allow it


def test_multicast_is_accepted_in_place_with_its_value_left_empty():
    policy = OptionPolicy(multicast=True)
    options = (("tsize", "0"), ("MULTICAST", "x"), ("windowsize", "4"))
    result = negotiate(options, policy, isRead=True, size=10)
    assert result.multicast
    assert result.oack == (("tsize", "10"), ("MULTICAST", ""), ("windowsize", "4"))
    assert result.withoutOption("multicast").oack == (("tsize", "10"), ("windowsize", "4"))
    assert not result.withoutOption("multicast").multicast
    assert result.withoutOption("windowsize").multicast
    # Never for a write, never when refused or negotiation is off.
    assert not negotiate(options, policy, isRead=False, size=None).multicast
    refused = OptionPolicy(multicast=True, refused=frozenset({"multicast"}))
    assert not negotiate(options, refused, isRead=True, size=10).multicast
    off = OptionPolicy(enabled=False, multicast=True)
    assert negotiate(options, off, isRead=True, size=10) == Negotiated()


def test_unknown_option_with_huge_value_is_ignored():
    assert read([("foo", "99999999999")]) == Negotiated()


def test_refused_options_are_ignored_not_errors():
    policy = OptionPolicy(refused=frozenset({"tsize", "blksize"}))
    result = read([("TSIZE", "0"), ("BlkSize", "1"), ("windowsize", "4")], policy)
    # BlkSize=1 would be ERROR 8, but a refused option is not looked at at all.
    assert result == Negotiated(512, 4, None, None, (("windowsize", "4"),))


def test_options_disabled_means_no_oack_and_no_errors():
    policy = OptionPolicy(enabled=False)
    assert read([("blksize", "1024"), ("tsize", "0")], policy) == Negotiated()
    assert read([("blksize", "1"), ("timeout", "0")], policy) == Negotiated()
    assert write([("tsize", "100")], policy) == Negotiated()


def test_no_accepted_option_gives_empty_oack():
    result = read([("foo", "1"), ("blksize", "big"), ("tsize", "0")], size=None)
    assert result == Negotiated()
    assert result.oack == ()


# -- OACK spelling and order ---------------------------------------------------------


def test_oack_in_client_spelling_and_order():
    options = [
        ("WindowSize", "8"),
        ("TSIZE", "0"),
        ("foo", "bar"),
        ("Timeout", "2"),
        ("bLkSiZe", "1428"),
    ]
    result = read(options, size=4242)
    assert result.oack == (
        ("WindowSize", "8"),
        ("TSIZE", "4242"),
        ("Timeout", "2"),
        ("bLkSiZe", "1428"),
    )
    assert (result.blksize, result.windowsize, result.timeout, result.tsize) == (
        1428,
        8,
        2.0,
        4242,
    )


def test_refusal_stops_even_after_good_options():
    with pytest.raises(OptionRefused):
        read([("blksize", "1024"), ("tsize", "0"), ("timeout", "300")])


def test_oack_names_only_accepted_options():
    result = read([("blksize", "1024"), ("utimeout", "x"), ("bogus", "1"), ("tsize", "0")])
    assert [name for name, _ in result.oack] == ["blksize", "tsize"]


# -- huge numbers --------------------------------------------------------------------


def test_large_out_of_range_number_is_refused():
    with pytest.raises(OptionRefused):
        read([("blksize", "9" * 100)])


@pytest.mark.parametrize("name", ["blksize", "timeout", "windowsize", "tsize"])
def test_value_with_thousands_of_digits_is_refused_or_ignored(name):
    try:
        result = read([(name, "9" * 5000)])
    except OptionRefused:
        assert name != "tsize"  # a read's tsize is the file size, whatever was sent
    else:
        assert BLKSIZE_MIN <= result.blksize <= BLKSIZE_MAX


def _protocolHarness():
    """tests/protocol/conftest.py (the in-memory server), loaded by path."""
    name = "_ctftp_protocol_harness"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "protocol" / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_server_answers_thousands_of_digits_with_error_8_and_closes_the_file(tmp_path):
    h = _protocolHarness().Harness(tmp_path)
    try:
        h.write("f.bin", b"x" * 100)
        fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
        h.request("f.bin", options=(("blksize", "9" * 5000),))
        [reply] = h.listenerReplies()
        if fds is not None:
            assert len(os.listdir("/proc/self/fd")) == fds, "file descriptor leaked"
        assert reply.code == 8
    finally:
        h.service.stopService()


# -- properties ----------------------------------------------------------------------

_sizes = st.one_of(st.none(), st.integers(min_value=0, max_value=2**48))
_policies = st.builds(
    OptionPolicy,
    enabled=st.booleans(),
    maxBlksize=st.integers(min_value=BLKSIZE_MIN, max_value=BLKSIZE_MAX),
    refused=st.frozensets(st.sampled_from(KNOWN_OPTIONS), max_size=3),
    maxWindowBytes=st.integers(min_value=1, max_value=64 * 1024 * 1024),
)


@given(optionLists(), _policies, st.booleans(), _sizes)
@example([("blksize", "65464"), ("windowsize", "65535")], DEFAULT, True, 1)
@example([("blksize2", "8")], OptionPolicy(maxBlksize=8), True, 1)
def test_negotiate_returns_or_refuses_and_blksize_is_within_cap(options, policy, isRead, size):
    try:
        result = negotiate(tuple(options), policy, isRead=isRead, size=size)
    except OptionRefused as e:
        assert str(e)
        assert policy.enabled
        return
    assert BLKSIZE_MIN <= result.blksize <= BLKSIZE_MAX
    if any(name.lower() in ("blksize", "blksize2") for name, _ in result.oack):
        assert result.blksize <= policy.maxBlksize
    else:
        # Not negotiated: RFC 1350's 512, even under a lower cap (the client
        # cannot know any other size).
        assert result.blksize == DEFAULT_BLKSIZE
    assert 1 <= result.windowsize <= 65535
    assert result.windowsize == 1 or result.windowsize * result.blksize <= policy.maxWindowBytes
    if result.timeout is not None:
        assert 0.01 <= result.timeout <= 255
    # The OACK only names options the client sent, in its order and spelling,
    # never a refused or unknown one, and each at most once.
    sentNames = [name for name, _ in options]
    oackNames = [name for name, _ in result.oack]
    assert all(name in sentNames for name in oackNames)
    if len({name.lower() for name in sentNames}) == len(sentNames):
        # Names as decodeRequest hands them on (repeats already dropped).
        positions = [sentNames.index(name) for name in oackNames]
        assert positions == sorted(positions)
    for name in oackNames:
        assert name.lower() not in policy.refused
        assert name.lower() in ("blksize", "blksize2", "tsize", "timeout", "utimeout", "windowsize")
    if not policy.enabled:
        assert result == Negotiated()
    for name, value in result.oack:
        assert value.isdigit()
        if name.lower() == "windowsize":
            assert int(value) == result.windowsize
        if name.lower() == "tsize" and isRead:
            assert int(value) == size


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["blksize", "timeout", "utimeout", "windowsize"]),
            st.integers(min_value=0, max_value=300_000_000),
        ),
        min_size=1,
        max_size=1,
    )
)
def test_single_numeric_option_is_refused_exactly_when_out_of_range(options):
    [(name, value)] = options
    low, high = {
        "blksize": (8, 65464),
        "timeout": (1, 255),
        "utimeout": (10_000, 255_000_000),
        "windowsize": (1, 65535),
    }[name]
    if low <= value <= high:
        result = read([(name, str(value))])
        assert [n for n, _ in result.oack] == [name]
    else:
        with pytest.raises(OptionRefused):
            read([(name, str(value))])
