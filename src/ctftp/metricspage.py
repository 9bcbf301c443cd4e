"""The HTTP side of ``metrics_listen``: a ``twisted.web`` site serving ``/metrics``.

Kept apart from :mod:`ctftp.metrics` so that ``twisted.web``'s server (and
``twisted.application.internet``) are loaded only by a server that listens
for scrapes.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TCPServer
from twisted.application.service import IService
from twisted.web import http, pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from ctftp.metrics import CONTENT_TYPE, Metrics

__all__ = ["MetricsResource", "metricsService", "metricsSite"]


class MetricsResource(Resource):
    """``GET /metrics``: :meth:`Metrics.render` with the 0.0.4 content type."""

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render(self, request: Request) -> bytes:
        """GET and HEAD only (Twisted strips the body of HEAD); 405 otherwise."""
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"Allow", b"GET, HEAD")
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"method not allowed\n"
        request.setHeader(b"Content-Type", CONTENT_TYPE)
        request.setHeader(b"Cache-Control", b"no-store")
        return self.metrics.render()


class _Root(Resource):
    """``/metrics`` and a plain 404 for everything else."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        return pages.notFound()


class _QuietSite(Site):
    """A Site that writes no access-log line: Prometheus scrapes every few seconds."""

    def log(self, request: http.Request) -> None:
        pass


def metricsSite(metrics: Metrics) -> Site:
    """A ``twisted.web`` site serving ``/metrics`` (other paths are 404).

    Listen with it on ``metrics_listen``, e.g.
    ``reactor.listenTCP(port, metricsSite(metrics), interface=host)``.
    """
    root = _Root()
    root.putChild(b"metrics", MetricsResource(metrics))
    site = _QuietSite(root)
    site.displayTracebacks = False
    site.noisy = False
    return site


def metricsService(metrics: Metrics, host: str, port: int, reactor: Any) -> IService:
    """The service that listens on ``metrics_listen`` (``host``, ``port``)."""
    service = TCPServer(port, metricsSite(metrics), interface=host, reactor=reactor)
    service.setName("metrics")
    return service
