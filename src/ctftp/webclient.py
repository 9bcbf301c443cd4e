"""HTTP client plumbing shared by the relay and the HTTP event sink.

``twisted.web.client`` and treq load pyOpenSSL and cryptography when they
are imported: about 12 MB of a process that otherwise stays under 40. So
nothing here imports them at module level; :func:`pooledAgent` does, when a
client is actually built. The relay builds its client at its first origin
request and the event sink only when ``event_http_url`` is set, so a server
that serves local files loads no TLS code at all (the reactor's side of
that is :func:`ctftp.tap.importReactorWithoutTLS`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from twisted.web.client import HTTPConnectionPool
    from twisted.web.iweb import IAgent

__all__ = ["loadTrustRoot", "pooledAgent", "splitCredentials", "displayURL"]

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


def loadTrustRoot(path: str) -> Any:
    """The CAs of a PEM bundle, as a trust root for ``BrowserLikePolicyForHTTPS``.

    Raises OSError when the file cannot be read and ValueError when it holds
    no certificate or a broken one, so a bad ``event_ca_bundle`` stops the
    service at start instead of failing every POST later.
    """
    from twisted.internet import ssl

    with open(path, "rb") as f:
        data = f.read()
    blocks = _PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise ValueError(f"{path}: no PEM certificate found")
    try:
        certificates = [ssl.Certificate.loadPEM(block) for block in blocks]
    except Exception as e:
        raise ValueError(f"{path}: invalid certificate: {e}") from None
    return ssl.trustRootFromCertificates(certificates)


def pooledAgent(
    reactor: Any, *, trustRoot: Any = None, maxPerHost: int | None = None
) -> tuple[IAgent, HTTPConnectionPool]:
    """An ``Agent`` keeping connections open in its own pool (closed on stop),
    whose connections log nothing of their own.

    ``https://`` origins are checked against the system's CAs, with
    service-identity checking the host name, or only against ``trustRoot``
    (from :func:`loadTrustRoot`) when given. ``maxPerHost`` bounds the idle
    connections kept per origin.
    """
    from twisted.web.client import (
        Agent,
        BrowserLikePolicyForHTTPS,
        HTTPConnectionPool,
        _HTTP11ClientFactory,
    )

    class QuietFactory(_HTTP11ClientFactory):
        # A factory per connection, each logging "Starting factory" and
        # "Stopping factory": two lines in twistd's log for every attempt
        # to reach a dead event receiver or a new origin connection.
        noisy = False

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool._factory = QuietFactory
    if maxPerHost is not None:
        pool.maxPersistentPerHost = maxPerHost
    if trustRoot is None:
        return Agent(reactor, pool=pool), pool
    policy = BrowserLikePolicyForHTTPS(trustRoot=trustRoot)
    return Agent(reactor, contextFactory=policy, pool=pool), pool


def splitCredentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its ``user:password@``, and that user and password
    (percent-decoded) for HTTP basic authentication, or None.

    treq refuses a URL that carries them ("invalid hostname"); given as
    ``auth``, they go in an ``Authorization`` header, which Twisted's
    redirect handling drops when a redirect leaves the origin. Raises
    ValueError for a URL that cannot be parsed.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return bare, (unquote(parts.username or ""), unquote(parts.password or ""))


def displayURL(url: str, *, query: bool = True) -> str:
    """``url`` for log lines: user and password shown as ``***``, the
    fragment left out, and the query too unless ``query`` (an event
    receiver's query string may hold a token). Never raises."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.partition("://")[0] + "://(unparsable URL)"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query if query else "", ""))
