"""Event delivery and /metrics on the real reactor, over loopback sockets.

A real UDP receiver and a real twisted.web HTTP receiver get the events of
records driven by hand and of transfers through a real ctftp server; HTTP
receivers that hang, refuse connections or answer 500 show that transfers
are not held up and that the counters say what happened; an HTTPS receiver
with a private CA shows certificate checking; ``/metrics`` is scraped over
TCP while transfers happen.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from twisted.logger import capturedLogs, formatEvent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

import ctftp
from ctftp.events import LogEventObserver, TransferRecord
from ctftp.metrics import CONTENT_TYPE, Metrics
from ctftp.metricspage import metricsSite
from ctftp.sinks import HTTPEventSink, UDPEventSink, eventOf
from ctftp.testing import TFTPClientError, fetch

WEIRD_RAW = b'a"b\\c\xff\xfe.cfg'
WEIRD = WEIRD_RAW.decode("utf-8", "surrogateescape")


def freePort(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def waitFor(predicate: Callable[[], bool], timeout: float = 10.0) -> Deferred[None]:
    @inlineCallbacks
    def poll() -> Any:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out waiting"
            yield deferLater(reactor, 0.01, lambda: None)

    return poll()


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


def onTheWire(event: dict[str, Any]) -> dict[str, Any]:
    """What a collector parses for ``event``: undecodable bytes as U+FFFD plus ``_hex``."""
    out: dict[str, Any] = {}
    for key, value in event.items():
        if isinstance(value, str) and any(0xDC80 <= ord(c) <= 0xDCFF for c in value):
            out[key] = "".join("\ufffd" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in value)
            out[key + "_hex"] = value.encode("utf-8", "surrogateescape").hex()
        else:
            out[key] = value
    return out


def parseStrict(data: bytes) -> dict[str, Any]:
    event = json.loads(data.decode("utf-8"))
    json.dumps(event, ensure_ascii=False).encode("utf-8")  # no lone surrogates
    return event


# -- receivers -------------------------------------------------------------------------


class UDPReceiver(DatagramProtocol):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.events.append(parseStrict(datagram))


class HTTPReceiver(Resource):
    """Collects POSTed events; ``mode`` is ``ok``, ``hang`` or an HTTP status code."""

    isLeaf = True

    def __init__(self, mode: str | int = "ok") -> None:
        super().__init__()
        self.mode = mode
        self.events: list[dict[str, Any]] = []
        self.contentTypes: set[bytes] = set()
        self.posts = 0
        self.authorizations: list[bytes] = []
        self.hanging: list[Any] = []

    def render_POST(self, request: Any) -> Any:
        self.posts += 1
        self.authorizations.extend(request.requestHeaders.getRawHeaders(b"authorization", []))
        self.contentTypes.update(request.requestHeaders.getRawHeaders(b"content-type", []))
        body = request.content.read()
        if self.mode == "hang":
            self.hanging.append(request)
            return NOT_DONE_YET
        if self.mode != "ok":
            request.setResponseCode(int(self.mode))
            return b"no"
        self.events.append(parseStrict(body))
        request.setResponseCode(204)
        return b""

    def close(self) -> None:
        for request in self.hanging:
            if request.channel is not None and request.channel.transport is not None:
                request.channel.transport.abortConnection()


@pytest.fixture
def listening() -> Iterator[list[Any]]:
    """Ports to close after the test."""
    ports: list[Any] = []
    yield ports
    for port in ports:
        port.stopListening()


def udpReceiver(listening: list[Any]) -> tuple[UDPReceiver, int]:
    receiver = UDPReceiver()
    port = reactor.listenUDP(0, receiver, interface="127.0.0.1")
    listening.append(port)
    return receiver, port.getHost().port


def httpReceiver(listening: list[Any], mode: str | int = "ok") -> tuple[HTTPReceiver, str]:
    receiver = HTTPReceiver(mode)
    site = Site(receiver)
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    listening.append(port)
    return receiver, f"http://127.0.0.1:{port.getHost().port}/events"


def records() -> list[tuple[TransferRecord, str]]:
    """One record per outcome of the issue, and what the server calls for it."""
    now = time.time()

    def rec(name: str, **fields: Any) -> TransferRecord:
        return TransferRecord(
            op="read",
            filename=name,
            mode="octet",
            clientHost="192.168.10.50",
            clientPort=40000,
            listener="0.0.0.0:69",
            start=now,
            **fields,
        )

    out = []
    for name, status, message, code in (
        ("SEP000000000123.cnf.xml", "ok", "transfer_complete", None),
        ("missing.cfg", "error", "file_not_found", 1),
        ("../etc/passwd", "error", "access_denied", 2),
        ("slow.bin", "error", "timeout", None),
        ("abort.bin", "error", "client_error", None),
        ("busy.bin", "error", "server_busy", None),
        (WEIRD, "ok", "transfer_complete", None),
    ):
        r = rec(name, resolved=name.replace("\\", "/"))
        r.status, r.message, r.errorCode, r.end = status, message, code, now + 0.05
        r.bytes = 16 if status == "ok" else 0
        # An ACL refusal yields an error event only.
        calls = "ended" if message == "access_denied" else "both"
        out.append((r, calls))
    return out


def drive(sinks: list[Any], flow: list[tuple[TransferRecord, str]]) -> list[dict[str, Any]]:
    """Call the sinks as the server would; return the events they should send."""
    expected = []
    for r, calls in flow:
        if calls == "both":
            started = dataclasses.replace(
                r, status="start", message="", errorCode=None, end=None, bytes=0
            )
            for sink in sinks:
                sink.transferStarted(started)
            expected.append(onTheWire(eventOf(started, "host-a")))
        for sink in sinks:
            sink.transferEnded(r)
        expected.append(onTheWire(eventOf(r, "host-a")))
    return expected


def key(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True)


# -- exact events ------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_receivers_get_exactly_the_events(listening: list[Any]) -> Any:
    udpRx, udpPort = udpReceiver(listening)
    httpRx, url = httpReceiver(listening)
    udp = UDPEventSink(reactor, "127.0.0.1", udpPort, server="host-a")
    http = HTTPEventSink(reactor, url, server="host-a")
    udp.start()
    http.start()
    try:
        expected = drive([udp, http], records())
        assert len(expected) == 13
        yield waitFor(lambda: len(udpRx.events) == 13 and len(httpRx.events) == 13)
        yield sleep(0.1)  # nothing more arrives
    finally:
        yield udp.stop()
        yield http.stop()
    assert udpRx.events == expected  # one datagram each, in order on loopback
    assert {e["message"] for e in udpRx.events if e["type"] == 0} == {"RRQ received"}
    assert sorted(map(key, httpRx.events)) == sorted(map(key, expected))
    assert httpRx.contentTypes == {b"application/json"}
    weird = [e for e in httpRx.events if e.get("filename_hex")]
    assert {e["type"] for e in weird} == {0, 1}
    assert weird[0]["filename"] == 'a"b\\c\ufffd\ufffd.cfg'
    assert bytes.fromhex(weird[0]["filename_hex"]) == WEIRD_RAW
    assert [(e["type"], e["message"]) for e in udpRx.events if e["type"] == 2] == [
        (2, "file_not_found"),
        (2, "access_denied"),
        (2, "timeout"),
        (2, "client_error"),
        (2, "server_busy"),
    ]
    assert (udp.delivered, udp.failed, udp.dropped) == (13, 0, 0)
    assert (http.delivered, http.failed, http.dropped, http.retried) == (13, 0, 0, 0)


@pytest_twisted.inlineCallbacks
def test_udp_sink_resolves_a_name(listening: list[Any]) -> Any:
    rx, port = udpReceiver(listening)
    sink = UDPEventSink(reactor, "localhost", port)
    sink.start()
    try:
        yield waitFor(lambda: sink.address is not None)
        if sink.address != "127.0.0.1":
            pytest.skip(f"localhost is {sink.address} here")
        r, _ = records()[0]
        sink.transferEnded(r)
        yield waitFor(lambda: len(rx.events) == 1)
        sink.reload()
        yield sleep(0.2)
        sink.transferEnded(r)
        yield waitFor(lambda: len(rx.events) == 2)
    finally:
        yield sink.stop()


@pytest_twisted.inlineCallbacks
def test_events_of_real_transfers(tmp_path: Path, listening: list[Any]) -> Any:
    (tmp_path / "hello.txt").write_bytes(b"hello, phone\n")
    weirdDir = os.path.join(os.fsencode(tmp_path), b'a"b')
    os.mkdir(weirdDir)
    with open(os.path.join(weirdDir, b"c\xff\xfe.cfg"), "wb") as f:
        f.write(b"x" * 700)
    udpRx, udpPort = udpReceiver(listening)
    httpRx, url = httpReceiver(listening)
    udp = UDPEventSink(reactor, "127.0.0.1", udpPort, server="host-a")
    http = HTTPEventSink(reactor, url, server="host-a")
    metrics = Metrics()
    metrics.watchSink(udp)
    metrics.watchSink(http)
    port = freePort()
    service = ctftp.makeService(
        ctftp.ServerConfig(root_dir=str(tmp_path), listeners=f"127.0.0.1:{port}", file_log=False),
        reactor=reactor,
        observers=[LogEventObserver("host-a"), udp, http, metrics],
    )
    metrics.watchServer(service.server)
    web = reactor.listenTCP(0, metricsSite(metrics), interface="127.0.0.1")
    listening.append(web)
    metricsURL = f"http://127.0.0.1:{web.getHost().port}/metrics"
    udp.start()
    http.start()
    service.startService()
    try:
        before = yield scrape(metricsURL)
        result = yield fetch(reactor, ("127.0.0.1", port), "hello.txt")
        assert result.data == b"hello, phone\n"
        result = yield fetch(reactor, ("127.0.0.1", port), WEIRD)
        assert result.data == b"x" * 700
        with pytest.raises(TFTPClientError):
            yield fetch(reactor, ("127.0.0.1", port), "missing.cfg")
        yield waitFor(lambda: len(udpRx.events) == 6 and len(httpRx.events) == 6)
        after = yield scrape(metricsURL)
    finally:
        yield service.stopService()
        yield udp.stop()
        yield http.stop()

    summary = [(e["type"], e["status"], e["message"], e["filename"]) for e in udpRx.events]
    assert [s[:2] for s in summary] == [
        (0, "start"),
        (1, "ok"),
        (0, "start"),
        (1, "ok"),
        (0, "start"),
        (2, "error"),
    ]
    assert summary[5][2] == "file_not_found"
    assert {s[2] for s in summary if s[0] == 0} == {"RRQ received"}
    okWeird = udpRx.events[3]
    assert okWeird["filename"] == 'a"b\\c\ufffd\ufffd.cfg'
    assert bytes.fromhex(okWeird["filename_hex"]) == WEIRD_RAW
    assert okWeird["resolved"] == 'a"b/c\ufffd\ufffd.cfg'
    assert okWeird["bytes"] == 700 and okWeird["op"] == "read"
    assert okWeird["client_ip"] == "127.0.0.1" and okWeird["server"] == "host-a"
    assert sorted(map(key, httpRx.events)) == sorted(map(key, udpRx.events))

    assert before["ctftp_transfers_total"].get('op="read",status="ok"') == 0
    assert after["ctftp_transfers_total"]['op="read",status="ok"'] == 2
    assert after["ctftp_transfers_total"]['op="read",status="error"'] == 1
    assert after["ctftp_requests_total"]['op="read"'] == 3
    assert after["ctftp_transfer_errors_total"]['reason="file_not_found"'] == 1
    assert after["ctftp_bytes_sent_total"][""] == 713
    assert after["ctftp_transfer_duration_seconds_count"]['op="read",status="ok"'] == 2
    assert after["ctftp_event_deliveries_total"]['result="ok",sink="udp"'] == 6
    assert after["ctftp_active_transfers"][""] == 0


@inlineCallbacks
def scrape(url: str) -> Any:
    """GET /metrics; samples as {name: {label text: value}}."""
    response = yield treq.get(url)
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type") == [CONTENT_TYPE]
    body = yield response.content()
    samples: dict[str, dict[str, float]] = {}
    for line in body.decode("utf-8").splitlines():
        if line and not line.startswith("#"):
            match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
            assert match, line
            samples.setdefault(match[1], {})[match[2] or ""] = float(match[3])
    return samples


# -- receivers in trouble --------------------------------------------------------------


def balanced(sink: HTTPEventSink) -> bool:
    return sink.offered == (
        sink.delivered + sink.failed + sink.dropped + sink.queued + sink.inFlight
    )


@pytest_twisted.inlineCallbacks
def test_transfers_complete_while_the_receiver_hangs(tmp_path: Path, listening: list[Any]) -> Any:
    for n in range(10):
        (tmp_path / f"f{n}.cfg").write_bytes(b"config %d\n" % n * 100)
    rx, url = httpReceiver(listening, "hang")
    sink = HTTPEventSink(reactor, url, maxQueue=1000, timeout=60.0, drainTimeout=0.5)
    port = freePort()
    service = ctftp.makeService(
        ctftp.ServerConfig(root_dir=str(tmp_path), listeners=f"127.0.0.1:{port}", file_log=False),
        reactor=reactor,
        observers=[sink],
    )
    sink.start()
    service.startService()
    try:
        began = time.monotonic()
        for n in range(10):
            result = yield fetch(reactor, ("127.0.0.1", port), f"f{n}.cfg")
            assert result.data == b"config %d\n" % n * 100
        elapsed = time.monotonic() - began
        # the server ends a transfer at the last ACK, just after the client has its data
        yield waitFor(lambda: rx.posts == 4 and sink.offered == 20)
        assert elapsed < 5.0  # ten transfers, none waiting for the receiver
        assert (sink.inFlight, sink.queued, sink.delivered) == (4, 16, 0)

        r, _ = records()[0]
        began = time.monotonic()
        for _ in range(10_000):
            sink.transferEnded(r)
        burst = time.monotonic() - began
        assert sink.queued == 1000  # the bound holds
        assert sink.dropped == 20 + 10_000 - 4 - 1000
        assert burst < 5.0
        assert balanced(sink)
        result = yield fetch(reactor, ("127.0.0.1", port), "f0.cfg")  # still serving
        assert result.data.startswith(b"config 0")
    finally:
        yield service.stopService()
        began = time.monotonic()
        yield sink.stop()
        stopping = time.monotonic() - began
        rx.close()
    assert stopping < 3.0  # bounded by drainTimeout, not by the hung POSTs
    assert (sink.queued, sink.inFlight, sink.delivered) == (0, 0, 0)
    assert sink.dropped == sink.offered == 10_022  # nothing got through a hung receiver
    assert balanced(sink)


@pytest_twisted.inlineCallbacks
def test_refused_connections_are_retried_then_failed(tmp_path: Path) -> Any:
    (tmp_path / "f.cfg").write_bytes(b"data\n")
    url = f"http://127.0.0.1:{freePort(socket.SOCK_STREAM)}/events"  # nobody listens
    sink = HTTPEventSink(reactor, url, maxRetries=2, baseDelay=0.02, timeout=5.0)
    port = freePort()
    service = ctftp.makeService(
        ctftp.ServerConfig(root_dir=str(tmp_path), listeners=f"127.0.0.1:{port}", file_log=False),
        reactor=reactor,
        observers=[sink],
    )
    sink.start()
    service.startService()
    try:
        with capturedLogs() as captured:
            for _ in range(3):
                result = yield fetch(reactor, ("127.0.0.1", port), "f.cfg")
                assert result.data == b"data\n"
            yield waitFor(lambda: sink.failed == 6)
    finally:
        yield service.stopService()
        yield sink.stop()
    assert (sink.delivered, sink.retried, sink.failed, sink.dropped) == (0, 12, 6, 0)
    # 18 connection attempts, none of them a "Starting factory" line in
    # twistd's log: the rate-limited warning is what a dead receiver costs.
    assert not [e for e in captured if "factory" in formatEvent(e).lower()]
    assert balanced(sink)


@pytest_twisted.inlineCallbacks
def test_500_is_retried_until_the_receiver_recovers(listening: list[Any]) -> Any:
    rx, url = httpReceiver(listening, 500)
    sink = HTTPEventSink(reactor, url, maxRetries=10, baseDelay=0.05, maxDelay=0.1, server="host-a")
    sink.start()
    try:
        flow = records()
        expected = drive([sink], flow[:2])
        yield waitFor(lambda: rx.posts >= 8)
        assert sink.delivered == 0 and sink.retried >= 4
        rx.mode = "ok"
        yield waitFor(lambda: sink.delivered == 4)
    finally:
        yield sink.stop()
    assert sorted(map(key, rx.events)) == sorted(map(key, expected))
    assert sink.failed == 0 and balanced(sink)


@pytest_twisted.inlineCallbacks
def test_404_is_failed_without_retry(listening: list[Any]) -> Any:
    rx, url = httpReceiver(listening, 404)
    sink = HTTPEventSink(reactor, url, baseDelay=0.01)
    sink.start()
    try:
        sink.transferEnded(records()[0][0])
        yield waitFor(lambda: sink.failed == 1)
        yield sleep(0.1)
    finally:
        yield sink.stop()
    assert (rx.posts, sink.retried) == (1, 0)


@pytest_twisted.inlineCallbacks
def test_credentials_in_the_url_are_sent_as_basic_auth(listening: list[Any]) -> Any:
    """``event_http_url=http://user:password@host/...``: each POST carries an
    Authorization header (treq refuses such a URL as it is); log lines and
    the sink's ``target`` show neither the password nor the query."""
    rx, url = httpReceiver(listening)
    secretURL = url.replace("http://", "http://ev%20user:pa%40ss@") + "?token=t0k"
    sink = HTTPEventSink(reactor, secretURL, baseDelay=0.01)
    sink.start()
    try:
        sink.transferEnded(records()[0][0])
        yield waitFor(lambda: sink.delivered == 1)
    finally:
        yield sink.stop()
    assert rx.authorizations == [b"Basic " + base64.b64encode(b"ev user:pa@ss")]
    assert "pa%40ss" not in sink.target and "t0k" not in sink.target
    assert sink.target == url.replace("http://", "http://***@")


# -- HTTPS ---------------------------------------------------------------------------------


def makePKI(tmp_path: Path) -> tuple[Path, Callable[..., bytes]]:
    """A private CA, and a function making a server's key and certificate
    (PEM, in that order) for names it signs."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    caKey = ec.generate_private_key(ec.SECP256R1())
    caName = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ctftp test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(caName)
        .issuer_name(caName)
        .public_key(caKey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(caKey.public_key()), critical=False
        )
        .sign(caKey, hashes.SHA256())
    )
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def serverPEM(*names: str) -> bytes:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n)
            for n in names
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(caName)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(caKey.public_key()),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
            .sign(caKey, hashes.SHA256())
        )
        keyPEM = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return keyPEM + cert.public_bytes(serialization.Encoding.PEM)

    return bundle, serverPEM


def tlsOptions(pem: bytes) -> Any:
    """Twisted server TLS options for a key and certificate from :func:`makePKI`."""
    return ssl.PrivateCertificate.loadPEM(pem).options()


def tlsReceiver(listening: list[Any], options: Any) -> tuple[HTTPReceiver, int]:
    rx = HTTPReceiver()
    site = Site(rx)
    site.noisy = False
    port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
    listening.append(port)
    return rx, port.getHost().port


@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")  # Twisted's TLS server
@pytest_twisted.inlineCallbacks
def test_https_with_a_private_ca(tmp_path: Path, listening: list[Any]) -> Any:
    bundle, serverPEM = makePKI(tmp_path)
    rx, port = tlsReceiver(listening, tlsOptions(serverPEM("localhost", "127.0.0.1")))
    otherRx, otherPort = tlsReceiver(listening, tlsOptions(serverPEM("collector.invalid")))
    r, _ = records()[0]
    ca = os.fspath(bundle)
    trusted = HTTPEventSink(reactor, f"https://127.0.0.1:{port}/e", caBundle=ca, maxRetries=0)
    byName = HTTPEventSink(reactor, f"https://localhost:{port}/e", caBundle=ca, maxRetries=0)
    untrusted = HTTPEventSink(reactor, f"https://127.0.0.1:{port}/e", maxRetries=0)
    wrongName = HTTPEventSink(
        reactor, f"https://127.0.0.1:{otherPort}/e", caBundle=ca, maxRetries=0
    )
    sinks = [trusted, byName, untrusted, wrongName]
    for sink in sinks:
        sink.start()
        sink.transferEnded(r)
    try:
        yield waitFor(lambda: all(s.delivered + s.failed == 1 for s in sinks))
    finally:
        for sink in sinks:
            yield sink.stop()
    assert [(s.delivered, s.failed) for s in sinks] == [(1, 0), (1, 0), (0, 1), (0, 1)]
    assert len(rx.events) == 2 and otherRx.events == []
