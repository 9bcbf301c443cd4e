"""Event sinks: every transfer event as one JSON object, over UDP or HTTP.

Both sinks are :class:`~ctftp.events.ITransferObserver` s. The server calls
them on its hot path, so an observer call only snapshots the record into a
JSON document and hands it on: :class:`UDPEventSink` sends one datagram
(a non-blocking ``sendto``), :class:`HTTPEventSink` appends to a bounded
queue that a few concurrent POSTs drain later. Nothing a receiver does (not
answering, refusing, failing) can block a transfer, raise into the server or
grow memory without bound; what could not be delivered is counted, and
reported in the log at most once a minute per kind of trouble.

The wire format is :func:`encodeEvent`; docs/events.md is the operator's
description of the schema and of the delivery guarantees.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IHostResolution,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
)
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from ctftp.events import ITransferObserver, TransferRecord, formatAddress
from ctftp.logs import RateLimitedLog, logger
from ctftp.webclient import displayURL, loadTrustRoot, pooledAgent, splitCredentials

if TYPE_CHECKING:
    from twisted.web.client import HTTPConnectionPool

__all__ = [
    "HTTPEventSink",
    "UDPEventSink",
    "encodeEvent",
    "eventOf",
    "WARNING_INTERVAL",
    "LOOKUP_RETRY",
]

#: Seconds of reactor time between two warnings of the same kind from a sink.
WARNING_INTERVAL = 60.0

#: Seconds between lookups of an ``event_udp`` name that has never resolved
#: (DNS not up yet at boot); once it has an address, only SIGHUP looks again.
LOOKUP_RETRY = 30.0

_log = logger("ctftp.sinks")

# -- encoding ----------------------------------------------------------------

_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def _hasSurrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _rawBytes(text: str) -> bytes:
    """The bytes a surrogateescape-decoded string came from.

    U+DC80..U+DCFF are the undecodable bytes 0x80..0xFF; any other lone
    surrogate (never produced by decoding, but a str may hold one) is written
    as the three bytes UTF-8 would give it, so the function never fails.
    """
    return b"".join(
        bytes((ord(c) - 0xDC00,))
        if 0xDC80 <= ord(c) <= 0xDCFF
        else c.encode("utf-8", "surrogatepass")
        for c in text
    )


def _replaceSurrogates(text: str) -> str:
    """Each lone surrogate becomes U+FFFD, one per undecodable byte."""
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def _clean(value: Any, depth: int = 0) -> Any:
    """A JSON-encodable, UTF-8-encodable copy of a nested value.

    Only used on the rare path where the plain encoding fails; the event
    dicts ctftp builds are flat, but an embedder's observer may pass others.
    """
    if isinstance(value, str):
        return _replaceSurrogates(value)
    if isinstance(value, bool | int | type(None)):
        return value
    if isinstance(value, float):
        return value if value - value == 0 else str(value)  # nan and inf are not JSON
    if depth > 32:
        return _replaceSurrogates(str(value))
    if isinstance(value, Mapping):
        return {_replaceSurrogates(str(k)): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item, depth + 1) for item in value]
    return _replaceSurrogates(str(value))


def encodeEvent(event: Mapping[str, Any]) -> bytes:
    """Encode an event (``TransferRecord.asEvent``) as one UTF-8 JSON object.

    The result is always valid UTF-8 and valid I-JSON (RFC 7493): quotes,
    backslashes and control characters get JSON's escapes, and text is never
    cut. A file name that was not UTF-8 on the wire reaches ctftp with each
    undecodable byte as a lone surrogate (U+DC80..U+DCFF, surrogateescape);
    writing those as ``\\udcXX`` escapes would be legal JSON grammar but is
    refused or silently altered by many collectors (PostgreSQL ``jsonb``,
    serde_json, Go), so each such byte becomes U+FFFD in the field and the
    exact bytes are added as lowercase hex under ``<field>_hex`` (for
    example ``filename_hex``), right after the field. The ``_hex`` field is
    present only when the field had undecodable bytes.
    """
    try:
        return _dumps(event).encode("utf-8")
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        pass
    fixed: dict[str, Any] = {}
    for key, value in event.items():
        key = _replaceSurrogates(str(key))
        if isinstance(value, str) and _hasSurrogate(value):
            fixed[key] = _replaceSurrogates(value)
            fixed[key + "_hex"] = _rawBytes(value).hex()
        else:
            fixed[key] = _clean(value)
    return _dumps(fixed).encode("utf-8")


_START_MESSAGES = {"read": "RRQ received", "write": "WRQ received"}


def eventOf(record: TransferRecord, server: str) -> dict[str, Any]:
    """The SPEC section 8 object of ``record`` as the sinks send it.

    ``record.asEvent`` leaves ``message`` empty for a start; SPEC 8 gives a
    start the message ``RRQ received`` / ``WRQ received`` (the text of the
    log line), so the sinks fill it in.
    """
    event = record.asEvent(server)
    if event["type"] == 0 and not event["message"]:
        event["message"] = _START_MESSAGES.get(record.op, "")
    return event


# -- shared helpers ------------------------------------------------------------


#: The rate-limited warnings of the sinks (at most one a WARNING_INTERVAL each).
_SEND_FAILED = "cannot send events to {target}: {error} ({failed} failed so far)"
_LOOKUP_FAILED = "cannot resolve event_udp host {host}: {error}"
_DELIVERY_FAILED = (
    "event delivery to {target} failing: {error}"
    " ({failed} failed, {dropped} dropped, {queued} queued)"
)
_QUEUE_FULL = (
    "event queue for {target} full ({maxQueue}): oldest events dropped ({dropped} dropped so far)"
)


def _splitHost(host: str) -> str:
    """``[::1]`` as written in configs is the address ``::1``."""
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def _ipLiteral(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


# -- UDP -----------------------------------------------------------------------


class _Silent(DatagramProtocol):
    """The sink's own UDP port; whatever arrives on it is ignored."""

    noisy = False

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        pass


@implementer(IResolutionReceiver)
class _Resolution:
    """Collects the addresses of one name lookup and hands the first to the sink."""

    def __init__(self, done: Callable[[list[str]], None]) -> None:
        self._done = done
        self._addresses: list[str] = []

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        pass

    def addressResolved(self, address: IAddress) -> None:
        if isinstance(address, IPv4Address | IPv6Address):
            self._addresses.append(address.host)

    def resolutionComplete(self) -> None:
        self._done(self._addresses)


@implementer(ITransferObserver)
class UDPEventSink:
    """One JSON datagram per event to ``host:port`` (the ``event_udp`` key).

    ``host`` is an IPv4 or IPv6 literal (brackets allowed) or a name. A name
    is looked up without blocking (``getaddrinfo`` in the reactor's thread
    pool) by :meth:`start` and again by :meth:`reload` (SIGHUP); the first
    address returned is used. Until the first lookup succeeds, events are
    counted in ``dropped`` and the lookup is tried again every
    ``LOOKUP_RETRY`` seconds; a later lookup that fails keeps the previous
    address. The datagrams leave from an ephemeral port of the sink's own.

    Counters: ``delivered`` (handed to the kernel; UDP gives no receipt),
    ``failed`` (the send raised: no route, message too long, ...),
    ``dropped`` (no address yet, or the sink not running).
    """

    name = "udp"

    def __init__(self, reactor: Any, host: str, port: int, *, server: str = "") -> None:
        self.reactor = reactor
        self.host = _splitHost(host)
        self.port = port
        self.server = server or socket.gethostname()
        self.address: str | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self._udp: Any = None  # an IListeningPort that is also an IUDPTransport
        self._udpFamily: int | None = None
        self._running = False
        self._lookup = 0  # generation of the newest lookup; older results are ignored
        self._lookupAgain: IDelayedCall | None = None
        self._sendFailed = RateLimitedLog(_log, reactor, WARNING_INTERVAL)
        self._lookupFailed = RateLimitedLog(_log, reactor, WARNING_INTERVAL)

    @property
    def target(self) -> str:
        """``host:port`` as configured, for log lines."""
        return formatAddress(self.host, self.port)

    def start(self) -> None:
        """Start sending: look the host up (or take the literal) and open a port."""
        if self._running:
            return
        self._running = True
        self._resolve()

    def reload(self) -> None:
        """Look the host up again (SIGHUP): a collector may have moved."""
        if self._running:
            self._resolve()

    def stop(self) -> Deferred[None]:
        """Stop sending and close the port; later events are counted as dropped."""
        self._running = False
        self._lookup += 1
        self._cancelLookupAgain()
        udp, self._udp = self._udp, None
        self._udpFamily = None
        d: Deferred[None] = Deferred()
        if udp is None:
            d.callback(None)
            return d
        result = udp.stopListening()
        if isinstance(result, Deferred):
            result.addBoth(lambda _: d.callback(None))
        else:
            d.callback(None)
        return d

    def _cancelLookupAgain(self) -> None:
        if self._lookupAgain is not None and self._lookupAgain.active():
            self._lookupAgain.cancel()
        self._lookupAgain = None

    def _resolve(self) -> None:
        self._cancelLookupAgain()
        literal = _ipLiteral(self.host)
        if literal is not None:
            self._use(literal)
            return
        self._lookup += 1
        generation = self._lookup
        if IReactorPluggableNameResolver.providedBy(self.reactor):
            self.reactor.nameResolver.resolveHostName(
                _Resolution(lambda found: self._resolved(generation, found, None)),
                self.host,
                self.port,
                transportSemantics="UDP",
            )
        else:  # a reactor without the pluggable resolver: IPv4 names only
            d = self.reactor.resolve(self.host)
            d.addCallbacks(
                lambda ip: self._resolved(generation, [ip], None),
                lambda f: self._resolved(generation, [], f.getErrorMessage()),
            )

    def _resolved(self, generation: int, found: list[str], error: str | None) -> None:
        if generation != self._lookup or not self._running:
            return
        if not found:
            keeping = f"; still sending to {self.address}" if self.address else ""
            self._lookupFailed(
                _LOOKUP_FAILED, host=self.host, error=(error or "no address") + keeping
            )
            if self.address is None:
                self._lookupAgain = self.reactor.callLater(LOOKUP_RETRY, self._resolve)
            return
        self._lookupFailed.clear()
        self._use(found[0])

    def _use(self, address: str) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        if self._udp is not None and self._udpFamily != family:
            self._udp.stopListening()
            self._udp = None
        if self._udp is None:
            try:
                self._udp = self.reactor.listenUDP(
                    0, _Silent(), interface="::" if family == socket.AF_INET6 else ""
                )
            except Exception as e:  # no IPv6 on this host, no ports left
                self._sendFailed(_SEND_FAILED, target=self.target, error=str(e), failed=self.failed)
                return
            self._udpFamily = family
        self.address = address

    def _send(self, record: TransferRecord) -> None:
        udp = self._udp
        if not self._running or udp is None or self.address is None:
            self.dropped += 1
            return
        try:
            udp.write(encodeEvent(eventOf(record, self.server)), (self.address, self.port))
        except Exception as e:
            self.failed += 1
            self._sendFailed(
                _SEND_FAILED, target=self.target, error=str(e) or repr(e), failed=self.failed
            )
            return
        self.delivered += 1

    def transferStarted(self, record: TransferRecord) -> None:
        self._send(record)

    def transferEnded(self, record: TransferRecord) -> None:
        self._send(record)


# -- HTTP ----------------------------------------------------------------------


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body already in memory, written at once.

    treq's default producer for bytes streams through a cooperator on the
    global reactor; an event is a few hundred bytes, so one write is simpler
    and keeps the sink on the reactor it was given.
    """

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Discard(Protocol):
    """Reads a response body and throws it away.

    Answers are not interesting, and reading them into memory would let a
    receiver make ctftp grow; cancelling ``finished`` aborts the connection
    (a receiver that sends headers and then stalls).
    """

    def __init__(self) -> None:
        self.finished: Deferred[None] = Deferred(self._cancel)

    def _cancel(self, d: Deferred[None]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.finished.called:
            self.finished.callback(None)


def _retryAfter(response: IResponse) -> float | None:
    """The ``Retry-After`` of a 429/503 in seconds, when given as a number."""
    values = response.headers.getRawHeaders(b"retry-after")
    if not values:
        return None
    try:
        return max(0.0, float(values[0]))
    except ValueError:
        return None  # an HTTP date: the exponential back-off applies


class _Delivery:
    """One event between the queue and its end: in flight or waiting to retry."""

    __slots__ = ("body", "failures", "request", "timeoutCall", "retryCall", "timedOut")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.failures = 0
        self.request: Deferred[Any] | None = None
        self.timeoutCall: IDelayedCall | None = None
        self.retryCall: IDelayedCall | None = None
        self.timedOut = False


_HEADERS = {b"Content-Type": [b"application/json"], b"User-Agent": [b"ctftp"]}


@implementer(ITransferObserver)
class HTTPEventSink:
    """POSTs each event as JSON to ``url`` (the ``event_http_url`` key), through treq.

    An observer call encodes the event and appends it to a queue of at most
    ``maxQueue`` events; when the queue is full the **oldest** queued event
    is dropped (during an outage the freshest events are the ones an
    operator still acts on). At most ``maxInFlight`` events are being
    delivered at once; each POST, answer included, gets ``timeout``
    seconds. A connection error, a timeout, 5xx, 408 or 429 is retried after
    ``baseDelay * 2**n`` seconds (n = 0, 1, ...; at most ``maxDelay``, or the
    answer's ``Retry-After`` when longer), ``maxRetries`` times; then the
    event counts as failed. Any other answer outside 2xx (4xx, redirects) is
    not retried: the event counts as failed at once. The slot an event holds
    while it waits for a retry is not given to another event, which is what
    keeps a dead receiver from being hammered.

    ``https://`` URLs are verified against the system's CAs with
    service-identity checking the host name, or only against the CAs of the
    PEM file ``caBundle`` when given. ``agent`` replaces the whole
    ``IAgent`` (tests, a proxy).

    Counters: ``delivered`` (2xx), ``retried`` (POSTs that were retries),
    ``failed`` (given up: retries exhausted or refused by a 4xx),
    ``dropped`` (queue full, sink stopped, or still pending when ``stop``
    gave up), ``offered`` (events given to the sink), and the gauges
    ``queued`` and ``inFlight``. ``offered == delivered + failed + dropped +
    queued + inFlight`` at any time.

    :meth:`start` begins sending (events before it are queued); :meth:`stop`
    lets pending events go out for up to ``drainTimeout`` seconds.
    """

    name = "http"

    def __init__(
        self,
        reactor: Any,
        url: str,
        *,
        maxQueue: int = 10000,
        maxInFlight: int = 4,
        maxRetries: int = 5,
        baseDelay: float = 0.5,
        maxDelay: float = 30.0,
        timeout: float = 10.0,
        drainTimeout: float = 2.0,
        caBundle: str | None = None,
        agent: IAgent | None = None,
        server: str = "",
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"event_http_url must be an http:// or https:// URL, not {url!r}")
        if maxQueue < 1 or maxInFlight < 1 or maxRetries < 0:
            raise ValueError("maxQueue and maxInFlight must be positive, maxRetries >= 0")
        self.reactor = reactor
        self.url, self._auth = splitCredentials(url)
        self.target = displayURL(url, query=False)
        self.maxQueue = maxQueue
        self.maxInFlight = maxInFlight
        self.maxRetries = maxRetries
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.timeout = timeout
        self.drainTimeout = drainTimeout
        self.server = server or socket.gethostname()
        from treq.client import HTTPClient  # loads TLS: see ctftp.webclient

        self._pool: HTTPConnectionPool | None = None
        if agent is None:
            trustRoot = loadTrustRoot(caBundle) if caBundle else None
            agent, self._pool = pooledAgent(reactor, trustRoot=trustRoot, maxPerHost=maxInFlight)
        self._client = HTTPClient(agent, data_to_body_producer=_BytesProducer)

        self.delivered = 0
        self.retried = 0
        self.failed = 0
        self.dropped = 0
        self.offered = 0
        self._queue: deque[bytes] = deque()
        self._active: set[_Delivery] = set()
        self._state = "new"  # new -> running -> draining -> stopped
        self._pumpCall: IDelayedCall | None = None
        self._drainCall: IDelayedCall | None = None
        self._stopped: Deferred[None] | None = None
        self._deliveryFailed = RateLimitedLog(_log, reactor, WARNING_INTERVAL)
        self._queueFull = RateLimitedLog(_log, reactor, WARNING_INTERVAL)

    # -- gauges

    @property
    def queued(self) -> int:
        """Events waiting in the queue (not yet picked up for a POST)."""
        return len(self._queue)

    @property
    def inFlight(self) -> int:
        """Events being POSTed or waiting for their next retry."""
        return len(self._active)

    # -- life cycle

    def start(self) -> None:
        """Begin POSTing, including what was queued before."""
        if self._state != "new":
            return
        self._state = "running"
        self._schedulePump()

    def reload(self) -> None:
        """Close idle connections (SIGHUP), so the next POST looks the host up again."""
        if self._pool is not None and self._state == "running":
            self._pool.closeCachedConnections()

    def stop(self) -> Deferred[None]:
        """Stop taking events; give pending ones ``drainTimeout`` seconds to go out.

        The Deferred fires when everything was delivered (or failed) or when
        the time is up; whatever is still pending then is abandoned, its
        POSTs cancelled, and counted in ``dropped``. It never fails.
        """
        if self._stopped is not None:
            return self._chainStopped()
        self._stopped = Deferred()
        self._state = "draining"  # queued events get their chance, even without start()
        if self._pumpCall is not None and self._pumpCall.active():
            self._pumpCall.cancel()
        self._pumpCall = None
        self._pump()
        if self._active or self._queue:
            self._drainCall = self.reactor.callLater(self.drainTimeout, self._abandon)
        else:
            self._finishStop()
        return self._chainStopped()

    def _chainStopped(self) -> Deferred[None]:
        """A new Deferred on the one stop: each caller may add its own callbacks."""
        assert self._stopped is not None
        d: Deferred[None] = Deferred()

        def fire(result: None) -> None:
            d.callback(None)
            return result

        self._stopped.addBoth(fire)
        return d

    def _abandon(self) -> None:
        """``drainTimeout`` is up: drop the rest."""
        self._drainCall = None
        self._state = "stopped"
        pending = list(self._active)
        self._active.clear()
        self.dropped += len(pending) + len(self._queue)
        self._queue.clear()
        for delivery in pending:
            if delivery.retryCall is not None and delivery.retryCall.active():
                delivery.retryCall.cancel()
            if delivery.timeoutCall is not None and delivery.timeoutCall.active():
                delivery.timeoutCall.cancel()
            if delivery.request is not None:
                delivery.request.cancel()  # its errback finds the sink stopped
        if pending:
            _log.warn(
                "stopping: {count} events for {target} not delivered in {seconds} s, dropped",
                count=len(pending),
                target=self.target,
                seconds=self.drainTimeout,
            )
        self._finishStop()

    def _finishStop(self) -> None:
        self._state = "stopped"
        if self._drainCall is not None and self._drainCall.active():
            self._drainCall.cancel()
        self._drainCall = None
        stopped = self._stopped
        assert stopped is not None
        if self._pool is None:
            stopped.callback(None)
            return
        closing = self._pool.closeCachedConnections()
        closing.addBoth(lambda _: stopped.callback(None))

    # -- the observer side: only enqueue

    def transferStarted(self, record: TransferRecord) -> None:
        self._offer(record)

    def transferEnded(self, record: TransferRecord) -> None:
        self._offer(record)

    def _offer(self, record: TransferRecord) -> None:
        self.offered += 1
        if self._state in ("draining", "stopped"):
            self.dropped += 1
            return
        # Encoded now: the record goes on changing after this call.
        body = encodeEvent(eventOf(record, self.server))
        if len(self._queue) >= self.maxQueue:
            self._queue.popleft()
            self.dropped += 1
            self._queueFull(
                _QUEUE_FULL, target=self.target, maxQueue=self.maxQueue, dropped=self.dropped
            )
        self._queue.append(body)
        self._schedulePump()

    def _schedulePump(self) -> None:
        """Start POSTs on the next reactor turn, never inside the server's call."""
        if self._state == "running" and self._pumpCall is None and self._queue:
            self._pumpCall = self.reactor.callLater(0, self._pump)

    # -- the delivery side

    def _pump(self) -> None:
        self._pumpCall = None
        while (
            self._state in ("running", "draining")
            and self._queue
            and len(self._active) < self.maxInFlight
        ):
            delivery = _Delivery(self._queue.popleft())
            self._active.add(delivery)
            self._post(delivery)

    def _post(self, delivery: _Delivery) -> None:
        delivery.retryCall = None
        delivery.timedOut = False
        try:
            d = self._client.post(
                self.url,
                data=delivery.body,
                headers=Headers(_HEADERS),
                allow_redirects=False,
                unbuffered=True,
                auth=self._auth,
            )
        except Exception:
            d = Deferred()
            d.errback(Failure())
        d.addCallback(self._readBody)
        delivery.request = d
        delivery.timeoutCall = self.reactor.callLater(self.timeout, self._timedOut, delivery)
        d.addBoth(self._answered, delivery)

    @staticmethod
    def _readBody(response: IResponse) -> Deferred[IResponse]:
        """Wait for the end of the answer (discarded), so the connection can be reused."""
        body = _Discard()
        response.deliverBody(body)
        return body.finished.addCallback(lambda _: response)

    def _timedOut(self, delivery: _Delivery) -> None:
        delivery.timeoutCall = None
        delivery.timedOut = True
        if delivery.request is not None:
            delivery.request.cancel()

    def _answered(self, result: IResponse | Failure, delivery: _Delivery) -> None:
        if delivery.timeoutCall is not None and delivery.timeoutCall.active():
            delivery.timeoutCall.cancel()
        delivery.timeoutCall = None
        delivery.request = None
        if delivery not in self._active:
            return  # abandoned by stop(), already counted as dropped
        retryAfter = None
        if isinstance(result, Failure):
            error = f"timed out after {self.timeout} s" if delivery.timedOut else _describe(result)
            retryable = True
        elif 200 <= result.code < 300:
            self.delivered += 1
            if self._deliveryFailed.active:
                _log.info("event delivery to {target} works again", target=self.target)
                self._deliveryFailed.clear()
            self._done(delivery)
            return
        else:
            error = f"HTTP {result.code}"
            retryable = result.code >= 500 or result.code in (408, 429)
            if retryable:
                retryAfter = _retryAfter(result)
        delivery.failures += 1
        if not retryable or delivery.failures > self.maxRetries:
            self.failed += 1
            self._deliveryFailed(
                _DELIVERY_FAILED,
                target=self.target,
                error=error,
                failed=self.failed,
                dropped=self.dropped,
                queued=self.queued,
            )
            self._done(delivery)
            return
        delay = self.backoff(delivery.failures)
        if retryAfter is not None:
            delay = min(self.maxDelay, max(delay, retryAfter))
        delivery.retryCall = self.reactor.callLater(delay, self._retry, delivery)

    def backoff(self, failures: int) -> float:
        """Seconds to wait before the retry that follows failure number ``failures`` (1-based)."""
        return float(min(self.maxDelay, self.baseDelay * 2 ** (failures - 1)))

    def _retry(self, delivery: _Delivery) -> None:
        self.retried += 1
        self._post(delivery)

    def _done(self, delivery: _Delivery) -> None:
        self._active.discard(delivery)
        self._pump()
        if self._state == "draining" and not self._active and not self._queue:
            self._finishStop()


def _describe(failure: Failure) -> str:
    """A short reason for a failed POST; Agent wraps the interesting one in a list."""
    value = failure.value
    reasons = getattr(value, "reasons", None)
    if reasons:
        value = reasons[0].value
    text = str(value) or type(value).__name__
    return text.replace("\n", " ")
