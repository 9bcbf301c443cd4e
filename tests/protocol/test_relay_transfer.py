"""Relayed reads in memory: a fake HTTP agent, a MemoryUDPReactor clock.

The agent's responses are fed by hand, byte by byte when it matters, so each
test sees exactly when DATA goes out relative to the bytes the origin has
sent: a block leaves once its bytes are there; the last (short) block only
once the body is known complete; while the next block is awaited the timer
neither resends nor spends retries, but blocks already sent are resent as
usual; a stall, a truncated body or a failure mid-transfer ends with ERROR 0
and ``relay_failed``. Cache expiry and revalidation run on the same clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import CLIENT, Data, Error, Harness, OptionAck
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web._newclient import Response
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from zope.interface import implementer

from ctftp.packets import decode, encodeAck, encodeError
from ctftp.relay import HTTPRelay, RelaySource
from ctftp.sources import LocalFileSource

URL = "http://origin.test/fw.bin"


class Pending:
    """One request the fake agent received."""

    def __init__(self, method: bytes, uri: bytes, headers: Headers) -> None:
        self.method = method
        self.uri = uri
        self.headers = headers
        self.d: Deferred[Any] = Deferred()
        self.response: Response | None = None

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def respond(
        self, code: int = 200, headers: dict[str, str] | None = None, length: int | None = None
    ) -> Response:
        raw = Headers({k: [v] for k, v in (headers or {}).items()})
        response = Response((b"HTTP", 1, 1), code, b"X", raw, StringTransport())
        if length is not None:
            response.length = length
        self.response = response
        self.d.callback(response)
        return response

    def send(self, data: bytes) -> None:
        assert self.response is not None
        self.response._bodyDataReceived(data)

    def end(self, reason: Failure | None = None) -> None:
        assert self.response is not None
        self.response._bodyDataFinished(reason or Failure(ResponseDone()))

    def whole(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.respond(200, headers, len(body))
        self.send(body)
        self.end()


@implementer(IAgent)
class FakeAgent:
    def __init__(self) -> None:
        self.requests: list[Pending] = []

    def request(
        self, method: bytes, uri: bytes, headers: Headers | None = None, bodyProducer: Any = None
    ) -> Deferred[Any]:
        pending = Pending(method, uri, headers or Headers())
        self.requests.append(pending)
        return pending.d

    @property
    def last(self) -> Pending:
        return self.requests[-1]


@pytest.fixture
def relayed(harness: Callable[..., Harness]) -> Callable[..., tuple[Harness, FakeAgent, HTTPRelay]]:
    def make(
        target: str = URL, name: str = "fw.bin", relayArgs: dict[str, Any] | None = None, **kw: Any
    ) -> tuple[Harness, FakeAgent, HTTPRelay]:
        h = harness(**kw)
        agent = FakeAgent()
        args: dict[str, Any] = {"timeout": 1000.0, "agent": agent}
        args.update(relayArgs or {})
        relay = HTTPRelay(h.reactor, **args)
        local = LocalFileSource(h.config.root_dir, protectSidecars=False)
        h.server.source = RelaySource(local, relay, h.config.fallback_url)
        if target:
            (h.root / name).symlink_to(target)
        return h, agent, relay

    return make


def packets(port: Any) -> list[Any]:
    return [decode(d) for d, _ in port.take()]


def test_blocks_go_out_as_bytes_arrive(relayed: Any) -> None:
    h, agent, _ = relayed()
    h.request("fw.bin", options=(("tsize", "0"),))
    assert h.listenerReplies() == []  # waiting for the origin's headers
    agent.last.respond(200, {"Content-Length": "1200"}, 1200)
    port = h.transferPort()
    (oack,) = packets(port)
    assert isinstance(oack, OptionAck) and dict(oack.options) == {"tsize": "1200"}
    port.deliver(encodeAck(0), CLIENT)
    assert packets(port) == []  # no bytes yet: nothing to send
    h.reactor.advance(100)  # timeout 1 s, 3 retries: nothing in flight, nothing spent
    assert port.listening and packets(port) == []
    agent.last.send(b"a" * 600)
    (data,) = packets(port)
    assert (data.block, data.payload) == (1, b"a" * 512)
    h.reactor.advance(1)  # a block in flight is resent by the timer as usual
    assert [p.block for p in packets(port)] == [1]
    port.deliver(encodeAck(1), CLIENT)
    assert packets(port) == []  # 88 bytes of block 2 are there, not 512
    h.reactor.advance(100)
    assert port.listening and packets(port) == []
    agent.last.send(b"b" * 600)
    (data,) = packets(port)
    assert (data.block, data.payload) == (2, b"a" * 88 + b"b" * 424)
    port.deliver(encodeAck(2), CLIENT)
    # 176 bytes are there, all the body promised, but the body has not ended:
    # the short final block waits for the end.
    assert packets(port) == []
    agent.last.end()
    (data,) = packets(port)
    assert (data.block, data.payload) == (3, b"b" * 176)
    port.deliver(encodeAck(3), CLIENT)
    assert not port.listening
    (record,) = h.recorder.ended
    assert (record.status, record.bytes, record.tsize, record.retransmits) == (
        "ok",
        1200,
        1200,
        1,
    )


def test_windowed_transfer_waits_mid_window(relayed: Any) -> None:
    h, agent, _ = relayed()
    h.request("fw.bin", options=(("windowsize", "4"),))
    agent.last.respond(200, {}, 2048 + 100)
    port = h.transferPort()
    packets(port)  # OACK
    port.deliver(encodeAck(0), CLIENT)
    agent.last.send(bytes(1100))
    assert [p.block for p in packets(port)] == [1, 2]
    agent.last.send(bytes(1048))
    assert [p.block for p in packets(port)] == [3, 4]  # the rest of the window
    port.deliver(encodeAck(4), CLIENT)
    assert packets(port) == []  # block 5 is the short last one: body not ended
    agent.last.end()
    (data,) = packets(port)
    assert (data.block, len(data.payload)) == (5, 100)
    port.deliver(encodeAck(5), CLIENT)
    assert h.recorder.ended[0].status == "ok"


def test_dead_client_is_given_up_while_a_read_is_pending(relayed: Any) -> None:
    h, agent, _ = relayed()
    h.request("fw.bin", options=(("windowsize", "2"),))
    agent.last.respond(200, {}, 5000)
    port = h.transferPort()
    port.deliver(encodeAck(0), CLIENT)
    agent.last.send(bytes(600))  # block 1 goes, block 2 is awaited
    for _ in range(10):
        h.reactor.advance(1)
    sent = [p for p in packets(port) if isinstance(p, Data)]
    assert [p.block for p in sent] == [1] * 4  # 1 + max_retries sends
    assert not port.listening
    assert h.recorder.ended[0].message == "timeout"


@pytest.mark.parametrize(
    "ending",
    [
        pytest.param(lambda: Failure(ResponseDone()), id="clean-close-short"),
        pytest.param(lambda: Failure(ResponseFailed([Failure(ConnectionError())])), id="dropped"),
    ],
)
def test_truncated_body_is_never_served_whole(relayed: Any, ending: Any) -> None:
    h, agent, _ = relayed()
    h.request("fw.bin")
    agent.last.respond(200, {}, 1200)
    port = h.transferPort()
    agent.last.send(bytes(1000))
    (data,) = packets(port)
    port.deliver(encodeAck(1), CLIENT)
    assert packets(port) == []  # only 488 bytes of block 2 so far
    agent.last.end(ending())
    sent = packets(port)
    assert all(not isinstance(p, Data) or len(p.payload) == 512 for p in sent)
    assert isinstance(sent[-1], Error) and sent[-1].code == 0
    assert not port.listening
    (record,) = h.recorder.ended
    assert (record.status, record.message, record.errorCode) == ("error", "relay_failed", 0)


def test_stall_fails_the_transfer_after_http_timeout(relayed: Any) -> None:
    h, agent, _ = relayed(relayArgs={"timeout": 5.0})
    h.request("fw.bin")
    agent.last.respond(200, {}, 5000)
    port = h.transferPort()
    agent.last.send(bytes(600))
    packets(port)
    port.deliver(encodeAck(1), CLIENT)
    h.reactor.advance(4.9)
    assert port.listening
    h.reactor.advance(0.2)  # 5 s without a byte
    (error,) = packets(port)
    assert isinstance(error, Error) and error.code == 0 and "timed out" in error.message
    assert h.recorder.ended[0].message == "relay_failed"


def test_a_trickle_keeps_the_transfer_alive(relayed: Any) -> None:
    h, agent, _ = relayed(relayArgs={"timeout": 5.0})
    h.request("fw.bin")
    agent.last.respond(200, {}, 1000)
    port = h.transferPort()
    for _ in range(50):  # 4 s apart: never a 5 s stall, far past 1 s x 3 retries
        h.reactor.advance(4)
        agent.last.send(b"x" * 20)
        for packet in packets(port):
            port.deliver(encodeAck(packet.block), CLIENT)
    agent.last.end()
    for packet in packets(port):
        port.deliver(encodeAck(packet.block), CLIENT)
    (record,) = h.recorder.ended
    assert (record.status, record.bytes, record.retransmits) == ("ok", 1000, 0)


def test_no_answer_from_the_origin_times_out(relayed: Any) -> None:
    h, agent, _ = relayed(relayArgs={"timeout": 5.0})
    h.request("fw.bin")
    h.reactor.advance(5)
    (error,) = h.listenerReplies()
    assert isinstance(error, Error) and error.code == 0 and "timed out" in error.message
    assert h.recorder.ended[0].message == "relay_failed"


def test_client_error_mid_transfer_leaves_the_download_going(relayed: Any) -> None:
    h, agent, relay = relayed()
    h.request("fw.bin")
    agent.last.respond(200, {"Cache-Control": "max-age=60"}, 1200)
    port = h.transferPort()
    agent.last.send(bytes(512))
    packets(port)
    port.deliver(encodeAck(1), CLIENT)
    port.deliver(encodeError(0, "bored"), CLIENT)
    assert not port.listening and h.recorder.ended[0].message == "client_error"
    agent.last.send(bytes(688))
    agent.last.end()
    assert URL in relay.cache and relay.cache.get(URL).body.length == 1200


def test_content_length_over_relay_max_bytes_is_error_3(relayed: Any) -> None:
    h, agent, _ = relayed(relayArgs={"maxBytes": 1000})
    h.request("fw.bin")
    agent.last.respond(200, {}, 1001)
    (error,) = h.listenerReplies()
    assert isinstance(error, Error) and error.code == 3
    assert h.recorder.ended[0].message == "relay_failed"


def test_chunked_body_growing_over_relay_max_bytes_is_error_3(relayed: Any) -> None:
    h, agent, _ = relayed(relayArgs={"maxBytes": 1000})
    h.request("fw.bin")
    agent.last.respond(200)  # no length: downloaded first
    agent.last.send(bytes(900))
    assert h.listenerReplies() == []
    agent.last.send(bytes(200))
    (error,) = h.listenerReplies()
    assert isinstance(error, Error) and error.code == 3


def test_unknown_length_is_downloaded_first(relayed: Any) -> None:
    h, agent, _ = relayed()
    h.request("fw.bin", options=(("tsize", "0"),))
    agent.last.respond(200)
    agent.last.send(b"x" * 700)
    assert len(h.reactor.opened) == 1  # no transfer yet
    agent.last.end()
    port = h.transferPort()
    (oack,) = packets(port)
    assert dict(oack.options) == {"tsize": "700"}
    assert h.run(port) == b"x" * 700


# -- caching on the reactor's clock -------------------------------------------------


def fetchOnce(h: Harness, client: tuple[str, int] = CLIENT, name: str = "fw.bin") -> bytes:
    """Read ``name`` when it can be served at once (local or cached), else b""."""
    opened = len(h.reactor.opened)
    h.request(name, client=client)
    if len(h.reactor.opened) == opened:
        return b""
    return h.run(h.transferPort(), client=client)


def test_max_age_expiry_then_etag_revalidation(relayed: Any) -> None:
    h, agent, relay = relayed()
    h.reactor.advance(1000)
    h.request("fw.bin")
    agent.last.whole(b"v1" * 300, {"Cache-Control": "max-age=60", "ETag": '"one"'})
    assert h.run(h.transferPort()) == b"v1" * 300
    h.reactor.advance(59)
    assert fetchOnce(h, ("10.0.0.6", 1)) == b"v1" * 300
    assert len(agent.requests) == 1 and relay.hits == 1
    h.reactor.advance(2)  # 61 s: stale
    h.request("fw.bin", client=("10.0.0.7", 1))
    assert len(agent.requests) == 2
    assert agent.last.header("if-none-match") == '"one"'
    agent.last.respond(304, {"Cache-Control": "max-age=60"})
    assert h.run(h.transferPort(), client=("10.0.0.7", 1)) == b"v1" * 300
    h.reactor.advance(30)  # fresh again from the 304
    assert fetchOnce(h, ("10.0.0.8", 1)) == b"v1" * 300
    assert len(agent.requests) == 2


def test_s_maxage_wins_and_expires_is_relative_to_date(relayed: Any) -> None:
    h, agent, relay = relayed()
    h.request("fw.bin")
    agent.last.whole(
        b"x" * 10,
        {
            "Cache-Control": "max-age=5, s-maxage=100",
            "Last-Modified": "Mon, 01 Dec 2025 10:00:00 GMT",
        },
    )
    h.run(h.transferPort())
    h.reactor.advance(99)
    assert fetchOnce(h, ("10.0.0.6", 1)) == b"x" * 10 and len(agent.requests) == 1
    h.reactor.advance(2)
    h.request("fw.bin", client=("10.0.0.7", 1))
    assert agent.last.header("if-modified-since") == "Mon, 01 Dec 2025 10:00:00 GMT"
    # A 200 this time: the new body replaces the old one. Expires is 30 s
    # after Date, whatever the two clocks say.
    agent.last.whole(
        b"y" * 10,
        {
            "Date": "Mon, 01 Dec 2025 10:00:00 GMT",
            "Expires": "Mon, 01 Dec 2025 10:00:30 GMT",
        },
    )
    assert h.run(h.transferPort(), client=("10.0.0.7", 1)) == b"y" * 10
    h.reactor.advance(29)
    assert fetchOnce(h, ("10.0.0.8", 1)) == b"y" * 10 and len(agent.requests) == 2
    h.reactor.advance(2)
    h.request("fw.bin", client=("10.0.0.9", 1))
    assert len(agent.requests) == 3


@pytest.mark.parametrize(
    "headers",
    [
        {"Cache-Control": "no-store, max-age=600"},
        {"Cache-Control": "private, max-age=600"},
        {"Cache-Control": "max-age=600", "Vary": "*"},
        {},  # no freshness, no validator: nothing to revalidate with
    ],
)
def test_responses_that_are_not_stored(relayed: Any, headers: dict[str, str]) -> None:
    h, agent, relay = relayed()
    for n in range(2):
        h.request("fw.bin", client=("10.0.0.6", n))
        agent.last.whole(b"z" * 10, headers)
        assert h.run(h.transferPort(), client=("10.0.0.6", n)) == b"z" * 10
    assert len(agent.requests) == 2 and len(relay.cache) == 0


def test_nocache_link_bypasses_the_cache(relayed: Any) -> None:
    h, agent, relay = relayed(target="http+nocache+bogus://origin.test/fw.bin")
    for n in range(2):
        h.request("fw.bin", client=("10.0.0.6", n))
        agent.last.whole(b"z" * 10, {"Cache-Control": "max-age=600"})
        assert h.run(h.transferPort(), client=("10.0.0.6", n)) == b"z" * 10
    assert len(agent.requests) == 2 and len(relay.cache) == 0
    assert agent.last.uri == b"http://origin.test/fw.bin"


def test_gone_drops_the_cached_entry(relayed: Any) -> None:
    h, agent, relay = relayed()
    h.request("fw.bin")
    agent.last.whole(b"x" * 10, {"Cache-Control": "no-cache", "ETag": '"a"'})
    h.run(h.transferPort())
    assert URL in relay.cache
    h.request("fw.bin", client=("10.0.0.6", 1))
    agent.last.respond(410)
    (error,) = h.listenerReplies()
    assert isinstance(error, Error) and error.code == 1
    assert URL not in relay.cache


def test_many_clients_at_once_share_one_request(relayed: Any) -> None:
    h, agent, relay = relayed(max_connections=1000)
    clients = [(f"10.1.0.{n // 250 + 1}", 1000 + n) for n in range(500)]
    for client in clients:
        h.request("fw.bin", client=client)
    assert len(agent.requests) == 1
    body = bytes(range(256)) * 9
    agent.last.respond(200, {"Cache-Control": "no-store"}, len(body))
    agent.last.send(body[:1000])  # readers stream from the shared download
    agent.last.send(body[1000:])
    agent.last.end()
    ports = {port.protocol.client: port for port in h.reactor.opened[1:]}
    assert len(ports) == 500
    for client in clients:
        assert h.run(ports[client], client=client) == body
    assert len(agent.requests) == 1 and relay.shared == 499
    assert {r.status for r in h.recorder.ended} == {"ok"}


def test_url_symlink_folder_maps_the_rest_of_the_path(relayed: Any) -> None:
    h, agent, _ = relayed(target="https+nocompress://origin.test/base/", name="phones")
    h.request("/phones/a b/SEP%1.cnf.xml")
    assert agent.last.uri == b"https://origin.test/base/a%20b/SEP%251.cnf.xml"
    assert agent.last.header("accept-encoding") == "identity"


def test_fallback_url(relayed: Any) -> None:
    h, agent, _ = relayed(target="", fallback_url="http://origin.test/tftp")
    h.write("local.bin", b"local")
    assert fetchOnce(h, name="local.bin") == b"local"
    assert agent.requests == []
    h.request("sub/missing.bin", client=("10.0.0.6", 1))
    assert agent.last.uri == b"http://origin.test/tftp/sub/missing.bin"
    agent.last.respond(404)
    (error,) = h.listenerReplies()
    assert isinstance(error, Error) and error.code == 1


# -- ReadTransfer with any asynchronous IReadFile ---------------------------------------


class Wire:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, packet: bytes, addr: Any) -> None:
        self.sent.append(packet)


def transfer(read: Callable[[int], Any], **kw: Any) -> tuple[Any, Wire, list[Any]]:
    from twisted.internet.task import Clock

    from ctftp.transfer import ReadTransfer

    outcomes: list[Any] = []
    wire = Wire()

    class File:
        path = None
        size = None

        def close(self) -> None:
            outcomes.append("closed")

    t = ReadTransfer(
        clock=Clock(),
        client=CLIENT,
        file=File(),  # type: ignore[arg-type]
        read=read,
        blksize=4,
        windowsize=kw.get("windowsize", 1),
        timeout=1.0,
        maxRetries=2,
        oack=(),
        onDone=lambda _, outcome: outcomes.append(outcome),
    )
    t.transport = wire  # type: ignore[assignment]
    t.startProtocol()
    return t, wire, outcomes


def test_deferreds_that_already_fired_and_bytes_likes_are_taken_at_once() -> None:
    from twisted.internet.defer import succeed

    chunks = [succeed(b"abcd"), bytearray(b"efgh"), succeed(bytearray(b"ij"))]
    t, wire, outcomes = transfer(lambda n: chunks.pop(0), windowsize=4)
    assert [decode(p).payload for p in wire.sent] == [b"abcd", b"efgh", b"ij"]
    t.datagramReceived(encodeAck(3), CLIENT)
    assert outcomes == ["closed", ("ok", "transfer_complete", None)]


def test_a_read_failing_at_once_or_later_ends_with_its_error() -> None:
    from twisted.internet.defer import fail

    from ctftp.relay import relayFailed

    t, wire, outcomes = transfer(lambda n: fail(relayFailed("gone")))
    (error,) = [decode(p) for p in wire.sent]
    assert isinstance(error, Error) and (error.code, error.message) == (0, "gone")
    assert outcomes[-1] == ("error", "relay_failed", 0)

    later: Deferred[bytes] = Deferred()
    t, wire, outcomes = transfer(lambda n: later)
    assert wire.sent == []
    later.errback(OSError("disk"))
    (error,) = [decode(p) for p in wire.sent]
    assert isinstance(error, Error) and error.code == 0
    assert outcomes[-1] == ("error", "aborted", 0)


def test_closing_cancels_the_pending_read() -> None:
    cancelled: list[bool] = []
    pending: Deferred[bytes] = Deferred(lambda d: cancelled.append(True))
    t, wire, outcomes = transfer(lambda n: pending)
    t.stop(("error", "aborted", None))
    assert cancelled == [True] and outcomes == ["closed", ("error", "aborted", None)]
