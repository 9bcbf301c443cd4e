"""Tests for ctftp.metrics: counting transfers, registered values, the text
format (checked by a strict parser of exposition format 0.0.4) and the resource."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock

from ctftp.events import TransferRecord
from ctftp.metrics import CONTENT_TYPE, DURATION_BUCKETS, Metrics
from ctftp.metricspage import MetricsResource, metricsSite
from ctftp.sinks import HTTPEventSink, UDPEventSink
from ctftp.testing import MemoryUDPReactor

# -- a strict parser of the text format 0.0.4 ----------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(
    rf"^(?P<name>{_NAME})(?:\{{(?P<labels>{_LABEL}(?:,{_LABEL})*)?,?\}})? "
    rf"(?P<value>\S+)(?: (?P<ts>-?[0-9]+))?$"
)
_ONE_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}

Series = tuple[str, frozenset[tuple[str, str]]]


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def _value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", text):
        raise AssertionError(f"bad sample value {text!r}")
    return float(text)


def parse(data: bytes) -> dict[str, dict[str, Any]]:
    """Parse an exposition, raising AssertionError on anything 0.0.4 does not allow.

    Returns family name -> {"type", "help", "samples": {(sample name, labels): value}}.
    Checks: UTF-8; the final newline; HELP and TYPE at most once, TYPE before
    the samples; a family's samples together; no duplicate series; label
    escapes; histogram buckets cumulative, with ``+Inf`` equal to ``_count``.
    """
    text = data.decode("utf-8")
    assert text.endswith("\n"), "the last line must end with a newline"
    families: dict[str, dict[str, Any]] = {}
    current: str | None = None
    finished: set[str] = set()

    def family(name: str) -> dict[str, Any]:
        nonlocal current
        if name != current:
            assert name not in finished, f"samples of {name} are not together"
            if current is not None:
                finished.add(current)
            current = name
        return families.setdefault(name, {"type": "untyped", "help": None, "samples": {}})

    for line in text[:-1].split("\n"):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                assert re.fullmatch(_NAME, parts[2]), line
                fam = family(parts[2])
                if parts[1] == "HELP":
                    assert fam["help"] is None, f"second HELP: {line}"
                    helpText = parts[3] if len(parts) > 3 else ""
                    assert re.fullmatch(r"(?:[^\\]|\\[\\n])*", helpText), f"bad escape: {line}"
                    fam["help"] = _unescape(helpText)
                else:
                    assert len(parts) == 4 and parts[3] in _TYPES, line
                    assert not fam["samples"] and fam["type"] == "untyped", f"late TYPE: {line}"
                    fam["type"] = parts[3]
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name = match["name"]
        base = name
        for suffix in _SUFFIXES.get(families.get(current or "", {}).get("type", ""), ()):
            if current is not None and name == current + suffix:
                base = current
        fam = family(base)
        labels = [(k, _unescape(v)) for k, v in _ONE_LABEL.findall(match["labels"] or "")]
        assert len({k for k, _ in labels}) == len(labels), f"repeated label: {line}"
        key = (name, frozenset(labels))
        assert key not in fam["samples"], f"duplicate series: {line}"
        value = _value(match["value"])
        if fam["type"] == "counter":
            assert value >= 0, line
        fam["samples"][key] = value

    for name, fam in families.items():
        if fam["type"] == "histogram":
            _checkHistogram(name, fam["samples"])
    return families


def _checkHistogram(name: str, samples: dict[Series, float]) -> None:
    groups: dict[frozenset[tuple[str, str]], list[tuple[float, float]]] = {}
    for (sample, labels), value in samples.items():
        if sample == name + "_bucket":
            le = dict(labels)["le"]
            rest = frozenset(kv for kv in labels if kv[0] != "le")
            groups.setdefault(rest, []).append((_value(le), value))
    assert groups, f"{name} has no buckets"
    for rest, buckets in groups.items():
        buckets.sort()
        counts = [count for _, count in buckets]
        assert counts == sorted(counts), f"{name} buckets not cumulative"
        assert buckets[-1][0] == math.inf, f"{name} lacks le=+Inf"
        assert samples[(name + "_count", rest)] == buckets[-1][1]
        assert (name + "_sum", rest) in samples


def value(families: dict[str, dict[str, Any]], sample: str, **labels: str) -> float:
    base = re.sub(r"_(bucket|sum|count)$", "", sample)
    fam = families.get(sample) or families[base]
    return fam["samples"][(sample, frozenset(labels.items()))]


def test_parser_refuses_what_the_format_does_not_allow() -> None:
    for bad in (
        b"x 1",  # no final newline
        b'x{a="1"} one\n',
        b'x{a="\\q"} 1\n',
        b"x 1\ny 1\nx 2\n",
        b"# TYPE x counter\n# TYPE x counter\nx 1\n",
        b"x 1\n# TYPE x counter\n",
        b"x 1\nx 2\n",
        b'# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 0\n',
        b"# TYPE c counter\nc -1\n",
        b"1x 1\n",
    ):
        with pytest.raises(AssertionError):
            parse(bad)


# -- Metrics ---------------------------------------------------------------------------


def record(op: str = "read", status: str = "ok", **fields: Any) -> TransferRecord:
    rec = TransferRecord(
        op=op,
        filename="f.bin",
        mode="octet",
        clientHost="10.0.0.1",
        clientPort=4000,
        listener="0.0.0.0:69",
        start=1000.0,
    )
    rec.status = status
    for name, item in fields.items():
        setattr(rec, name, item)
    return rec


def flow(metrics: Metrics, op: str, status: str, message: str, nbytes: int, seconds: float,
         retransmits: int = 0) -> None:  # fmt: skip
    rec = record(op, "start")
    metrics.transferStarted(rec)
    rec.status, rec.message, rec.bytes = status, message, nbytes
    rec.retransmits, rec.end = retransmits, rec.start + seconds
    metrics.transferEnded(rec)


def test_empty_metrics_parse_with_every_series_at_zero() -> None:
    families = parse(Metrics().render())
    assert families["ctftp_transfers_total"]["type"] == "counter"
    for op in ("read", "write"):
        assert value(families, "ctftp_requests_total", op=op) == 0
        for status in ("ok", "error"):
            assert value(families, "ctftp_transfers_total", op=op, status=status) == 0
            assert (
                value(
                    families,
                    "ctftp_transfer_duration_seconds_bucket",
                    op=op,
                    status=status,
                    le="+Inf",
                )
                == 0
            )
    assert value(families, "ctftp_bytes_sent_total") == 0
    assert families["ctftp_transfer_duration_seconds"]["type"] == "histogram"
    assert all(f["help"] for f in families.values())


def test_counters_move_as_records_flow() -> None:
    metrics = Metrics()
    flow(metrics, "read", "ok", "transfer_complete", 3456, 0.107)
    flow(metrics, "read", "ok", "transfer_complete", 1000, 0.004, retransmits=2)
    flow(metrics, "read", "error", "file_not_found", 0, 0.001)
    flow(metrics, "read", "error", "timeout", 512, 25.0, retransmits=5)
    flow(metrics, "write", "ok", "transfer_complete", 2048, 70.0)
    families = parse(metrics.render())
    assert value(families, "ctftp_requests_total", op="read") == 4
    assert value(families, "ctftp_requests_total", op="write") == 1
    assert value(families, "ctftp_transfers_total", op="read", status="ok") == 2
    assert value(families, "ctftp_transfers_total", op="read", status="error") == 2
    assert value(families, "ctftp_transfers_total", op="write", status="ok") == 1
    assert value(families, "ctftp_transfer_errors_total", reason="file_not_found") == 1
    assert value(families, "ctftp_transfer_errors_total", reason="timeout") == 1
    assert value(families, "ctftp_bytes_sent_total") == 3456 + 1000 + 512
    assert value(families, "ctftp_bytes_received_total") == 2048
    assert value(families, "ctftp_retransmits_total") == 7

    def bucket(le: str, op: str = "read", status: str = "ok") -> float:
        return value(
            families, "ctftp_transfer_duration_seconds_bucket", op=op, status=status, le=le
        )

    assert bucket("0.01") == 1 and bucket("0.1") == 1 and bucket("0.25") == 2
    assert bucket("+Inf") == 2
    assert bucket("10.0", status="error") == 1 and bucket("30.0", status="error") == 2
    assert bucket("60.0", op="write") == 0 and bucket("+Inf", op="write") == 1
    assert value(
        families, "ctftp_transfer_duration_seconds_sum", op="read", status="ok"
    ) == pytest.approx(0.111)
    les = {
        dict(labels)["le"]
        for (name, labels) in families["ctftp_transfer_duration_seconds"]["samples"]
        if name.endswith("_bucket")
    }
    assert les == {repr(b) for b in DURATION_BUCKETS} | {"+Inf"}


def test_a_bucket_bound_is_inclusive() -> None:
    metrics = Metrics()
    rec = record()
    rec.end = rec.start + 0.5
    metrics.transferEnded(rec)
    families = parse(metrics.render())
    labels = {"op": "read", "status": "ok"}
    assert value(families, "ctftp_transfer_duration_seconds_bucket", le="0.5", **labels) == 1
    assert value(families, "ctftp_transfer_duration_seconds_bucket", le="0.25", **labels) == 0


def test_registered_values_are_read_at_each_render() -> None:
    metrics = Metrics()
    state = {"n": 1}
    metrics.addGauge(
        "thing", 'with "quotes" and \\ and\nnewline', lambda: state["n"], k='a"b\\c\nd'
    )
    metrics.addCounter("things_total", "a counter", lambda: 2.5)
    families = parse(metrics.render())
    assert value(families, "ctftp_thing", k='a"b\\c\nd') == 1
    assert families["ctftp_thing"]["help"] == 'with "quotes" and \\ and\nnewline'
    assert families["ctftp_thing"]["type"] == "gauge"
    assert value(families, "ctftp_things_total") == 2.5
    state["n"] = 7
    assert value(parse(metrics.render()), "ctftp_thing", k='a"b\\c\nd') == 7


def test_registration_errors() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError):
        metrics.addGauge("bad-name", "x", lambda: 0)
    with pytest.raises(ValueError):
        metrics.addGauge("ok", "x", lambda: 0, **{"bad-label": "1"})
    metrics.addGauge("ok", "x", lambda: 0)
    with pytest.raises(ValueError):
        metrics.addCounter("ok", "x", lambda: 0)


def test_a_failing_reader_loses_its_sample_only() -> None:
    metrics = Metrics()
    metrics.addGauge("broken", "x", lambda: 1 / 0)
    metrics.addGauge("fine", "x", lambda: 3)
    families = parse(metrics.render())
    assert families["ctftp_broken"]["samples"] == {}
    assert value(families, "ctftp_fine") == 3


def test_special_values() -> None:
    metrics = Metrics()
    metrics.addGauge("inf", "x", lambda: math.inf)
    metrics.addGauge("nan", "x", lambda: math.nan)
    metrics.addGauge("big", "x", lambda: 1e20)
    text = metrics.render().decode()
    assert "ctftp_inf +Inf\n" in text and "ctftp_nan NaN\n" in text and "ctftp_big 1e+20\n" in text
    parse(text.encode())


class FakeServer:
    def __init__(self) -> None:
        self.active: dict[Any, Any] = {}
        self.busyDropped = 0
        self.malformed = 0


def test_watchServer() -> None:
    metrics = Metrics()
    server = FakeServer()
    metrics.watchServer(server)
    server.active.update({1: None, 2: None})
    server.busyDropped = 5
    server.malformed = 2
    families = parse(metrics.render())
    assert value(families, "ctftp_active_transfers") == 2
    assert value(families, "ctftp_requests_dropped_total", reason="busy") == 5
    assert value(families, "ctftp_requests_dropped_total", reason="acl") == 0
    assert value(families, "ctftp_malformed_requests_total") == 2
    server.aclDropped = 3  # type: ignore[attr-defined]
    assert value(parse(metrics.render()), "ctftp_requests_dropped_total", reason="acl") == 3


def test_watchSink() -> None:
    metrics = Metrics()
    udp = UDPEventSink(MemoryUDPReactor(), "127.0.0.1", 5140)
    http = HTTPEventSink(Clock(), "http://127.0.0.1:9/", maxQueue=2)
    metrics.watchSink(udp)
    metrics.watchSink(http)
    for _ in range(3):
        udp.transferStarted(record())  # not started: dropped
        http.transferStarted(record())  # queue of 2: one dropped
    families = parse(metrics.render())
    assert value(families, "ctftp_event_deliveries_total", sink="udp", result="dropped") == 3
    assert value(families, "ctftp_event_deliveries_total", sink="udp", result="ok") == 0
    assert value(families, "ctftp_event_deliveries_total", sink="http", result="dropped") == 1
    assert value(families, "ctftp_event_deliveries_total", sink="http", result="failed") == 0
    assert value(families, "ctftp_event_queue_length", sink="http") == 2
    assert value(families, "ctftp_event_retries_total", sink="http") == 0
    assert ("ctftp_event_retries_total", frozenset({("sink", "udp")})) not in families[
        "ctftp_event_retries_total"
    ]["samples"]


def test_prometheus_client_parser_agrees() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    metrics = Metrics()
    flow(metrics, "read", "ok", "transfer_complete", 10, 0.2)
    metrics.addGauge("odd", "x", lambda: 1, label='"\\\n')
    parsed = {f.name: f for f in parser.text_string_to_metric_families(metrics.render().decode())}
    assert parsed["ctftp_transfer_duration_seconds"].type == "histogram"
    assert parsed["ctftp_odd"].samples[0].labels == {"label": '"\\\n'}
    transfers = {
        (s.labels["op"], s.labels["status"]): s.value
        for s in parsed["ctftp_transfers"].samples
        if s.name == "ctftp_transfers_total"
    }
    assert transfers[("read", "ok")] == 1


# -- the resource ------------------------------------------------------------------


def test_resource_serves_the_page() -> None:
    metrics = Metrics()
    client = StubTreq(metricsSite(metrics).resource)
    d = client.get("http://ctftp/metrics")
    client.flush()
    response = d.result
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type") == [CONTENT_TYPE]
    body = client.content(response)
    client.flush()
    parse(body.result)

    for path, code in (("http://ctftp/", 404), ("http://ctftp/other", 404)):
        d = client.get(path)
        client.flush()
        assert d.result.code == code
    d = client.post("http://ctftp/metrics", data=b"x")
    client.flush()
    assert d.result.code == 405


def test_resource_is_a_leaf() -> None:
    assert MetricsResource(Metrics()).isLeaf
