"""The HTTP relay against a real twisted.web origin on loopback.

ctftp runs in-process on the real reactor (``makeService``) and the shipped
:func:`ctftp.testing.fetch` client reads through it: plain, gzip-encoded and
chunked bodies, 404 and 500, an origin that trickles bytes slower than the
client's timeout, a connection dropped in mid-body, ETag revalidation (the
origin counts its requests), 200 clients at once on one URL, https with a
private CA and without trust. At the end, real clients (curl, tftp-hpa,
busybox) fetch byte-exact through ``twistd -n ctftp`` from a stdlib HTTP
origin in a thread.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.server
import os
import random
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import capturedLogs, formatEvent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

import ctftp
from ctftp.events import TransferRecord
from ctftp.relay import HTTPRelay, RelayService, RelaySource
from ctftp.sources import LocalFileSource
from ctftp.testing import TFTPClientError, fetch

from ._support import (
    SERVER_KIND,
    busybox_get,
    busybox_has_tftp,
    curl_get,
    hpa_get,
    need,
    run_client,
    running_server,
)

pytestmark = pytest.mark.integration

BIG = random.Random(5).randbytes(200_000)
SMALL = b"relayed config\n" * 40


def freePort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


@inlineCallbacks
def ended(recorder: Recorder, count: int = 1) -> Any:
    """The records once ``count`` transfers have ended (the last ACK reaches
    the server a moment after the client has its file)."""
    deadline = time.monotonic() + 10
    while len(recorder.ended) < count:
        assert time.monotonic() < deadline, "transfers did not end"
        yield sleep(0.01)
    return recorder.ended


# -- the origin ----------------------------------------------------------------------


class Origin(Resource):
    """Answers by the first path segment; counts requests per path."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []
        self.etag = b'"v1"'
        self.body = BIG

    def render_GET(self, request: Any) -> Any:
        path = request.path.decode()
        self.requests[path] += 1
        raw = request.requestHeaders.getAllRawHeaders()
        self.headers.append({k.decode().lower(): v[0].decode() for k, v in raw})
        kind = path.split("/")[1]
        handler = getattr(self, "do_" + kind.replace("-", "_"), None)
        if handler is None:
            request.setResponseCode(404)
            return b"no such thing"
        return handler(request)

    def do_plain(self, request: Any) -> Any:
        request.setHeader(b"Content-Length", str(len(self.body)).encode())
        return self.body

    def do_gzip(self, request: Any) -> Any:
        if b"gzip" not in (request.getHeader(b"accept-encoding") or b""):
            request.setHeader(b"Content-Length", str(len(self.body)).encode())
            return self.body
        packed = gzip.compress(self.body)
        request.setHeader(b"Content-Encoding", b"gzip")
        request.setHeader(b"Content-Length", str(len(packed)).encode())
        return packed

    def do_brotli(self, request: Any) -> Any:
        request.setHeader(b"Content-Encoding", b"br")
        return b"\x0b\x01\x80not really brotli\x03"

    def do_chunked(self, request: Any) -> Any:
        body = self.body

        def send(offset: int) -> None:
            if offset >= len(body):
                request.finish()
                return
            request.write(body[offset : offset + 7000])
            reactor.callLater(0, send, offset + 7000)

        send(0)
        return NOT_DONE_YET

    def do_status(self, request: Any) -> Any:
        request.setResponseCode(int(request.path.split(b"/")[2]))
        return b"an error page"

    def do_slow(self, request: Any) -> Any:
        """100 bytes every 0.2 s: a 512-byte block takes about a second."""
        body = SMALL * 2
        request.setHeader(b"Content-Length", str(len(body)).encode())

        def send(offset: int) -> None:
            if request.finished or offset >= len(body):
                return
            request.write(body[offset : offset + 100])
            reactor.callLater(0.2, send, offset + 100)

        send(0)
        return NOT_DONE_YET

    def do_drop(self, request: Any) -> Any:
        """A Content-Length of the whole body, half of it, then the connection drops."""
        request.setHeader(b"Content-Length", str(len(self.body)).encode())
        request.write(self.body[: len(self.body) // 2])
        reactor.callLater(0.2, request.transport.abortConnection)
        return NOT_DONE_YET

    def do_drop_chunked(self, request: Any) -> Any:
        request.write(self.body[:30000])
        reactor.callLater(0.2, request.transport.abortConnection)
        return NOT_DONE_YET

    def do_etag(self, request: Any) -> Any:
        request.setHeader(b"ETag", self.etag)
        request.setHeader(b"Cache-Control", b"no-cache")
        if request.getHeader(b"if-none-match") == self.etag:
            request.setResponseCode(304)
            return b""
        request.setHeader(b"Content-Length", str(len(self.body)).encode())
        return self.body

    def do_shared(self, request: Any) -> Any:
        """Slow enough that every client asks while the one download runs."""
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Length", str(len(SMALL)).encode())
        reactor.callLater(0.5, lambda: (request.write(SMALL), request.finish()))
        return NOT_DONE_YET


@pytest.fixture
def origin() -> Iterator[tuple[Origin, str]]:
    resource = Origin()
    site = Site(resource)
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    yield resource, f"http://127.0.0.1:{port.getHost().port}"
    port.stopListening()


class Recorder:
    def __init__(self) -> None:
        self.ended: list[TransferRecord] = []

    def transferStarted(self, record: TransferRecord) -> None:
        pass

    def transferEnded(self, record: TransferRecord) -> None:
        self.ended.append(record)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``serve(**config)`` starts ctftp in-process; returns (address, recorder, relay)."""
    services: list[Any] = []

    def start(relay: HTTPRelay | None = None, **overrides: Any) -> tuple[Any, Recorder, Any]:
        root = tmp_path / "root"
        root.mkdir(exist_ok=True)
        port = freePort()
        settings: dict[str, Any] = {
            "root_dir": str(root),
            "listeners": f"127.0.0.1:{port}",
            "file_log": False,
            "timeout_sec": 1,
            "max_retries": 3,
            "http_timeout_sec": 5,
        }
        settings.update(overrides)
        config = ctftp.ServerConfig(**settings)
        recorder = Recorder()
        source = None
        if relay is not None:
            source = RelaySource(LocalFileSource(config.root_dir), relay, config.fallback_url)
        service = ctftp.makeService(config, reactor=reactor, source=source, observers=[recorder])
        if relay is not None:
            RelayService(relay).setServiceParent(service)
        service.startService()
        services.append(service)
        found = [s for s in service if isinstance(s, RelayService)]
        return ("127.0.0.1", port), recorder, found[0].relay if found else None

    yield start
    for service in services:
        pytest_twisted.blockon(service.stopService())


def link(tmp_path: Path, name: str, target: str) -> None:
    path = tmp_path / "root" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


# -- bodies ---------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_plain_body_streams_with_tsize(serve: Any, origin: Any, tmp_path: Path) -> Any:
    resource, base = origin
    address, recorder, _ = serve()
    link(tmp_path, "fw.bin", f"{base}/plain/fw.bin")
    result = yield fetch(reactor, address, "fw.bin", options=(("tsize", "0"), ("blksize", "1428")))
    assert result.data == BIG
    assert result.options == {"tsize": str(len(BIG)), "blksize": "1428"}
    assert resource.headers[-1]["accept-encoding"] == "gzip"
    (record,) = yield ended(recorder)
    assert (record.status, record.message, record.bytes) == ("ok", "transfer_complete", len(BIG))
    assert record.localPath is None


@pytest_twisted.inlineCallbacks
def test_credentials_in_a_link_are_sent_as_basic_auth(
    serve: Any, origin: Any, tmp_path: Path
) -> Any:
    """``http://user:password@host/...`` (percent-encoded as in any URL):
    the origin gets an Authorization header, and no log line the password."""
    resource, base = origin
    address, recorder, _ = serve()
    host = base.partition("://")[2]
    link(tmp_path, "fw.bin", f"http://prov%40site:s3cr%3At@{host}/plain/fw.bin")
    with capturedLogs() as captured:
        result = yield fetch(reactor, address, "fw.bin")
    assert result.data == BIG
    expected = base64.b64encode(b"prov@site:s3cr:t").decode()
    assert resource.headers[-1]["authorization"] == f"Basic {expected}"
    assert not [e for e in captured if "s3cr" in formatEvent(e)]
    (record,) = yield ended(recorder)
    assert record.status == "ok"


@pytest_twisted.inlineCallbacks
def test_gzip_body_is_decoded(serve: Any, origin: Any, tmp_path: Path) -> Any:
    resource, base = origin
    address, _, _ = serve()
    link(tmp_path, "z.bin", f"{base}/gzip/z.bin")
    link(tmp_path, "raw.bin", f"http+nocompress://{base[7:]}/gzip/raw.bin")
    result = yield fetch(reactor, address, "z.bin", options=(("tsize", "0"),))
    assert result.data == BIG
    assert result.options == {"tsize": str(len(BIG))}  # decoded size, known after download
    result = yield fetch(reactor, address, "raw.bin")
    assert result.data == BIG
    assert resource.headers[-1]["accept-encoding"] == "identity"


@pytest_twisted.inlineCallbacks
def test_chunked_body(serve: Any, origin: Any, tmp_path: Path) -> Any:
    _, base = origin
    address, _, _ = serve()
    link(tmp_path, "c.bin", f"{base}/chunked/c.bin")
    result = yield fetch(reactor, address, "c.bin", options=(("tsize", "0"),))
    assert result.data == BIG and result.options == {"tsize": str(len(BIG))}


@pytest_twisted.inlineCallbacks
def test_netascii_through_the_relay(serve: Any, origin: Any, tmp_path: Path) -> Any:
    resource, base = origin
    resource.body = b"line one\nline two\r\n" * 100
    address, _, _ = serve()
    link(tmp_path, "t.txt", f"{base}/plain/t.txt")
    result = yield fetch(reactor, address, "t.txt", mode="netascii", options=(("tsize", "0"),))
    expected = resource.body.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
    assert result.data == expected
    assert result.options == {"tsize": str(len(expected))}


@pytest_twisted.inlineCallbacks
def test_404_and_410_are_not_found_500_is_relay_failed(
    serve: Any, origin: Any, tmp_path: Path
) -> Any:
    _, base = origin
    address, recorder, _ = serve()
    for code in (404, 410, 500, 403):
        link(tmp_path, f"e{code}", f"{base}/status/{code}")
    for code, expected in ((404, 1), (410, 1), (500, 0), (403, 0)):
        with pytest.raises(TFTPClientError) as caught:
            yield fetch(reactor, address, f"e{code}")
        assert caught.value.code == expected, code
    records = yield ended(recorder, 4)
    assert [r.message for r in records] == [
        "file_not_found",
        "file_not_found",
        "relay_failed",
        "relay_failed",
    ]


@pytest_twisted.inlineCallbacks
def test_unasked_content_encoding_is_relay_failed_and_logged(
    serve: Any, origin: Any, tmp_path: Path
) -> Any:
    _, base = origin
    address, recorder, _ = serve()
    link(tmp_path, "fw.bin", f"{base}/brotli/fw.bin")
    with capturedLogs() as captured, pytest.raises(TFTPClientError) as caught:
        yield fetch(reactor, address, "fw.bin")
    assert (caught.value.code, caught.value.message) == (
        0,
        "origin sent an unsupported Content-Encoding",
    )
    (record,) = yield ended(recorder)
    assert record.message == "relay_failed"
    assert [e for e in captured if "unsupported Content-Encoding br" in formatEvent(e)]


@pytest_twisted.inlineCallbacks
def test_refused_connection_is_relay_failed(serve: Any, tmp_path: Path) -> Any:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    address, recorder, _ = serve()
    link(tmp_path, "dead.bin", f"http://127.0.0.1:{dead}/x")
    with pytest.raises(TFTPClientError) as caught:
        yield fetch(reactor, address, "dead.bin")
    assert caught.value.code == 0 and "refused" in caught.value.message
    assert (recorder.ended[0].status, recorder.ended[0].message) == ("error", "relay_failed")


@pytest_twisted.inlineCallbacks
def test_slow_origin_does_not_time_the_client_out(serve: Any, origin: Any, tmp_path: Path) -> Any:
    _, base = origin
    # timeout_sec 0.3 with 2 retries: a server spending retries while the
    # origin trickles would give up after 0.9 s; a block takes about 1 s.
    address, recorder, _ = serve(timeout_sec=0.3, max_retries=2)
    link(tmp_path, "slow.bin", f"{base}/slow/x")
    started = time.monotonic()
    result = yield fetch(reactor, address, "slow.bin", options=(("tsize", "0"),))
    assert result.data == SMALL * 2
    assert result.options == {"tsize": str(len(SMALL * 2))}
    assert time.monotonic() - started > 2.0  # it really was slow
    (record,) = yield ended(recorder)
    assert (record.status, record.retransmits) == ("ok", 0)


@pytest_twisted.inlineCallbacks
def test_stalled_origin_fails_after_http_timeout(serve: Any, tmp_path: Path) -> Any:
    class Stall(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> Any:
            request.setHeader(b"Content-Length", b"5000")
            request.write(b"x" * 1000)
            return NOT_DONE_YET

    site = Site(Stall())
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        address, recorder, _ = serve(http_timeout_sec=0.5)
        link(tmp_path, "stall.bin", f"http://127.0.0.1:{port.getHost().port}/s")
        with pytest.raises(TFTPClientError) as caught:
            yield fetch(reactor, address, "stall.bin", timeout=2.0)
        assert caught.value.code == 0 and "timed out" in caught.value.message
        assert (recorder.ended[0].message, recorder.ended[0].bytes) == ("relay_failed", 512)
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_dropped_connection_never_completes(serve: Any, origin: Any, tmp_path: Path) -> Any:
    _, base = origin
    address, recorder, _ = serve()
    link(tmp_path, "drop.bin", f"{base}/drop/x")
    link(tmp_path, "dropc.bin", f"{base}/drop-chunked/x")
    for name in ("drop.bin", "dropc.bin"):
        with pytest.raises(TFTPClientError) as caught:
            yield fetch(reactor, address, name)
        assert caught.value.code == 0, name
    assert [(r.status, r.message, r.errorCode) for r in recorder.ended] == [
        ("error", "relay_failed", 0),
        ("error", "relay_failed", 0),
    ]
    assert recorder.ended[0].bytes < len(BIG) // 2 + 512


@pytest_twisted.inlineCallbacks
def test_etag_revalidation_reuses_the_body(serve: Any, origin: Any, tmp_path: Path) -> Any:
    resource, base = origin
    address, _, relay = serve()
    link(tmp_path, "e.bin", f"{base}/etag/e.bin")
    for _ in range(3):
        result = yield fetch(reactor, address, "e.bin")
        assert result.data == BIG
    # Three requests reached the origin (no-cache: each use is revalidated),
    # but only the first got a body: the other two were 304s.
    assert resource.requests["/etag/e.bin"] == 3
    assert [h.get("if-none-match") for h in resource.headers] == [None, '"v1"', '"v1"']
    resource.etag, resource.body = b'"v2"', b"new body"
    result = yield fetch(reactor, address, "e.bin")
    assert result.data == b"new body"
    assert relay.cache.get(f"{base}/etag/e.bin").body.length == len(b"new body")


@pytest_twisted.inlineCallbacks
def test_200_concurrent_clients_one_origin_request(serve: Any, origin: Any, tmp_path: Path) -> Any:
    resource, base = origin
    address, recorder, relay = serve(max_connections=500)
    link(tmp_path, "cfg.xml", f"{base}/shared/cfg.xml")
    results = yield DeferredList(
        [fetch(reactor, address, "cfg.xml", timeout=2.0) for _ in range(200)],
        consumeErrors=True,
    )
    assert all(ok for ok, _ in results), [r for ok, r in results if not ok][:3]
    assert all(r.data == SMALL for _, r in results)
    assert resource.requests["/shared/cfg.xml"] == 1
    assert relay.originRequests == 1
    records = yield ended(recorder, 200)
    assert {r.status for r in records} == {"ok"}


@pytest_twisted.inlineCallbacks
def test_fallback_url_and_local_files_first(serve: Any, origin: Any, tmp_path: Path) -> Any:
    resource, base = origin
    address, _, _ = serve(fallback_url=f"{base}/plain/")
    (tmp_path / "root" / "local.txt").write_bytes(b"on disk")
    result = yield fetch(reactor, address, "local.txt")
    assert result.data == b"on disk"
    result = yield fetch(reactor, address, "/phones/SEP 01.cnf.xml")
    assert result.data == BIG
    assert "/plain/phones/SEP%2001.cnf.xml" in resource.requests


@pytest_twisted.inlineCallbacks
def test_http_relay_off_refuses_links(serve: Any, origin: Any, tmp_path: Path) -> Any:
    resource, base = origin
    address, recorder, relay = serve(http_relay=False, fallback_url=f"{base}/plain/")
    assert relay is None
    link(tmp_path, "fw.bin", f"{base}/plain/fw.bin")
    with pytest.raises(TFTPClientError) as caught:
        yield fetch(reactor, address, "fw.bin")
    assert caught.value.code == 2
    with pytest.raises(TFTPClientError) as caught:
        yield fetch(reactor, address, "missing.bin")
    assert caught.value.code == 1
    assert not resource.requests


@pytest_twisted.inlineCallbacks
def test_disk_cache_serves_after_restart(serve: Any, origin: Any, tmp_path: Path) -> Any:
    resource, base = origin
    cache = tmp_path / "cache"
    link(tmp_path, "fw.bin", f"{base}/max-age/fw.bin")

    def maxAge(request: Any) -> Any:
        request.setHeader(b"Cache-Control", b"max-age=600")
        request.setHeader(b"Content-Length", str(len(resource.body)).encode())
        return resource.body

    resource.do_max_age = maxAge  # type: ignore[attr-defined]
    address, _, relay = serve(cache_dir=str(cache))
    result = yield fetch(reactor, address, "fw.bin")
    assert result.data == BIG
    key = hashlib.sha256(f"{base}/max-age/fw.bin".encode()).hexdigest()
    assert (cache / f"{key}.body").read_bytes() == BIG
    assert (cache / f"{key}.json").exists()
    assert not [p for p in os.listdir(cache) if p.endswith(".part")]
    # A new relay on the same folder (a restart) serves it without the origin.
    second = HTTPRelay(reactor, cacheDir=str(cache), timeout=5)
    address2, _, _ = serve(relay=second)
    result = yield fetch(reactor, address2, "fw.bin")
    assert result.data == BIG
    assert resource.requests["/max-age/fw.bin"] == 1
    assert second.hits == 1


# -- https ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")
@pytest_twisted.inlineCallbacks
def test_https_checks_the_certificate(serve: Any, origin: Any, tmp_path: Path) -> Any:
    from .test_events_delivery import makePKI, tlsOptions

    resource, _ = origin
    bundle, serverPEM = makePKI(tmp_path)
    site = Site(resource)
    site.noisy = False
    port = reactor.listenSSL(0, site, tlsOptions(serverPEM("127.0.0.1")), interface="127.0.0.1")
    try:
        base = f"https://127.0.0.1:{port.getHost().port}"
        link(tmp_path, "tls.bin", f"{base}/plain/tls.bin")
        address, recorder, _ = serve()
        with pytest.raises(TFTPClientError) as caught:
            yield fetch(reactor, address, "tls.bin")
        assert caught.value.code == 0 and "TLS" in caught.value.message
        trusted = HTTPRelay(reactor, caBundle=str(bundle), timeout=5)
        address2, _, _ = serve(relay=trusted)
        result = yield fetch(reactor, address2, "tls.bin")
        assert result.data == BIG
    finally:
        yield port.stopListening()


# -- real clients through twistd -----------------------------------------------------------

CLIENT_BODY = random.Random(9).randbytes(150_001)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 -- the stdlib's name
        if self.path.startswith("/chunked/"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for offset in range(0, len(CLIENT_BODY), 10000):
                piece = CLIENT_BODY[offset : offset + 10000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path.startswith("/plain/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(CLIENT_BODY)))
            self.end_headers()
            self.wfile.write(CLIENT_BODY)
            return
        self.send_error(404)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def threadedOrigin(tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """An origin in a thread (a test may block its reactor on a real client)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.protocol_version = "HTTP/1.1"
    _Handler.protocol_version = "HTTP/1.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'http' if tls is None else 'https'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def threaded_origin() -> Iterator[str]:
    with threadedOrigin() as base:
        yield base


@pytest.mark.skipif(SERVER_KIND != "ctftp", reason="tests ctftp's HTTP relay")
@pytest.mark.parametrize("client", ["curl", "tftp-hpa", "busybox"])
@pytest.mark.parametrize("kind", ["plain", "chunked"])
def test_real_clients_through_twistd(
    tmp_path: Path, threaded_origin: str, client: str, kind: str
) -> None:
    program = {"curl": "curl", "tftp-hpa": "tftp", "busybox": "busybox"}[client]
    need(program)
    if client == "busybox" and not busybox_has_tftp():
        pytest.skip("this busybox has no tftp applet")
    root = tmp_path / "root"
    root.mkdir()
    (root / "fw.bin").symlink_to(f"{threaded_origin}/{kind}/fw.bin")
    (root / "images").symlink_to(f"{threaded_origin}/{kind}/images/")
    out = tmp_path / "out"
    out.mkdir()
    with running_server(tmp_path / "run", root, {"file_log": "false"}) as server:
        for name in ("fw.bin", "images/a/b.bin"):
            target = out / f"{client}-{kind}-{name.replace('/', '_')}"
            argv = {
                "curl": curl_get,
                "tftp-hpa": hpa_get,
                "busybox": busybox_get,
            }[client](server.host, server.port, name, target)
            result = run_client(argv)
            assert result.returncode == 0, result.describe() + server.output()[-3000:]
            assert target.read_bytes() == CLIENT_BODY, result.describe()


@pytest.mark.skipif(SERVER_KIND != "ctftp", reason="tests ctftp's HTTP relay")
def test_https_link_through_twistd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """twistd's ctftp imports its reactor without TLS (``importReactorWithoutTLS``);
    an https link is still fetched, certificate checked, once one is asked for."""
    need("curl")
    from .test_events_delivery import makePKI

    bundle, serverPEM = makePKI(tmp_path)
    pem = tmp_path / "origin.pem"
    pem.write_bytes(serverPEM("127.0.0.1"))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(pem)
    # The server process trusts the test CA as its system CAs (OpenSSL's variable).
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    root = tmp_path / "root"
    root.mkdir()
    with threadedOrigin(tls) as base:
        (root / "fw.bin").symlink_to(f"{base}/plain/fw.bin")
        with running_server(tmp_path / "run", root, {"file_log": "false"}) as server:
            target = tmp_path / "fw.bin"
            result = run_client(curl_get(server.host, server.port, "fw.bin", target))
            assert result.returncode == 0, result.describe() + server.output()[-3000:]
            assert target.read_bytes() == CLIENT_BODY
