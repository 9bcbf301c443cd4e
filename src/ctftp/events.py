"""Transfer records and what observes them.

Every request that parses gets a :class:`TransferRecord`; the server tells its
:class:`ITransferObserver` s when it starts and when it ends (exactly once).
Shipped observers write ctftp's ``EVENT`` log lines and the per-file sidecar
lines; the events issue adds UDP/HTTP sinks and metrics on the same seam.
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from zope.interface import Interface, implementer

from ctftp.logs import logger, structuredFieldsWanted
from ctftp.sidecar import SidecarWriter, sidecarLine

__all__ = [
    "TransferRecord",
    "ITransferObserver",
    "LogEventObserver",
    "SidecarObserver",
    "formatAddress",
    "displayHost",
    "quoteName",
]

EVENT_START, EVENT_OK, EVENT_ERROR = 0, 1, 2
_log = logger("ctftp.events")

_ESCAPES = {
    ord('"'): '\\"',
    ord("\\"): "\\\\",
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def quoteName(name: str) -> str:
    """A filename as it appears between quotes in a log line.

    Quotes, backslashes and control characters are escaped, and bytes that
    were not UTF-8 (surrogate-escaped on decoding) are written as ``\\xNN``,
    so a line never breaks and never lies about the name.
    """
    if name.isprintable() and '"' not in name and "\\" not in name:
        return name  # nothing to escape: most names (a tenth of the cost of translate)
    out = name.translate(_ESCAPES)
    if out.isprintable():
        return out
    return "".join(
        c
        if c.isprintable()
        else f"\\x{ord(c) - 0xDC00:02x}"
        if 0xDC80 <= ord(c) <= 0xDCFF
        else f"\\x{ord(c):02x}"
        if ord(c) < 0x100
        else f"\\u{ord(c):04x}"
        for c in out
    )


def displayHost(host: str) -> str:
    """An IPv4-mapped IPv6 address shown as the IPv4 address it is."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def formatAddress(host: str, port: int) -> str:
    """``IP:PORT``, with IPv6 addresses in brackets."""
    host = displayHost(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _millis(timestamp: float) -> int:
    """Whole milliseconds since the epoch: what ``start`` and ``end`` show,
    so that ``duration_ms`` is exactly ``end - start`` as they read."""
    return math.floor(timestamp * 1000)


def _iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class TransferRecord:
    """One request, from parse to end; the fields of SPEC section 8."""

    op: str  # "read" or "write"
    filename: str
    mode: str
    clientHost: str
    clientPort: int
    listener: str
    start: float
    resolved: str | None = None
    localPath: str | None = None
    bytes: int = 0
    tsize: int | None = None
    blksize: int = 512
    windowsize: int = 1
    retransmits: int = 0
    status: str = "start"
    message: str = ""
    errorCode: int | None = None
    end: float | None = None

    @property
    def type(self) -> int:
        return {"start": EVENT_START, "ok": EVENT_OK}.get(self.status, EVENT_ERROR)

    def asEvent(self, server: str = "") -> dict[str, Any]:
        """The JSON object of SPEC section 8."""
        start = _millis(self.start)
        end = None if self.end is None else _millis(self.end)
        return {
            "type": self.type,
            "status": self.status,
            "message": self.message,
            "client_ip": displayHost(self.clientHost),
            "client_port": self.clientPort,
            "filename": self.filename,
            "resolved": self.resolved,
            "op": self.op,
            "mode": self.mode,
            "bytes": self.bytes,
            "tsize": self.tsize,
            "blksize": self.blksize,
            "windowsize": self.windowsize,
            "retransmits": self.retransmits,
            "error_code": self.errorCode,
            "start": _iso(start),
            "end": None if end is None else _iso(end),
            "duration_ms": None if end is None else end - start,
            "listener": self.listener,
            "server": server or socket.gethostname(),
        }


class ITransferObserver(Interface):
    """Told about every request: once when it starts, once when it ends."""

    def transferStarted(record: TransferRecord) -> None:
        """A request parsed; ``record.status`` is ``start``."""

    def transferEnded(record: TransferRecord) -> None:
        """The request ended; ``record.status`` is ``ok`` or ``error``."""


@implementer(ITransferObserver)
class LogEventObserver:
    """ctftp's ``EVENT ...`` lines in the central log.

    The log event carries the SPEC section 8 object as its ``event`` field, so
    an embedding application (or ``log_format=json``) gets the structure. It
    is built only when something can see it (``structuredFieldsWanted``):
    the text line does not need it, and it was a tenth of the cost of
    logging a small transfer.
    """

    _FORMAT = (
        'EVENT type={type} client={client} file="{file}" bytes={bytes} status={status} msg={msg}'
    )

    def __init__(self, server: str = "") -> None:
        self.server = server or socket.gethostname()

    def _emit(self, record: TransferRecord) -> None:
        structured = {"event": record.asEvent(self.server)} if structuredFieldsWanted() else {}
        _log.info(
            self._FORMAT,
            type=record.type,
            client=formatAddress(record.clientHost, record.clientPort),
            file=quoteName(record.filename),
            bytes=record.bytes,
            status=record.status,
            msg=record.message,
            **structured,
        )

    def transferStarted(self, record: TransferRecord) -> None:
        self._emit(record)

    def transferEnded(self, record: TransferRecord) -> None:
        self._emit(record)


@implementer(ITransferObserver)
class SidecarObserver:
    """The ``<file>.log`` line of a transfer that started on an existing file."""

    def __init__(self, writer: SidecarWriter) -> None:
        self.writer = writer

    def transferStarted(self, record: TransferRecord) -> None:
        pass

    def transferEnded(self, record: TransferRecord) -> None:
        if record.localPath is None:
            return
        self.writer.append(
            record.localPath,
            sidecarLine(
                record.start,
                record.end if record.end is not None else record.start,
                displayHost(record.clientHost),
                record.clientPort,
                record.bytes,
                record.status,
                record.message,
            ),
        )
