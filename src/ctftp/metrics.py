"""Prometheus metrics: what the ``/metrics`` page of ``metrics_listen`` shows.

:class:`Metrics` counts what it sees as an :class:`~ctftp.events.ITransferObserver`
(transfers by op and status, bytes, retransmits, durations) and reads
everything else (active transfers, dropped requests, event deliveries) from
callables registered when the service is wired, so that no other module has
to know about metrics and a scrape always shows current values.

The text exposition format 0.0.4 is rendered here rather than through
``prometheus_client``: its registry is process-global (two embedded servers
would collide), its HTTP server is a thread, and what ctftp exposes is a
handful of families that take less code to render than to adapt. The page
itself is :mod:`ctftp.metricspage`, imported only when ``metrics_listen`` is
set (``twisted.web``'s server is a few MB a server without it does not need).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from zope.interface import implementer

from ctftp.events import ITransferObserver, TransferRecord
from ctftp.logs import logger

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "Metrics",
]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
PREFIX = "ctftp_"

#: Upper bounds (seconds) of the duration histogram: a config file over a LAN
#: takes milliseconds, firmware over a WAN a minute; timeouts end past that.
DURATION_BUCKETS: tuple[float, ...] = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

OPS = ("read", "write")
STATUSES = ("ok", "error")

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

_log = logger("ctftp.metrics")


def _escapeLabel(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escapeHelp(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample value as Prometheus writes it (``+Inf``, ``NaN``, no ``.0`` on ints)."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    text = ",".join(f'{name}="{_escapeLabel(value)}"' for name, value in labels)
    return "{" + text + "}" if text else ""


@dataclass
class _Family:
    name: str
    type: str
    help: str
    samples: list[tuple[tuple[tuple[str, str], ...], Callable[[], float]]] = field(
        default_factory=list
    )


class _Histogram:
    """Cumulative-on-render histogram of one label set."""

    __slots__ = ("counts", "sum", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS, value)] += 1
        self.sum += value
        self.count += 1


@implementer(ITransferObserver)
class Metrics:
    """ctftp's metrics and their rendering.

    As an observer it counts, per ended transfer: ``ctftp_transfers_total``
    by ``op`` and ``status``, ``ctftp_transfer_errors_total`` by ``reason``
    (the event's message), ``ctftp_bytes_sent_total`` (reads) and
    ``ctftp_bytes_received_total`` (writes), ``ctftp_retransmits_total``
    and the histogram ``ctftp_transfer_duration_seconds`` by ``op`` and
    ``status``; per request, ``ctftp_requests_total`` by ``op``.

    :meth:`addCounter` and :meth:`addGauge` register values read at each
    scrape; :meth:`watchServer` and :meth:`watchSink` register the ones
    ctftp has.
    """

    def __init__(self) -> None:
        self.requests = {op: 0 for op in OPS}
        self.transfers = {(op, status): 0 for op in OPS for status in STATUSES}
        self.errors: dict[str, int] = {}
        self.bytesSent = 0
        self.bytesReceived = 0
        self.retransmits = 0
        self.durations = {(op, status): _Histogram() for op in OPS for status in STATUSES}
        self._registered: dict[str, _Family] = {}

    # -- observer

    def transferStarted(self, record: TransferRecord) -> None:
        self.requests[record.op] = self.requests.get(record.op, 0) + 1

    def transferEnded(self, record: TransferRecord) -> None:
        status = "ok" if record.status == "ok" else "error"
        key = (record.op, status)
        self.transfers[key] = self.transfers.get(key, 0) + 1
        if status == "error":
            self.errors[record.message] = self.errors.get(record.message, 0) + 1
        if record.op == "write":
            self.bytesReceived += record.bytes
        else:
            self.bytesSent += record.bytes
        self.retransmits += record.retransmits
        if record.end is not None:
            histogram = self.durations.get(key)
            if histogram is None:
                histogram = self.durations[key] = _Histogram()
            histogram.observe(max(0.0, record.end - record.start))

    # -- registration

    def addCounter(self, name: str, help: str, read: Callable[[], float], **labels: str) -> None:
        """Register ``ctftp_<name>`` (a counter: ``read`` never goes down) with ``labels``.

        Calling it again with the same name and other labels adds a series to
        the family; ``help`` of the first registration is kept.
        """
        self._add("counter", name, help, read, labels)

    def addGauge(self, name: str, help: str, read: Callable[[], float], **labels: str) -> None:
        """Register the gauge ``ctftp_<name>``; see :meth:`addCounter`."""
        self._add("gauge", name, help, read, labels)

    def _add(
        self, type: str, name: str, help: str, read: Callable[[], float], labels: dict[str, str]
    ) -> None:
        full = PREFIX + name
        if not _NAME.match(full) or any(not _LABEL.match(label) for label in labels):
            raise ValueError(f"invalid metric or label name: {full} {sorted(labels)}")
        family = self._registered.get(full)
        if family is None:
            family = self._registered[full] = _Family(full, type, help)
        elif family.type != type:
            raise ValueError(f"{full} is already a {family.type}")
        family.samples.append((tuple(sorted(labels.items())), read))

    def watchServer(self, server: Any) -> None:
        """Register a :class:`~ctftp.server.TFTPServer` 's gauges and drop counters.

        ``ctftp_active_transfers`` is ``len(server.active)``;
        ``ctftp_requests_dropped_total`` has ``reason="busy"`` from
        ``server.busyDropped`` and ``reason="acl"`` from ``server.aclDropped``
        (0 while the server has no such attribute); ``ctftp_malformed_requests_total``
        is ``server.malformed``.
        """
        self.addGauge(
            "active_transfers",
            "Transfers running, and requests whose file is being opened.",
            lambda: len(server.active),
        )
        dropped = "Requests dropped without a transfer, by reason."
        self.addCounter(
            "requests_dropped_total", dropped, lambda: server.busyDropped, reason="busy"
        )
        self.addCounter(
            "requests_dropped_total",
            dropped,
            lambda: getattr(server, "aclDropped", 0),
            reason="acl",
        )
        self.addCounter(
            "malformed_requests_total",
            "Datagrams on a listener that were not a valid request.",
            lambda: server.malformed,
        )

    def watchSink(self, sink: Any) -> None:
        """Register an event sink's counters, labelled ``sink=<sink.name>``.

        ``ctftp_event_deliveries_total`` by ``result`` (``ok``, ``failed``,
        ``dropped``) for every sink; ``ctftp_event_retries_total`` and the
        gauge ``ctftp_event_queue_length`` for sinks that have ``retried``
        and ``queued`` (HTTP).
        """
        name = sink.name
        help = "Events given to a sink, by the end they met."
        self.addCounter(
            "event_deliveries_total", help, lambda: sink.delivered, sink=name, result="ok"
        )
        self.addCounter(
            "event_deliveries_total", help, lambda: sink.failed, sink=name, result="failed"
        )
        self.addCounter(
            "event_deliveries_total", help, lambda: sink.dropped, sink=name, result="dropped"
        )
        if hasattr(sink, "retried"):
            self.addCounter(
                "event_retries_total",
                "Event POSTs that were retries.",
                lambda: sink.retried,
                sink=name,
            )
        if hasattr(sink, "queued"):
            self.addGauge(
                "event_queue_length",
                "Events waiting for delivery (not counting those in flight).",
                lambda: sink.queued,
                sink=name,
            )

    # -- rendering

    def render(self) -> bytes:
        """All metrics in the Prometheus text format 0.0.4, UTF-8."""
        out: list[str] = []

        def family(name: str, type: str, help: str) -> None:
            out.append(f"# HELP {PREFIX}{name} {_escapeHelp(help)}")
            out.append(f"# TYPE {PREFIX}{name} {type}")

        def sample(name: str, value: float, labels: Iterable[tuple[str, str]] = ()) -> None:
            out.append(f"{PREFIX}{name}{_labels(labels)} {_number(value)}")

        family("requests_total", "counter", "Requests that parsed (RRQ, WRQ), by op.")
        for op, n in sorted(self.requests.items()):
            sample("requests_total", n, [("op", op)])
        family("transfers_total", "counter", "Requests that ended, by op and status.")
        for (op, status), n in sorted(self.transfers.items()):
            sample("transfers_total", n, [("op", op), ("status", status)])
        family(
            "transfer_errors_total",
            "counter",
            "Requests that ended in error, by reason (the event's message).",
        )
        for reason, n in sorted(self.errors.items()):
            sample("transfer_errors_total", n, [("reason", reason)])
        family("bytes_sent_total", "counter", "Payload bytes acknowledged by readers.")
        sample("bytes_sent_total", self.bytesSent)
        family("bytes_received_total", "counter", "Payload bytes received from writers.")
        sample("bytes_received_total", self.bytesReceived)
        family("retransmits_total", "counter", "Packets sent again after a timeout.")
        sample("retransmits_total", self.retransmits)
        family(
            "transfer_duration_seconds",
            "histogram",
            "Time from request to end, by op and status.",
        )
        for (op, status), histogram in sorted(self.durations.items()):
            labels = [("op", op), ("status", status)]
            cumulative = 0
            for bound, n in zip((*DURATION_BUCKETS, math.inf), histogram.counts, strict=True):
                cumulative += n
                le = "+Inf" if bound == math.inf else repr(bound)
                sample("transfer_duration_seconds_bucket", cumulative, [*labels, ("le", le)])
            sample("transfer_duration_seconds_sum", histogram.sum, labels)
            sample("transfer_duration_seconds_count", histogram.count, labels)

        for registered in self._registered.values():
            out.append(f"# HELP {registered.name} {_escapeHelp(registered.help)}")
            out.append(f"# TYPE {registered.name} {registered.type}")
            for labelSet, read in registered.samples:
                try:
                    value = read()
                except Exception:
                    _log.failure("cannot read metric {name}", name=registered.name)
                    continue
                out.append(f"{registered.name}{_labels(labelSet)} {_number(value)}")
        out.append("")
        return "\n".join(out).encode("utf-8")
