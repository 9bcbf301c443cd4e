"""How the server takes what a read source's ``openRead`` gives: a file at
once or through a Deferred, a refusal or an unexpected error either way.
Each ends as it should and the server goes on serving."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import CLIENT, LISTEN, Recorder
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import capturedLogs

from ctftp import BytesFile, RequestRefused, ServerConfig, makeService
from ctftp.packets import OP_RRQ, Data, Error, decode, encodeAck, encodeRequest
from ctftp.sources import ReadRequest
from ctftp.testing import MemoryUDPReactor


class ScriptedSource:
    """An ``IReadSource`` that answers each request with ``answer(request)``."""

    def __init__(self, answer: Callable[[ReadRequest], Any]) -> None:
        self.answer = answer

    def openRead(self, request: ReadRequest) -> Any:
        return self.answer(request)


def serve(answer: Callable[[ReadRequest], Any], tmp_path: Any) -> tuple[Any, Recorder, Any]:
    reactor = MemoryUDPReactor()
    recorder = Recorder()
    config = ServerConfig(root_dir=(str(tmp_path),), listeners=("{}:{}".format(*LISTEN),))
    service = makeService(
        config, reactor=reactor, source=ScriptedSource(answer), observers=[recorder]
    )
    service.startService()
    return reactor, recorder, reactor.portAt(*LISTEN)


def unexpected(request: ReadRequest) -> Any:
    raise RuntimeError("database gone")


@pytest.mark.parametrize(
    "answer",
    [
        lambda request: BytesFile(b"hello"),
        lambda request: succeed(BytesFile(b"hello")),
    ],
    ids=["at once", "deferred"],
)
def test_a_file_given_at_once_or_later_is_served(tmp_path, answer):
    reactor, recorder, listener = serve(answer, tmp_path)
    listener.deliver(encodeRequest(OP_RRQ, "a.txt"), CLIENT)
    port = reactor.newestPort()
    assert [decode(d) for d, _ in port.take()] == [Data(1, b"hello")]
    port.deliver(encodeAck(1), CLIENT)
    assert [(r.status, r.bytes) for r in recorder.ended] == [("ok", 5)]


def test_a_file_that_arrives_later_is_served_then(tmp_path):
    later: Deferred[Any] = Deferred()
    reactor, recorder, listener = serve(lambda request: later, tmp_path)
    listener.deliver(encodeRequest(OP_RRQ, "a.txt"), CLIENT)
    assert reactor.newestPort() is listener and listener.take() == []
    later.callback(BytesFile(b"late"))
    port = reactor.newestPort()
    assert [decode(d) for d, _ in port.take()] == [Data(1, b"late")]


@pytest.mark.parametrize(
    "answer",
    [
        lambda request: (_ for _ in ()).throw(RequestRefused(2, "Not for you")),
        lambda request: fail(RequestRefused(2, "Not for you")),
    ],
    ids=["raised", "deferred"],
)
def test_a_refusal_gets_its_error(tmp_path, answer):
    reactor, recorder, listener = serve(answer, tmp_path)
    listener.deliver(encodeRequest(OP_RRQ, "a.txt"), CLIENT)
    assert [decode(d) for d, _ in listener.take()] == [Error(2, "Not for you")]
    assert [(r.status, r.message) for r in recorder.ended] == [("error", "access_denied")]


@pytest.mark.parametrize(
    "answer",
    [unexpected, lambda request: fail(RuntimeError("database gone"))],
    ids=["raised", "deferred"],
)
def test_an_unexpected_error_is_an_internal_error_and_the_server_goes_on(tmp_path, answer):
    answers = [answer, lambda request: BytesFile(b"next")]
    reactor, recorder, listener = serve(lambda request: answers.pop(0)(request), tmp_path)
    with capturedLogs() as events:
        listener.deliver(encodeRequest(OP_RRQ, "a.txt"), CLIENT)
    assert [decode(d) for d, _ in listener.take()] == [Error(0, "Internal error")]
    assert [(r.status, r.message) for r in recorder.ended] == [("error", "aborted")]
    [failure] = [e["log_failure"] for e in events if "log_failure" in e]
    assert failure.check(RuntimeError)
    listener.deliver(encodeRequest(OP_RRQ, "b.txt"), ("10.0.0.6", 40001))
    assert [decode(d) for d, _ in reactor.newestPort().take()] == [Data(1, b"next")]
    assert reactor.getDelayedCalls() != []  # the second transfer's timer


class BrokenFile(BytesFile):
    """A file whose ``size`` fails: the server's own step after the open raises."""

    @property
    def size(self) -> int:  # type: ignore[override]
        raise RuntimeError("size unknown")


@pytest.mark.parametrize("wrap", [lambda f: f, succeed], ids=["at once", "deferred"])
def test_an_error_after_the_open_is_an_internal_error_too(tmp_path, wrap):
    reactor, recorder, listener = serve(lambda request: wrap(BrokenFile(b"x")), tmp_path)
    with capturedLogs():
        listener.deliver(encodeRequest(OP_RRQ, "a.txt"), CLIENT)
    assert [decode(d) for d, _ in listener.take()] == [Error(0, "Internal error")]
    assert [(r.status, r.message) for r in recorder.ended] == [("error", "aborted")]
    assert reactor.getDelayedCalls() == []
