"""The HTTP relay (SPEC section 6): URL symlinks and ``fallback_url`` served through treq.

:class:`RelaySource` is the read source when ``http_relay`` is on. It walks
the requested name like :class:`~ctftp.sources.LocalFileSource` (same roots,
same safety rules) and serves a local file as that source does; a URL symlink
met on the way, or a name no root has while ``fallback_url`` is set, becomes
a :class:`~ctftp.resolver.RemoteTarget` that :class:`HTTPRelay` fetches.

How a body reaches the client:

* a ``200`` with a Content-Length and no content encoding *streams*: the
  transfer starts as soon as the headers are in, tsize is the
  Content-Length, and each DATA goes out once its bytes have arrived
  (:class:`RelayFile` returns a Deferred from ``read`` while they have not,
  and :class:`ctftp.transfer.ReadTransfer` waits without spending retries);
* a compressed body (``Accept-Encoding: gzip`` is sent unless the link says
  ``nocompress``; treq decodes it), a body without a length, and any body
  read in netascii mode (the conversion and its tsize need it whole) are
  downloaded first, then served;
* every body is bounded by ``relay_max_bytes`` (ERROR 3 past it) and by
  ``http_timeout_sec`` of silence (ERROR 0); a body shorter than its
  Content-Length, or cut off, fails every reader with ERROR 0: the final
  short DATA never goes out before the body is known complete.

One origin request serves everyone asking for the same URL meanwhile: while
the headers are awaited, askers wait on that request; while the body
downloads, they read the same :class:`~ctftp.httpcache.Body` at their own
pace. Complete bodies go to the :class:`~ctftp.httpcache.CacheIndex` when HTTP
allows; a stale entry is revalidated with a conditional GET, and a 304 serves
the stored body again.

Errors: 404 and 410 are ERROR 1 (``file_not_found``); any other status,
a refused connection, a TLS failure, a timeout or a truncated body is ERROR 0
with a message and the ``relay_failed`` event message.
"""

from __future__ import annotations

from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet import error as netError
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from ctftp.config import ServerConfig, unusableFolder
from ctftp.errors import RequestRefused
from ctftp.events import quoteName
from ctftp.httpcache import (
    CACHED_HEADERS,
    Body,
    CacheIndex,
    CachePolicy,
    Entry,
    MemoryStorage,
    cachePolicy,
)
from ctftp.logs import logger
from ctftp.netascii import encodedSize
from ctftp.packets import ErrorCode
from ctftp.resolver import RemoteTarget, fallbackTarget
from ctftp.sources import IReadFile, IReadSource, LocalFileSource, ReadRequest
from ctftp.webclient import displayURL, loadTrustRoot, pooledAgent, splitCredentials

if TYPE_CHECKING:
    from treq.client import HTTPClient
    from twisted.web.client import HTTPConnectionPool

__all__ = [
    "HTTPRelay",
    "RelayFile",
    "RelayService",
    "RelaySource",
    "relayFromConfig",
    "relayFailed",
]

_log = logger("ctftp.relay")

_OK_STATUSES = (200, 203)
_GONE_STATUSES = (404, 410)
_USER_AGENT = b"ctftp"


def relayFailed(message: str) -> RequestRefused:
    """ERROR 0 with ``message`` and the ``relay_failed`` event message."""
    return RequestRefused(ErrorCode.NOT_DEFINED, message, "relay_failed")


def _tooLarge() -> RequestRefused:
    return RequestRefused(ErrorCode.DISK_FULL, "File too large for the relay", "relay_failed")


def _notFound() -> RequestRefused:
    return RequestRefused(ErrorCode.FILE_NOT_FOUND, "File not found")


def _describe(failure: Failure) -> str:
    """A short, client-safe reason for a failed origin request."""
    from twisted.web.client import ResponseFailed, ResponseNeverReceived  # loaded by then

    value = failure.value
    reasons = getattr(value, "reasons", None)
    if isinstance(value, ResponseNeverReceived | ResponseFailed) and reasons:
        inner = reasons[0]
        if inner.check(CancelledError):
            return "origin timed out"
        value = inner.value
    if isinstance(value, CancelledError | netError.TimeoutError):
        return "origin timed out"
    if isinstance(value, netError.ConnectionRefusedError):
        return "origin refused the connection"
    if isinstance(value, netError.DNSLookupError):
        return "origin host not found"
    module = type(value).__module__
    if module.startswith(("OpenSSL", "service_identity")) or "SSL" in type(value).__name__:
        return "TLS failure talking to the origin"
    if isinstance(value, netError.ConnectError | netError.ConnectionLost | ConnectionError):
        return "connection to the origin failed"
    return f"origin request failed ({type(value).__name__})"


# -- reading -------------------------------------------------------------------


@implementer(IReadFile)
class RelayFile:
    """One transfer's reader of a shared :class:`~ctftp.httpcache.Body`.

    ``read`` returns bytes when they have arrived (or the body is complete),
    else a Deferred that fires once they have; it fails with the body's
    error. ``size`` is the Content-Length while streaming, the real size
    once complete.
    """

    path = None

    def __init__(self, body: Body) -> None:
        body.storage.acquire()
        self._body = body
        self._offset = 0
        self._waiter: Any = None
        self._closed = False
        self.size = body.length if body.complete else body.expected

    # IReadFile.read is declared ``-> bytes`` because NetasciiReader and
    # embedders rely on it; ReadTransfer also takes a Deferred (see there).
    def read(self, size: int) -> bytes | Deferred[bytes]:  # type: ignore[override]
        data = self._body.readAt(self._offset, size)
        if data is not None:
            self._offset += len(data)
            return data
        d: Deferred[bytes] = Deferred(self._cancel)

        def wake() -> None:
            self._waiter = None
            try:
                chunk = self._body.readAt(self._offset, size)
            except RequestRefused as e:
                d.errback(e)
                return
            if chunk is None:  # cannot happen: woken when enough is there
                self._waiter = self._body.wait(self._offset + size, wake)
                return
            self._offset += len(chunk)
            d.callback(chunk)

        self._waiter = self._body.wait(self._offset + size, wake)
        return d

    def _cancel(self, d: Deferred[bytes] | None) -> None:
        if self._waiter is not None:
            self._body.forget(self._waiter)
            self._waiter = None

    def netasciiSize(self) -> int | None:
        if not self._body.complete:
            return None
        return sum(encodedSize(chunk) for chunk in self._body.chunks())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel(None)
        self._body.storage.release()


# -- the download ----------------------------------------------------------------


class _BodyReceiver(Protocol):
    """Feeds a response body into a :class:`Body`, with the stall timeout
    and the size bound; ``done`` runs once, after the body ended or failed."""

    def __init__(
        self,
        body: Body,
        clock: IReactorTime,
        timeout: float,
        maxBytes: int,
        url: str,
        done: Any,
    ) -> None:
        self.body = body
        self.clock = clock
        self.timeout = timeout
        self.maxBytes = maxBytes
        self.url = url
        self.done = done
        self._timer: IDelayedCall | None = None
        self._over = False

    def connectionMade(self) -> None:
        self._timer = self.clock.callLater(self.timeout, self._stalled)

    def dataReceived(self, data: bytes) -> None:
        if self._over:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.timeout)
        if self.maxBytes and self.body.length + len(data) > self.maxBytes:
            _log.warn(
                "relay: {url} is larger than relay_max_bytes ({limit})",
                url=displayURL(self.url),
                limit=self.maxBytes,
            )
            self._abort(_tooLarge())
            return
        try:
            self.body.append(data)
        except OSError as e:
            _log.error("relay: cannot keep {url}: {error}", url=displayURL(self.url), error=e)
            self._abort(relayFailed("relay cannot store the file"))

    def _stalled(self) -> None:
        self._timer = None
        _log.warn(
            "relay: {url} sent nothing for {timeout} s",
            url=displayURL(self.url),
            timeout=self.timeout,
        )
        self._abort(relayFailed("origin timed out"))

    def _abort(self, error: RequestRefused) -> None:
        self._end(error)
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Service stop: abandon the download."""
        self._abort(relayFailed("server stopping"))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._over:
            return
        from twisted.web.client import ResponseDone  # loaded by the request

        body = self.body
        if reason is not None and reason.check(ResponseDone, PotentialDataLoss):
            if body.expected is not None and body.length != body.expected:
                self._end(relayFailed("origin sent a truncated file"))
            else:
                self._end(None)
            return
        _log.warn(
            "relay: {url} was cut off after {length} bytes",
            url=displayURL(self.url),
            length=body.length,
        )
        self._end(relayFailed("origin sent a truncated file"))

    def _end(self, error: RequestRefused | None) -> None:
        if self._over:
            return
        self._over = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.done(self, error)


class _Discard(Protocol):
    """Reads a body nobody wants (an error page) so the connection is reused."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        pass


@implementer(IAgent)
class _IdentityAgent:
    """Asks for an uncompressed body (``nocompress``): treq always wraps its
    agent to offer gzip, so the offer is taken back on the way out."""

    def __init__(self, agent: IAgent) -> None:
        self._agent = agent

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        headers = headers.copy() if headers is not None else Headers()
        headers.removeHeader(b"accept-encoding")
        headers.setRawHeaders(b"accept-encoding", [b"identity"])
        return self._agent.request(method, uri, headers, bodyProducer)


class _Request:
    """One origin request in flight and everyone waiting for its answer."""

    def __init__(self, url: str, entry: Entry | None) -> None:
        self.url = url
        self.entry = entry  # the stale entry being revalidated, if any
        self.waiters: list[Deferred[Body]] = []
        self.d: Deferred[Any] | None = None
        self.timer: IDelayedCall | None = None

    def join(self) -> Deferred[Body]:
        d: Deferred[Body] = Deferred()
        self.waiters.append(d)
        return d

    def succeed(self, body: Body) -> None:
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.callback(body)

    def fail(self, error: RequestRefused) -> None:
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.errback(error)


class HTTPRelay:
    """Fetches URLs through treq, shares downloads and keeps the cache.

    ``reactor`` makes the connections; ``clock`` (default: the reactor)
    times them out and dates the cache, so tests drive expiry with
    ``task.Clock``. ``agent`` replaces the default one (tests, a proxy);
    ``caBundle`` adds private CAs for https origins; otherwise certificates
    are checked as treq and service-identity do, against the system's CAs.
    """

    def __init__(
        self,
        reactor: Any,
        *,
        clock: IReactorTime | None = None,
        timeout: float = 30.0,
        maxBytes: int = 64 * 1024**2,
        cacheMaxBytes: int = 64 * 1024**2,
        cacheDir: str = "",
        agent: IAgent | None = None,
        caBundle: str | None = None,
    ) -> None:
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.timeout = timeout
        self.maxBytes = maxBytes
        self.cache = CacheIndex(cacheMaxBytes, cacheDir)
        self.cache.load()
        self._agent = agent
        self._trustRoot = loadTrustRoot(caBundle) if caBundle else None
        self._pool: HTTPConnectionPool | None = None
        self._clients: tuple[HTTPClient, HTTPClient] | None = None
        self._requests: dict[str, _Request] = {}
        self._downloads: dict[str, Body] = {}
        self._receivers: set[_BodyReceiver] = set()
        self._stopping = False
        self.originRequests = 0
        self.hits = 0
        self.shared = 0

    def _client(self, nocompress: bool) -> HTTPClient:
        """The treq client for one request, built at the first (the import
        loads TLS, see :mod:`ctftp.webclient`)."""
        if self._clients is None:
            from treq.client import HTTPClient
            from treq.cookies import IndexableCookieJar

            agent = self._agent
            if agent is None:
                agent, self._pool = pooledAgent(self.reactor, trustRoot=self._trustRoot)
            # An origin's cookies must not follow one client's request into
            # another's: the jar keeps none.
            jar = IndexableCookieJar(DefaultCookiePolicy(allowed_domains=[]))
            self._clients = (
                HTTPClient(agent, cookiejar=jar),
                HTTPClient(_IdentityAgent(agent), cookiejar=jar),
            )
        return self._clients[1 if nocompress else 0]

    # -- asking --

    def open(self, target: RemoteTarget) -> Deferred[Body]:
        """The body of ``target.url``: fires once it can be read (streaming
        may still be going on), fails with :class:`RequestRefused`."""
        url = target.url
        if target.nocache:
            return self._request(url, target.nocompress, None, shared=False)
        request = self._requests.get(url)
        if request is not None:
            self.shared += 1
            return request.join()
        body = self._downloads.get(url)
        if body is not None and body.usable:
            self.shared += 1
            return succeed(body)
        entry = self.cache.get(url)
        if entry is not None and not entry.body.storage.present():
            _log.warn("relay: cached file of {url} has gone; fetching again", url=displayURL(url))
            self.cache.drop(url)
            entry = None
        if entry is not None:
            if entry.fresh(self.clock.seconds()):
                self.hits += 1
                _log.debug("relay: cache hit for {url}", url=displayURL(url))
                return succeed(entry.body)
            return self._request(url, target.nocompress, entry, shared=True)
        return self._request(url, target.nocompress, None, shared=True)

    def _request(
        self, url: str, nocompress: bool, entry: Entry | None, shared: bool
    ) -> Deferred[Body]:
        """Start one origin request (conditional when revalidating ``entry``);
        the result is the first asker's, others join while it runs."""
        request = _Request(url, entry)
        first = request.join()
        if shared:
            self._requests[url] = request
        headers = Headers({b"User-Agent": [_USER_AGENT]})
        if entry is not None:
            for name, value in entry.validators().items():
                headers.setRawHeaders(name.encode(), [value.encode("latin-1", "replace")])
        client = self._client(nocompress)
        self.originRequests += 1
        _log.debug(
            "relay: GET {url}{conditional}",
            url=displayURL(url),
            conditional=" (revalidating)" if entry is not None else "",
        )
        try:
            bare, auth = splitCredentials(url)
            d = client.get(bare, headers=headers, unbuffered=True, auth=auth)
        except Exception as e:  # a URL treq cannot even encode
            _log.warn("relay: bad URL {url}: {error}", url=displayURL(url), error=e)
            self._finishRequest(request, shared)
            request.fail(relayFailed("bad relay URL"))
            return first
        request.d = d
        request.timer = self.clock.callLater(self.timeout, d.cancel)
        d.addCallbacks(
            self._responded,
            self._requestFailed,
            callbackArgs=(request, shared),
            errbackArgs=(request, shared),
        )
        d.addErrback(self._bug, request, shared)
        return first

    def _bug(self, failure: Failure, request: _Request, shared: bool) -> None:
        """A fault of ctftp's own while handling a response: the askers get
        ERROR 0 rather than waiting for ever."""
        _log.failure("relay: handling {url} failed", failure, url=displayURL(request.url))
        self._finishRequest(request, shared)
        request.fail(relayFailed("relay failed"))

    def _finishRequest(self, request: _Request, shared: bool) -> None:
        if request.timer is not None and request.timer.active():
            request.timer.cancel()
        request.timer = None
        if shared and self._requests.get(request.url) is request:
            del self._requests[request.url]

    def _requestFailed(self, failure: Failure, request: _Request, shared: bool) -> None:
        self._finishRequest(request, shared)
        reason = "server stopping" if self._stopping else _describe(failure)
        _log.warn("relay: {url}: {reason}", url=displayURL(request.url), reason=reason)
        request.fail(relayFailed(reason))

    def _responded(self, response: Any, request: _Request, shared: bool) -> None:
        self._finishRequest(request, shared)
        url = request.url
        now = self.clock.seconds()
        headers = _cachedHeaders(response.headers)
        code = response.code
        if code == 304 and request.entry is not None:
            response.deliverBody(_Discard())
            entry = request.entry
            policy = cachePolicy({**entry.headers, **headers}, now)
            self.cache.refresh(entry, headers, policy)
            _log.debug("relay: {url} not modified", url=displayURL(url))
            request.succeed(entry.body)
            return
        if code not in _OK_STATUSES:
            response.deliverBody(_Discard())
            if code in _GONE_STATUSES:
                self.cache.drop(url)
                _log.info("relay: {url}: HTTP {code}", url=displayURL(url), code=code)
                request.fail(_notFound())
            else:
                _log.warn("relay: {url}: HTTP {code}", url=displayURL(url), code=code)
                request.fail(relayFailed(f"origin answered HTTP {code}"))
            return
        encodings = [
            e.strip().lower()
            for value in response.headers.getRawHeaders(b"content-encoding", [])
            for e in value.decode("latin-1").split(",")
            if e.strip().lower() not in ("", "identity")
        ]
        if encodings:  # not gzip (treq decoded that), and not asked for
            _log.warn(
                "relay: {url}: unsupported Content-Encoding {encodings}",
                url=displayURL(url),
                encodings=", ".join(encodings),
            )
            response.deliverBody(_Discard())
            request.fail(relayFailed("origin sent an unsupported Content-Encoding"))
            return
        length = response.length if response.length is not UNKNOWN_LENGTH else None
        if length is not None and self.maxBytes and length > self.maxBytes:
            _log.warn(
                "relay: {url} is larger than relay_max_bytes ({limit})",
                url=displayURL(url),
                limit=self.maxBytes,
            )
            response.deliverBody(_Discard())
            request.fail(_tooLarge())
            return
        try:
            storage = self.cache.newStorage(url) if shared else MemoryStorage()
        except OSError as e:
            _log.error("relay: cannot store {url}: {error}", url=displayURL(url), error=e)
            response.deliverBody(_Discard())
            request.fail(relayFailed("relay cannot store the file"))
            return
        body = Body(storage, length)
        storage.acquire()  # the download's own use, released when it ends
        policy = cachePolicy(headers, now)
        if shared:
            self._downloads[url] = body
        receiver = _BodyReceiver(
            body,
            self.clock,
            self.timeout,
            self.maxBytes,
            url,
            lambda r, error: self._downloaded(r, error, headers, policy, shared),
        )
        self._receivers.add(receiver)
        _log.info(
            "relay: {url}: HTTP {code}, {how}",
            url=displayURL(url),
            code=code,
            how=f"streaming {length} bytes" if length is not None else "downloading first",
        )
        request.succeed(body)
        response.deliverBody(receiver)

    def _downloaded(
        self,
        receiver: _BodyReceiver,
        error: RequestRefused | None,
        headers: dict[str, str],
        policy: CachePolicy,
        shared: bool,
    ) -> None:
        self._receivers.discard(receiver)
        body, url = receiver.body, receiver.url
        if shared and self._downloads.get(url) is body:
            del self._downloads[url]
        if error is not None:
            body.fail(error)
        else:
            if shared:
                self.cache.store(url, body, headers, policy)
            body.finish()
        body.storage.release()

    # -- stopping --

    def stop(self) -> Deferred[None]:
        """Abandon downloads and requests in flight, close idle connections;
        the cache folder stays for the next start."""
        self._stopping = True
        for request in list(self._requests.values()):
            if request.d is not None:
                request.d.cancel()
        for receiver in list(self._receivers):
            receiver.stop()
        self.cache.clear()
        if self._pool is not None:
            return self._pool.closeCachedConnections()
        return succeed(None)


def _cachedHeaders(headers: Headers) -> dict[str, str]:
    found = {}
    for name in CACHED_HEADERS:
        values = headers.getRawHeaders(name.encode())
        if values:
            found[name] = ", ".join(v.decode("latin-1") for v in values)
    return found


# -- the source ------------------------------------------------------------------


@implementer(IReadSource)
class RelaySource:
    """Local files as :class:`LocalFileSource` serves them, and URLs through
    ``relay``: URL symlinks, and ``fallbackURL`` for names no root has."""

    def __init__(self, local: LocalFileSource, relay: HTTPRelay, fallbackURL: str = "") -> None:
        self.local = local
        self.relay = relay
        self.fallbackURL = fallbackURL

    def openRead(self, request: ReadRequest) -> Any:
        try:
            located = self.local.locate(request, relay=True)
        except RequestRefused as e:
            if e.code != ErrorCode.FILE_NOT_FOUND or not self.fallbackURL:
                raise
            located = fallbackTarget(self.fallbackURL, request.filename)
        if isinstance(located, str):
            return self.local.openPath(located)
        _log.info(
            'file="{file}" relayed from {url}',
            file=quoteName(request.filename),
            url=displayURL(located.url),
        )
        whole = request.mode == "netascii"
        return self.relay.open(located).addCallback(self._opened, whole)

    @staticmethod
    def _opened(body: Body, whole: bool) -> Any:
        if body.complete or (body.expected is not None and not whole):
            return _reader(body)
        return body.whenComplete().addCallback(_reader)


def _reader(body: Body) -> RelayFile:
    try:
        return RelayFile(body)
    except OSError as e:
        _log.error("relay: cannot open a cached body: {error}", error=e)
        raise relayFailed("relay cannot read the file") from None


class RelayService(Service):
    """Stops the relay with the server: downloads abandoned, connections closed."""

    def __init__(self, relay: HTTPRelay) -> None:
        self.relay = relay
        self.setName("http-relay")

    def stopService(self) -> Any:
        super().stopService()
        return self.relay.stop()


def relayFromConfig(config: ServerConfig, reactor: Any) -> HTTPRelay:
    """The relay the config describes; a cache folder that cannot be made is
    a config error (one line), found before the server starts."""
    try:
        return HTTPRelay(
            reactor,
            timeout=config.http_timeout_sec,
            maxBytes=config.relay_max_bytes,
            cacheMaxBytes=config.cache_max_bytes,
            cacheDir=config.cache_dir,
        )
    except OSError as e:
        raise unusableFolder(config, "cache_dir", config.cache_dir or "", e) from None
