"""Tests for ctftp.acl: parsing CIDR lists, the allow/deny decision, rate-limited logging."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel

from ctftp import logs
from ctftp.acl import (
    BadCIDRList,
    ClientACL,
    ClientFilter,
    formatCIDRList,
    normaliseCIDRList,
    parseCIDRList,
)
from ctftp.logs import RateLimitedLog

net = ipaddress.ip_network


# -- parseCIDRList -------------------------------------------------------------


def test_parse_ipv4_and_ipv6_networks() -> None:
    assert parseCIDRList("10.0.0.0/8, 192.168.1.0/24,2001:db8::/32") == (
        net("10.0.0.0/8"),
        net("192.168.1.0/24"),
        net("2001:db8::/32"),
    )


def test_bare_addresses_are_host_networks() -> None:
    assert parseCIDRList("192.0.2.7 2001:db8::1") == (net("192.0.2.7/32"), net("2001:db8::1/128"))


def test_empty_and_blank_lists() -> None:
    assert parseCIDRList("") == ()
    assert parseCIDRList("  ,  , ") == ()


def test_host_bits_are_masked() -> None:
    assert parseCIDRList("10.1.2.3/8") == (net("10.0.0.0/8"),)


def test_bracketed_ipv6() -> None:
    assert parseCIDRList("[2001:db8::]/32, [::1]") == (net("2001:db8::/32"), net("::1/128"))


def test_duplicates_dropped_order_kept() -> None:
    assert parseCIDRList("10.0.0.0/8, 192.0.2.0/24, 10.0.0.0/8") == (
        net("10.0.0.0/8"),
        net("192.0.2.0/24"),
    )


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("10.0.0.0/8, 10.300.0.0/16", "10.300.0.0/16"),
        ("10.0.0.0/33", "10.0.0.0/33"),
        ("example.com", "example.com"),
        ("2001:db8::/129", "2001:db8::/129"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("10.0.0.0/8;192.0.2.0/24", "10.0.0.0/8;192.0.2.0/24"),
    ],
)
def test_bad_entry_named(text: str, bad: str) -> None:
    with pytest.raises(ValueError, match="^expected ") as info:
        parseCIDRList(text)
    assert isinstance(info.value, BadCIDRList)
    assert info.value.got == bad


def test_normalise_accepts_objects_and_strings() -> None:
    assert normaliseCIDRList(
        [net("10.0.0.0/8"), ipaddress.ip_address("192.0.2.1"), "2001:db8::/32"]
    ) == (net("10.0.0.0/8"), net("192.0.2.1/32"), net("2001:db8::/32"))
    assert normaliseCIDRList("10.0.0.0/8") == (net("10.0.0.0/8"),)
    assert normaliseCIDRList(()) == ()


@pytest.mark.parametrize("value", [5, [5], ["10.0.0.0/8, 10.1.0.0/16"], [""], None])
def test_normalise_refuses_other_things(value: object) -> None:
    with pytest.raises(BadCIDRList):
        normaliseCIDRList(value)


def test_format() -> None:
    assert formatCIDRList(parseCIDRList("10.0.0.0/8 ::1")) == "10.0.0.0/8, ::1/128"
    assert formatCIDRList(()) == "(empty)"


# -- ClientACL -------------------------------------------------------------------


def test_empty_lists_allow_everyone() -> None:
    acl = ClientACL()
    assert not acl.active
    assert acl.allows("192.0.2.1")
    assert acl.allows("2001:db8::1")


def test_allow_list() -> None:
    acl = ClientACL(allow="10.0.0.0/8, 2001:db8::/32")
    assert acl.active
    assert acl.allows("10.1.2.3")
    assert acl.allows("2001:db8::5")
    assert not acl.allows("192.0.2.1")
    assert not acl.allows("2001:db9::1")


def test_deny_only_allows_the_rest() -> None:
    acl = ClientACL(deny="192.0.2.0/24")
    assert not acl.allows("192.0.2.200")
    assert acl.allows("198.51.100.1")
    assert acl.allows("::1")


def test_deny_wins_over_allow() -> None:
    acl = ClientACL(allow="10.0.0.0/8", deny="10.66.0.0/16, 10.1.2.3")
    assert acl.allows("10.1.2.4")
    assert not acl.allows("10.1.2.3")
    assert not acl.allows("10.66.7.8")


@pytest.mark.parametrize("host", ["::ffff:10.1.2.3", "::FFFF:10.1.2.3", "::ffff:a01:203"])
def test_ipv4_mapped_matched_as_ipv4(host: str) -> None:
    assert ClientACL(allow="10.0.0.0/8").allows(host)
    assert not ClientACL(allow="10.0.0.0/8", deny="10.1.2.3").allows(host)
    assert not ClientACL(deny="10.0.0.0/8").allows(host)
    # An IPv6 rule does not match it as the mapped IPv6 address either way.
    assert not ClientACL(allow="::ffff:0:0/96").allows(host)


@pytest.mark.parametrize("host", ["", "not-an-ip", "10.0.0.256", "10.0.0.1:69"])
def test_unparsable_host_refused(host: str) -> None:
    assert not ClientACL(allow="0.0.0.0/0, ::/0").allows(host)
    assert not ClientACL(deny="192.0.2.0/24").allows(host)


def test_zone_index_host() -> None:
    assert ClientACL(allow="fe80::/10").allows("fe80::1%eth0")


def test_cache_is_bounded_and_correct() -> None:
    acl = ClientACL(allow="10.0.0.0/8")
    for i in range(10000):
        host = f"10.{i // 256 % 256}.{i % 256}.1"
        assert acl.allows(host)
        assert not acl.allows(f"11.0.{i % 256}.{i // 256 % 256}")
    assert len(acl._cache) <= 4096


def test_equality_for_reload_comparisons() -> None:
    assert ClientACL("10.0.0.0/8") == ClientACL(["10.0.0.0/8"])
    assert ClientACL("10.0.0.0/8") != ClientACL("10.0.0.0/8", "10.1.0.0/16")
    assert hash(ClientACL("10.0.0.0/8")) == hash(ClientACL(" 10.0.0.0/8 "))


# -- RateLimitedLog and ClientFilter -------------------------------------------------


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    logs.publisher.addObserver(seen.append)
    yield seen
    logs.publisher.removeObserver(seen.append)


def test_rate_limited_log(events: list[dict[str, Any]]) -> None:
    clock = Clock()
    log = RateLimitedLog(logs.logger("ctftp.test"), clock, interval=10.0)
    assert log("hello {who}", who="a")
    assert not log("hello {who}", who="b")
    assert not log("hello {who}", who="c")
    clock.advance(9.9)
    assert not log("hello {who}", who="d")
    clock.advance(0.1)
    assert log("hello {who}", who="e")
    messages = [logs.formatTextLine(e) for e in events]
    assert len(messages) == 2
    assert "hello a" in str(messages[0]) and "suppressed" not in str(messages[0])
    assert "hello e (3 similar lines suppressed)" in str(messages[1])
    assert events[1]["suppressed"] == 3
    assert events[0]["log_level"] is LogLevel.warn


def test_rate_limited_log_level() -> None:
    seen: list[dict[str, Any]] = []
    log = RateLimitedLog(Logger(observer=seen.append), Clock(), level=LogLevel.error)
    log("x")
    assert seen[0]["log_level"] is LogLevel.error


def test_client_filter(events: list[dict[str, Any]]) -> None:
    clock = Clock()
    gate = ClientFilter(ClientACL(allow="10.0.0.0/8"), clock, interval=60.0)
    assert gate.check("10.0.0.1", 1000)
    assert not gate.check("192.0.2.1", 1001)
    assert not gate.check("::ffff:192.0.2.2", 1002)
    assert not gate.check("2001:db8::1", 1003)
    assert gate.refused == 3
    lines = [str(logs.formatTextLine(e)) for e in events]
    assert len(lines) == 1
    assert "refused request from 192.0.2.1:1001" in lines[0]
    assert "[WARN]" in lines[0]
    clock.advance(60)
    assert not gate.check("::ffff:192.0.2.9", 7)
    lines = [str(logs.formatTextLine(e)) for e in events]
    assert "refused request from 192.0.2.9:7" in lines[1]
    assert "(2 similar lines suppressed)" in lines[1]
    assert "(4 refused so far)" in lines[1]
    assert not gate.check("2001:db8::1", 8)
    clock.advance(60)
    assert not gate.check("2001:db8::1", 9)
    assert "[2001:db8::1]:9" in str(logs.formatTextLine(events[-1]))


def test_client_filter_reload_swaps_acl() -> None:
    gate = ClientFilter(ClientACL(), Clock())
    assert gate.check("192.0.2.1", 1)
    gate.acl = ClientACL(deny="192.0.2.0/24")
    assert not gate.check("192.0.2.1", 1)


# -- the ACLs in the server (once the server checks them) ------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.ended: list[Any] = []

    def transferStarted(self, record: Any) -> None:
        pass

    def transferEnded(self, record: Any) -> None:
        self.ended.append(record)


def _server(tmp_path: Any, **acl: str) -> tuple[Any, Any, _Recorder]:
    from ctftp.config import KEYS, ServerConfig
    from ctftp.service import makeService
    from ctftp.testing import MemoryUDPReactor

    if "allow_clients" not in KEYS:
        pytest.skip("allow_clients is not a config key yet")
    (tmp_path / "f.txt").write_bytes(b"hello\n")
    reactor = MemoryUDPReactor()
    recorder = _Recorder()
    config = ServerConfig(root_dir=str(tmp_path), listeners="[::]:69", file_log=False, **acl)
    service = makeService(config, reactor=reactor, observers=[recorder])
    if not hasattr(service.server, "clientFilter"):
        pytest.skip("the server does not check allow_clients / deny_clients yet")
    service.startService()
    return reactor, reactor.portAt("::", 69), recorder


def test_server_refuses_silently_with_an_error_event(tmp_path: Any) -> None:
    from ctftp.packets import OP_RRQ, encodeRequest

    reactor, listener, recorder = _server(
        tmp_path, allow_clients="10.0.0.0/8", deny_clients="10.9.0.0/16"
    )
    rrq = encodeRequest(OP_RRQ, "f.txt")
    for client in ("192.0.2.1", "::ffff:10.9.1.1", "2001:db8::1"):
        listener.deliver(rrq, (client, 4000))
        listener.deliver(b"\x00\x05garbage", (client, 4001))
        listener.deliver(b"junk", (client, 4002))
    assert listener.written == []  # no reply of any kind
    assert reactor.newestPort() is listener  # no transfer port opened
    assert [(r.clientHost, r.status) for r in recorder.ended] == [
        ("192.0.2.1", "error"),
        ("::ffff:10.9.1.1", "error"),
        ("2001:db8::1", "error"),
    ]
    assert recorder.ended[0].filename == "f.txt"
    assert recorder.ended[0].localPath is None  # no file system work

    listener.deliver(rrq, ("::ffff:10.1.2.3", 5000))  # IPv4-mapped, allowed
    transfer = reactor.newestPort()
    assert transfer is not listener
    assert transfer.written[0][0].endswith(b"hello\n")
