"""Tests for ctftp.sinks on a fake clock: the JSON encoding, the UDP sink, and the
HTTP sink's queue, concurrency, retries, back-off and shutdown."""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IReactorPluggableNameResolver
from twisted.internet.task import Clock
from twisted.logger import ILogObserver
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from zope.interface import implementer

from ctftp import logs
from ctftp.events import TransferRecord
from ctftp.sinks import (
    LOOKUP_RETRY,
    HTTPEventSink,
    UDPEventSink,
    encodeEvent,
    eventOf,
)
from ctftp.testing import MemoryUDPReactor
from ctftp.webclient import loadTrustRoot

START = datetime.datetime(2025, 12, 2, 10, 16, 1, 204000, tzinfo=datetime.UTC).timestamp()


def record(filename: str = "SEP000000000123.cnf.xml", **fields: Any) -> TransferRecord:
    values: dict[str, Any] = {
        "op": "read",
        "filename": filename,
        "mode": "octet",
        "clientHost": "192.168.10.50",
        "clientPort": 40000,
        "listener": "0.0.0.0:69",
        "start": START,
    }
    values.update(fields)
    return TransferRecord(**values)


def ended(rec: TransferRecord, status: str = "ok", message: str = "transfer_complete") -> None:
    rec.status = status
    rec.message = message
    rec.end = rec.start + 0.107
    if status == "ok":
        rec.bytes = rec.tsize = 3456
    else:
        rec.errorCode = 1


@pytest.fixture
def sinkEvents() -> Iterator[list[dict[str, Any]]]:
    """Log events of the ctftp.sinks logger, seen on ctftp's publisher."""
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "ctftp.sinks":
            events.append(event)

    observer = cast(ILogObserver, observe)
    logs.publisher.addObserver(observer)
    yield events
    logs.publisher.removeObserver(observer)


def warnings(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["log_level"].name == "warn"]


# -- encodeEvent -----------------------------------------------------------------


def decodeStrict(data: bytes) -> dict[str, Any]:
    """Parse as a strict collector would: UTF-8, then JSON, then no lone surrogates."""
    text = data.decode("utf-8")  # raises on anything but UTF-8
    event = json.loads(text)
    json.dumps(event, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return event


def test_encodeEvent_is_the_spec_object() -> None:
    rec = record(resolved="phones/SEP-default.cnf.xml", blksize=1428, windowsize=8)
    ended(rec)
    event = rec.asEvent("host-a")
    data = encodeEvent(event)
    assert decodeStrict(data) == event
    assert decodeStrict(data) == {
        "type": 1,
        "status": "ok",
        "message": "transfer_complete",
        "client_ip": "192.168.10.50",
        "client_port": 40000,
        "filename": "SEP000000000123.cnf.xml",
        "resolved": "phones/SEP-default.cnf.xml",
        "op": "read",
        "mode": "octet",
        "bytes": 3456,
        "tsize": 3456,
        "blksize": 1428,
        "windowsize": 8,
        "retransmits": 0,
        "error_code": None,
        "start": "2025-12-02T10:16:01.204+00:00",
        "end": "2025-12-02T10:16:01.311+00:00",
        "duration_ms": 107,
        "listener": "0.0.0.0:69",
        "server": "host-a",
    }


@given(
    start=st.floats(min_value=1.5e9, max_value=2.5e9),
    length=st.floats(min_value=0, max_value=3600),
)
def test_duration_is_end_minus_start_as_they_read(start: float, length: float) -> None:
    """``duration_ms`` is what a reader computes from ``start`` and ``end``
    (it was rounded from the exact times, 1 ms off a fifth of the time)."""
    rec = record(start=start)
    rec.status, rec.message, rec.end = "ok", "transfer_complete", start + length
    event = rec.asEvent("h")
    shown = [datetime.datetime.fromisoformat(event[key]) for key in ("start", "end")]
    assert event["duration_ms"] == (shown[1] - shown[0]) // datetime.timedelta(milliseconds=1)
    assert abs(shown[0].timestamp() - start) < 0.001


def test_quotes_backslashes_and_controls_are_escaped_not_lost() -> None:
    name = 'a"b\\c\n\r\t\x00\x1b\x7fé€😀\u2028.cfg'
    data = encodeEvent(record(name).asEvent("h"))
    assert b"\n" not in data and b"\x00" not in data and b"\x1b" not in data
    assert b'a\\"b\\\\c\\n\\r\\t\\u0000\\u001b' in data
    event = decodeStrict(data)
    assert event["filename"] == name
    assert "filename_hex" not in event


def test_undecodable_bytes_become_replacement_characters_and_hex() -> None:
    raw = b'cfg/\xff"x\\\xc3(caf\xc3\xa9\xe2\x82.xml'
    name = raw.decode("utf-8", "surrogateescape")
    rec = record(name, resolved=name[4:])
    data = encodeEvent(rec.asEvent("h"))
    assert b"\\udc" not in data.lower()  # no lone-surrogate escapes for collectors to choke on
    event = decodeStrict(data)
    assert event["filename"] == 'cfg/\ufffd"x\\\ufffd(café\ufffd\ufffd.xml'
    assert bytes.fromhex(event["filename_hex"]) == raw
    assert bytes.fromhex(event["resolved_hex"]) == raw[4:]
    keys = list(event)
    assert keys[keys.index("filename") + 1] == "filename_hex"
    assert keys[keys.index("resolved") + 1] == "resolved_hex"
    assert event["type"] == 0 and event["client_port"] == 40000


@given(st.binary(max_size=300))
def test_any_filename_bytes_give_valid_json_and_can_be_recovered(raw: bytes) -> None:
    name = raw.decode("utf-8", "surrogateescape")
    event = decodeStrict(encodeEvent(record(name).asEvent("h")))
    recovered = (
        bytes.fromhex(event["filename_hex"])
        if "filename_hex" in event
        else event["filename"].encode("utf-8")
    )
    assert recovered == raw


@given(st.text(st.characters(codec=None, exclude_categories=())))
def test_any_text_with_any_surrogates_gives_valid_json(name: str) -> None:
    event = decodeStrict(encodeEvent({"filename": name, "nested": [name, {name: name}]}))
    assert len(event["filename"]) == len(name)  # one character for one, never cut


def test_odd_values_still_give_json() -> None:
    event = decodeStrict(
        encodeEvent(
            {"a": float("nan"), "b": object(), "c": ("\udcff", 1.5), 3: None, "d": "\ud800x"}
        )
    )
    assert event["a"] == "nan"
    assert (event["d"], event["d_hex"]) == ("\ufffdx", "eda08078")
    assert event["c"] == ["\ufffd", 1.5]
    assert event["3"] is None


def test_eventOf_names_the_start_message() -> None:
    assert eventOf(record(), "h")["message"] == "RRQ received"
    assert eventOf(record(op="write"), "h")["message"] == "WRQ received"
    rec = record()
    ended(rec, "error", "timeout")
    assert eventOf(rec, "h") == rec.asEvent("h")


# -- UDP -----------------------------------------------------------------------------


def test_udp_literal_one_datagram_per_event() -> None:
    reactor = MemoryUDPReactor()
    sink = UDPEventSink(reactor, "192.0.2.7", 5140, server="host-a")
    sink.start()
    port = reactor.newestPort()
    assert port.interface == ""
    rec = record('x"\\\udcff')
    sink.transferStarted(rec)
    ended(rec, "error", "file_not_found")
    sink.transferEnded(rec)
    sent = port.take()
    assert [addr for _, addr in sent] == [("192.0.2.7", 5140)] * 2
    first, second = (decodeStrict(data) for data, _ in sent)
    assert (first["type"], first["status"], first["message"]) == (0, "start", "RRQ received")
    assert (second["type"], second["status"], second["message"]) == (2, "error", "file_not_found")
    assert second["filename"] == 'x"\\\ufffd' and second["filename_hex"] == "78225cff"
    assert (sink.delivered, sink.failed, sink.dropped) == (2, 0, 0)


def test_udp_ipv6_literal_in_brackets() -> None:
    reactor = MemoryUDPReactor()
    sink = UDPEventSink(reactor, "[2001:db8::5]", 5140)
    sink.start()
    port = reactor.newestPort()
    assert port.interface == "::"
    sink.transferStarted(record())
    assert [addr for _, addr in port.take()] == [("2001:db8::5", 5140)]


def test_udp_not_running_drops() -> None:
    reactor = MemoryUDPReactor()
    sink = UDPEventSink(reactor, "127.0.0.1", 5140)
    sink.transferStarted(record())
    sink.start()
    port = reactor.newestPort()
    sink.transferStarted(record())
    d = sink.stop()
    assert d.called
    assert not port.listening
    sink.transferEnded(record())
    assert (sink.delivered, sink.dropped) == (1, 2)


@implementer(IReactorPluggableNameResolver)
class ResolvingReactor(MemoryUDPReactor):
    """A MemoryUDPReactor whose name lookups the test answers by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.nameResolver = self
        self.lookups: list[tuple[Any, str, str]] = []

    def installNameResolver(self, resolver: Any) -> Any:
        raise NotImplementedError

    def resolveHostName(
        self,
        receiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> None:
        receiver.resolutionBegan(None)
        self.lookups.append((receiver, hostName, transportSemantics))

    def answer(self, index: int, *hosts: str) -> None:
        receiver = self.lookups[index][0]
        for host in hosts:
            kind = IPv6Address if ":" in host else IPv4Address
            receiver.addressResolved(kind("UDP", host, 0))
        receiver.resolutionComplete()


def test_udp_name_resolved_at_start_and_on_reload(sinkEvents: list[dict[str, Any]]) -> None:
    reactor = ResolvingReactor()
    sink = UDPEventSink(reactor, "collector.example", 5140)
    sink.start()
    assert [(h, s) for _, h, s in reactor.lookups] == [("collector.example", "UDP")]
    sink.transferStarted(record())  # not resolved yet
    assert sink.dropped == 1
    reactor.answer(0, "10.1.1.1", "10.1.1.2")
    port = reactor.newestPort()
    sink.transferStarted(record())
    assert [addr for _, addr in port.take()] == [("10.1.1.1", 5140)]

    sink.reload()
    reactor.answer(1)  # the lookup found nothing: the old address stays
    sink.transferStarted(record())
    assert [addr for _, addr in port.take()] == [("10.1.1.1", 5140)]
    [warning] = warnings(sinkEvents)
    assert warning["host"] == "collector.example"
    assert "still sending to 10.1.1.1" in warning["error"]

    sink.reload()
    sink.reload()
    reactor.answer(3, "2001:db8::9")
    reactor.answer(2, "10.9.9.9")  # an older lookup answering late is ignored
    assert not port.listening  # the IPv6 address needed a port of its own family
    port6 = reactor.newestPort()
    assert port6.interface == "::"
    sink.transferEnded(record())
    assert [addr for _, addr in port6.take()] == [("2001:db8::9", 5140)]
    sink.stop()
    reactor.answer(2, "10.9.9.9")
    assert not port6.listening and sink.address == "2001:db8::9"


def test_udp_name_never_resolved_is_looked_up_again() -> None:
    reactor = ResolvingReactor()
    sink = UDPEventSink(reactor, "collector.example", 5140)
    sink.start()
    reactor.answer(0)  # DNS not there yet
    reactor.advance(LOOKUP_RETRY - 1)
    assert len(reactor.lookups) == 1
    reactor.advance(1)
    assert len(reactor.lookups) == 2
    reactor.answer(1, "10.3.3.3")
    reactor.advance(LOOKUP_RETRY * 10)
    assert len(reactor.lookups) == 2  # resolved: no more lookups until reload
    sink.reload()
    reactor.answer(2)
    reactor.advance(LOOKUP_RETRY * 10)
    assert len(reactor.lookups) == 3 and sink.address == "10.3.3.3"


def test_udp_stop_cancels_the_next_lookup() -> None:
    reactor = ResolvingReactor()
    sink = UDPEventSink(reactor, "collector.example", 5140)
    sink.start()
    reactor.answer(0)
    sink.stop()
    assert reactor.getDelayedCalls() == []


def test_udp_name_on_a_reactor_without_pluggable_resolver() -> None:
    reactor = MemoryUDPReactor()
    asked: list[str] = []

    def resolve(name: str) -> defer.Deferred[str]:
        asked.append(name)
        return defer.succeed("10.2.2.2")

    reactor.resolve = resolve  # type: ignore[attr-defined]
    sink = UDPEventSink(reactor, "collector", 5140)
    sink.start()
    sink.transferStarted(record())
    assert asked == ["collector"]
    assert [addr for _, addr in reactor.newestPort().take()] == [("10.2.2.2", 5140)]


def test_udp_send_errors_never_raise_and_are_logged_once_a_minute(
    sinkEvents: list[dict[str, Any]],
) -> None:
    reactor = MemoryUDPReactor()
    sink = UDPEventSink(reactor, "127.0.0.1", 5140)
    sink.start()
    port = reactor.newestPort()

    def fail(packet: bytes, addr: Any = None) -> None:
        raise OSError(101, "Network is unreachable")

    port.write = fail  # type: ignore[method-assign]
    for _ in range(100):
        sink.transferStarted(record())
        reactor.advance(0.5)
    assert (sink.delivered, sink.failed) == (0, 100)
    assert len(warnings(sinkEvents)) == 1  # 50 s of failures
    reactor.advance(11)
    sink.transferEnded(record())
    first, second = warnings(sinkEvents)
    assert first["suppressed"] == 0 and "Network is unreachable" in first["error"]
    assert second["suppressed"] == 99 and second["failed"] == 101


# -- HTTP ----------------------------------------------------------------------------


class FakeBodyTransport:
    def __init__(self) -> None:
        self.stopped = False

    def stopProducing(self) -> None:
        self.stopped = True


@implementer(IResponse)
class FakeResponse:
    """An Agent response; ``body=None`` sends headers and then stalls."""

    version = (b"HTTP", 1, 1)
    phrase = b"Whatever"
    request = None
    previousResponse = None

    def __init__(self, code: int, body: bytes | None = b"", headers: Any = None) -> None:
        self.code = code
        self.headers = Headers(headers or {})
        self.body = body
        self.length = len(body) if body is not None else 10
        self.transport = FakeBodyTransport()

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(self.transport)
        if self.body is not None:
            protocol.dataReceived(self.body)
            protocol.connectionLost(Failure(ResponseDone()))

    def setPreviousResponse(self, response: Any) -> None:
        pass


class Request:
    def __init__(self, method: bytes, uri: bytes, headers: Headers, producer: Any) -> None:
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = producer.body
        self.cancelled = False
        self.deferred: defer.Deferred[Any] = defer.Deferred(self._cancel)

    def _cancel(self, d: Any) -> None:
        self.cancelled = True

    @property
    def event(self) -> dict[str, Any]:
        return decodeStrict(self.body)

    def answer(self, code: int, body: bytes | None = b"", headers: Any = None) -> FakeResponse:
        response = FakeResponse(code, body, headers)
        self.deferred.callback(response)
        return response

    def refuse(self) -> None:
        self.deferred.errback(ConnectionRefusedError("Connection refused"))


@implementer(IAgent)
class FakeAgent:
    def __init__(self) -> None:
        self.requests: list[Request] = []

    def request(
        self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None
    ) -> defer.Deferred[Any]:
        r = Request(method, uri, headers, bodyProducer)
        self.requests.append(r)
        return r.deferred

    def pending(self) -> list[Request]:
        return [r for r in self.requests if not r.deferred.called]


URL = "http://collector.example:8080/events"


def makeSink(**kwargs: Any) -> tuple[HTTPEventSink, Clock, FakeAgent]:
    clock = Clock()
    agent = FakeAgent()
    sink = HTTPEventSink(clock, URL, agent=agent, server="host-a", **kwargs)
    return sink, clock, agent


def balanced(sink: HTTPEventSink) -> bool:
    return sink.offered == (
        sink.delivered + sink.failed + sink.dropped + sink.queued + sink.inFlight
    )


def test_http_observer_call_only_enqueues() -> None:
    sink, clock, agent = makeSink()
    sink.start()
    rec = record('q"\\\udcfe.cfg')
    sink.transferStarted(rec)
    ended(rec)
    sink.transferEnded(rec)
    assert agent.requests == []  # nothing happens inside the server's call
    assert sink.queued == 2
    clock.advance(0)
    first, second = agent.requests
    assert (first.method, first.uri) == (b"POST", URL.encode())
    assert first.headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert first.event["type"] == 0 and second.event["type"] == 1
    assert first.event["message"] == "RRQ received"
    assert second.event["message"] == "transfer_complete"
    assert second.event["filename"] == 'q"\\\ufffd.cfg' and second.event["filename_hex"]
    first.answer(200)
    second.answer(204)
    assert (sink.delivered, sink.queued, sink.inFlight) == (2, 0, 0)
    assert balanced(sink)


def test_http_record_is_snapshotted_when_offered() -> None:
    sink, clock, agent = makeSink()
    sink.start()
    rec = record()
    sink.transferStarted(rec)
    ended(rec)  # the server goes on changing the record
    clock.advance(0)
    assert agent.requests[0].event["status"] == "start"


def test_http_at_most_maxInFlight() -> None:
    sink, clock, agent = makeSink(maxInFlight=4)
    sink.start()
    for _ in range(10):
        sink.transferStarted(record())
    clock.advance(0)
    assert (len(agent.pending()), sink.queued) == (4, 6)
    agent.pending()[0].answer(200)
    assert (len(agent.pending()), sink.queued) == (4, 5)
    while agent.pending():
        agent.pending()[0].answer(201)
    assert (sink.delivered, sink.queued, sink.inFlight) == (10, 0, 0)


def test_http_500_retried_with_exponential_backoff_then_failed(
    sinkEvents: list[dict[str, Any]],
) -> None:
    sink, clock, agent = makeSink(maxRetries=5, baseDelay=0.5, maxDelay=30.0)
    sink.start()
    sink.transferStarted(record())
    clock.advance(0)
    agent.requests[-1].answer(500, b"oops")
    for delay in (0.5, 1.0, 2.0, 4.0, 8.0):
        clock.advance(delay - 0.001)
        assert agent.pending() == []
        clock.advance(0.001)
        assert len(agent.pending()) == 1
        assert balanced(sink) and sink.inFlight == 1
        agent.requests[-1].answer(503)
    assert len(agent.requests) == 6
    assert (sink.delivered, sink.retried, sink.failed, sink.inFlight) == (0, 5, 1, 0)
    [warning] = warnings(sinkEvents)
    assert warning["error"] == "HTTP 503" and warning["target"] == URL
    assert balanced(sink)


def test_http_backoff_is_capped() -> None:
    sink, _, _ = makeSink(baseDelay=1.0, maxDelay=5.0)
    assert [sink.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


@pytest.mark.parametrize("code", [400, 401, 403, 404, 413, 301])
def test_http_client_errors_are_not_retried(code: int) -> None:
    sink, clock, agent = makeSink()
    sink.start()
    sink.transferStarted(record())
    clock.advance(0)
    agent.requests[0].answer(code)
    clock.advance(100)
    assert len(agent.requests) == 1
    assert (sink.failed, sink.retried) == (1, 0)


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504])
def test_http_retryable_answers(code: int) -> None:
    sink, clock, agent = makeSink()
    sink.start()
    sink.transferStarted(record())
    clock.advance(0)
    agent.requests[0].answer(code)
    clock.advance(0.5)
    agent.requests[1].answer(200)
    assert (sink.delivered, sink.retried, sink.failed) == (1, 1, 0)


def test_http_retry_after_is_honoured_up_to_maxDelay() -> None:
    sink, clock, agent = makeSink(maxDelay=30.0)
    sink.start()
    sink.transferStarted(record())
    clock.advance(0)
    agent.requests[0].answer(429, headers={b"Retry-After": [b"7"]})
    clock.advance(6.9)
    assert len(agent.requests) == 1
    clock.advance(0.1)
    agent.requests[1].answer(503, headers={b"Retry-After": [b"3600"]})
    clock.advance(29.9)
    assert len(agent.requests) == 2
    clock.advance(0.1)
    agent.requests[2].answer(503, headers={b"Retry-After": [b"Fri, 31 Dec 1999 23:59:59 GMT"]})
    clock.advance(2.0)  # third failure: the exponential 2 s
    agent.requests[3].answer(200)
    assert sink.delivered == 1


def test_http_connection_refused_is_retried() -> None:
    sink, clock, agent = makeSink(maxRetries=2)
    sink.start()
    sink.transferStarted(record())
    clock.advance(0)
    agent.requests[0].refuse()
    clock.advance(0.5)
    agent.requests[1].refuse()
    clock.advance(1.0)
    agent.requests[2].refuse()
    clock.advance(100)
    assert len(agent.requests) == 3
    assert (sink.retried, sink.failed) == (2, 1)


def test_http_timeout_cancels_and_retries(sinkEvents: list[dict[str, Any]]) -> None:
    sink, clock, agent = makeSink(timeout=10.0, maxRetries=1)
    sink.start()
    sink.transferStarted(record())
    clock.advance(0)
    clock.advance(10)
    assert agent.requests[0].cancelled
    clock.advance(0.5)
    assert len(agent.requests) == 2
    response = agent.requests[1].answer(200, body=None)  # headers, then the body stalls
    clock.advance(10)
    assert response.transport.stopped  # the stalled connection is aborted
    assert (sink.delivered, sink.retried, sink.failed) == (0, 1, 1)
    assert warnings(sinkEvents)[0]["error"] == "timed out after 10.0 s"


def test_http_queue_bound_drops_the_oldest(sinkEvents: list[dict[str, Any]]) -> None:
    sink, clock, agent = makeSink(maxQueue=100, maxInFlight=4)
    for n in range(10_000):
        sink.transferStarted(record(f"f{n}"))
        assert sink.queued <= 100
    assert (sink.queued, sink.dropped) == (100, 9_900)
    assert len(warnings(sinkEvents)) == 1
    sink.start()
    clock.advance(0)
    while agent.pending():
        agent.pending()[0].answer(200)
    assert [r.event["filename"] for r in agent.requests] == [f"f{n}" for n in range(9_900, 10_000)]
    assert (sink.delivered, sink.dropped) == (100, 9_900)
    assert balanced(sink)


def test_http_memory_bounded_while_receiver_hangs() -> None:
    sink, clock, agent = makeSink(maxQueue=1_000, maxInFlight=4)
    sink.start()
    for n in range(10_000):
        sink.transferStarted(record(f"f{n}"))
        if n % 100 == 0:
            clock.advance(0)
    clock.advance(0)
    assert (len(agent.pending()), sink.queued) == (4, 1_000)
    assert sink.dropped == 10_000 - 1_000 - 4
    assert balanced(sink)


def test_http_stop_drains_pending_events() -> None:
    sink, clock, agent = makeSink(drainTimeout=2.0)
    sink.start()
    for _ in range(6):
        sink.transferStarted(record())
    clock.advance(0)
    stopped = sink.stop()
    sink.transferEnded(record())  # after stop: dropped
    assert not stopped.called
    clock.advance(1)
    while agent.pending():
        agent.pending()[0].answer(200)
    assert stopped.called
    assert (sink.delivered, sink.dropped) == (6, 1)
    assert balanced(sink)


def test_http_stop_gives_up_after_drainTimeout(sinkEvents: list[dict[str, Any]]) -> None:
    sink, clock, agent = makeSink(drainTimeout=2.0, maxInFlight=2)
    sink.start()
    for _ in range(5):
        sink.transferStarted(record())
    clock.advance(0)
    agent.requests[0].answer(500)  # waits 0.5 s for a retry
    stopped = sink.stop()
    stopped2 = sink.stop()
    clock.advance(1.999)
    assert not stopped.called
    clock.advance(0.001)
    assert stopped.called and stopped2.called
    assert len(agent.requests) == 3  # two first tries, one retry
    assert [r.cancelled for r in agent.requests] == [False, True, True]
    assert (sink.delivered, sink.failed, sink.dropped) == (0, 0, 5)
    assert (sink.queued, sink.inFlight) == (0, 0)
    assert balanced(sink)
    assert any("not delivered" in e["log_format"] for e in warnings(sinkEvents))
    clock.advance(100)
    assert sink.retried == 1  # the retry at 0.5 s; nothing after the stop


def test_http_stop_before_start_still_sends_what_was_queued() -> None:
    sink, clock, agent = makeSink()
    sink.transferStarted(record())
    stopped = sink.stop()
    agent.requests[0].answer(200)
    assert stopped.called and sink.delivered == 1


def test_http_stop_with_nothing_pending_fires_at_once() -> None:
    sink, _, _ = makeSink()
    sink.start()
    assert sink.stop().called


def test_http_recovery_is_logged(sinkEvents: list[dict[str, Any]]) -> None:
    sink, clock, agent = makeSink(maxRetries=0)
    sink.start()
    sink.transferStarted(record())
    clock.advance(0)
    agent.requests[0].answer(404)
    sink.transferStarted(record())
    clock.advance(0)
    agent.requests[1].answer(200)
    assert any("works again" in e["log_format"] for e in sinkEvents)


def test_http_bad_urls_are_refused() -> None:
    for url in ("ftp://x/", "collector:8080", "http:///path"):
        with pytest.raises(ValueError):
            HTTPEventSink(Clock(), url)


def test_http_log_lines_hide_credentials(sinkEvents: list[dict[str, Any]]) -> None:
    clock = Clock()
    agent = FakeAgent()
    sink = HTTPEventSink(
        clock, "https://u:secret@collector:8443/in?token=abc", agent=agent, maxRetries=0
    )
    assert sink.target == "https://***@collector:8443/in"
    sink.start()
    sink.transferStarted(record())
    clock.advance(0)
    [request] = agent.requests
    assert request.uri == b"https://collector:8443/in?token=abc"
    assert request.headers.getRawHeaders(b"authorization") == [b"Basic dTpzZWNyZXQ="]
    request.deferred.errback(ConnectionRefusedError())
    assert sinkEvents and not [e for e in sinkEvents if "secret" in repr(e) or "abc" in repr(e)]


# -- the CA bundle -----------------------------------------------------------------


def makeCA(tmp_path: Path, count: int = 2) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pems = []
    for n in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ctftp test CA {n}")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        pems.append(cert.public_bytes(serialization.Encoding.PEM))
    path = tmp_path / "ca.pem"
    path.write_bytes(b"# private CAs\n" + b"\n".join(pems))
    return path


def test_loadTrustRoot_reads_every_certificate(tmp_path: Path) -> None:
    root = loadTrustRoot(os.fspath(makeCA(tmp_path, 2)))
    assert len(root._caCerts) == 2


def test_loadTrustRoot_errors(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        loadTrustRoot(os.fspath(tmp_path / "missing.pem"))
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here\n")
    with pytest.raises(ValueError, match="no PEM certificate"):
        loadTrustRoot(os.fspath(empty))
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="invalid certificate"):
        loadTrustRoot(os.fspath(broken))


def test_http_sink_with_a_ca_bundle_builds_its_agent(tmp_path: Path) -> None:
    sink = HTTPEventSink(Clock(), "https://collector/", caBundle=os.fspath(makeCA(tmp_path)))
    assert sink.stop().called
