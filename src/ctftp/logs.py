"""
ctftp's logging: one publisher for every ctftp module, its line formats and
the central log file.

Every ctftp module logs through ``logger("ctftp.<module>")``, whose events go
to ``publisher`` rather than straight to Twisted's global publisher.  That
indirection lets ``configure`` drop events below ``log_level`` before anything
formats them (the server logs on its hot path), while the events that pass
still reach ``globalLogPublisher``, so twistd's log and an embedding
application's own observers see them.  Until ``configure`` runs, and again
after ``LogSetup.close``, ``publisher`` forwards every event unfiltered to the
global publisher, which is what a library embedded in someone else's
application should do.

With ``log_dir`` set, the events that pass are also written to
``log_dir/ctftp.log`` as ctftp text lines or JSON objects, together with every
error-level event of the rest of the process (an unhandled exception in a
protocol, a failed Deferred) so that a crash is visible where the operator
looks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import IO, Any, cast

from twisted.internet.interfaces import IReactorTime
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    LogPublisher,
    PredicateResult,
    formatEvent,
    globalLogPublisher,
)
from zope.interface import implementer

__all__ = [
    "FORMATTERS",
    "LEVELS",
    "LogFile",
    "LogSetup",
    "RateLimitedLog",
    "configure",
    "formatJSONLine",
    "formatTextLine",
    "levelName",
    "localSecond",
    "logger",
    "publisher",
    "streamObserver",
    "structuredFieldsWanted",
]

LOG_FILE_NAME = "ctftp.log"

#: Key set on every event that passed ctftp's publisher, so the observer that
#: copies the process's other error events into ctftp.log does not write
#: ctftp's own events a second time.  The ``log_`` prefix keeps it out of the
#: JSON fields.
_MARK = "log_ctftp"


class _CountingPublisher(LogPublisher):
    """A LogPublisher that knows its observers, so the hot path can tell
    whether anyone beyond ctftp's own observers is listening."""

    def __init__(self, *observers: ILogObserver) -> None:
        super().__init__(*observers)
        self._known: list[ILogObserver] = list(observers)

    @property
    def observerCount(self) -> int:
        return len(self._known)

    def addObserver(self, observer: ILogObserver) -> None:
        super().addObserver(observer)
        if observer not in self._known:
            self._known.append(observer)

    def removeObserver(self, observer: ILogObserver) -> None:
        super().removeObserver(observer)
        if observer in self._known:
            self._known.remove(observer)


publisher = _CountingPublisher(globalLogPublisher)
"""Where all ctftp loggers send their events; see the module docstring."""

#: The observers ``configure`` put on ``publisher``; the global publisher
#: itself while unconfigured.
_installed: list[ILogObserver] = [globalLogPublisher]
_current: LogSetup | None = None

LEVELS: dict[str, LogLevel] = {
    "error": LogLevel.error,
    "warn": LogLevel.warn,
    "info": LogLevel.info,
    "debug": LogLevel.debug,
}

_LEVEL_NAMES: dict[LogLevel, str] = {
    LogLevel.critical: "ERROR",
    LogLevel.error: "ERROR",
    LogLevel.warn: "WARN",
    LogLevel.info: "INFO",
    LogLevel.debug: "DEBUG",
}

_ERROR_LEVELS = frozenset((LogLevel.error, LogLevel.critical))

_JSON_TYPES = (str, int, float, list, tuple, dict, type(None))  # bool is an int


_ALL_LEVELS: frozenset[LogLevel] = frozenset(LogLevel.iterconstants())

#: Levels that currently reach any observer; ``_LevelLogger`` checks it first.
_enabledLevels = _ALL_LEVELS

#: False while ctftp.log is written as text: ctftp's own observer then uses an
#: info event's format fields only; see ``structuredFieldsWanted``.
_fieldsWanted = True


def structuredFieldsWanted() -> bool:
    """
    Whether an info event's extra structured fields (those its format does
    not name, like the EVENT line's SPEC 8 object) can reach an observer.

    Not while ctftp.log is written as text and ``publisher`` has no observer
    but ctftp's own: the text line only uses the format's fields, and info
    events do not go on to the global publisher then.  ``log_format=json``,
    no ``log_dir`` (every event goes to the global publisher) or an observer
    an embedding application added to ``publisher`` make it true.  Building
    such a field only when this is true saves its cost on the hot path.
    """
    return _fieldsWanted or publisher.observerCount > len(_installed)


class _LevelLogger(Logger):
    """
    A Logger that drops an event below ``log_level`` before building it.

    Twisted's ``Logger.emit`` validates the level, builds the event dict and
    reads the clock before any observer can filter; for a ``debug`` line on
    the per-packet path at ``log_level=info`` that is most of the cost, so
    the same decision the publisher's filter would take is taken here first.
    An event that passes is built as ``Logger.emit`` builds it, without its
    second check of the level (a sort of every level on each line).
    """

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        if level in _enabledLevels:
            kwargs.update(
                log_logger=self,
                log_level=level,
                log_namespace=self.namespace,
                log_source=self.source,
                log_format=format,
                log_time=time.time(),
            )
            if "log_trace" in kwargs:
                cast(list[Any], kwargs["log_trace"]).append((self, self.observer))
            self.observer(kwargs)
        elif level not in _ALL_LEVELS:
            Logger.emit(self, level, format, **kwargs)  # reports the invalid level


def logger(namespace: str) -> Logger:
    """
    Return a logger for a ctftp module, bound to ``publisher``.

    Binding to ``publisher`` instead of the global publisher is what makes
    ``log_level`` filtering and ctftp.log apply to ctftp's events only.
    """
    return _LevelLogger(namespace=namespace, observer=publisher)


def levelName(level: LogLevel) -> str:
    """
    Return the level as ctftp writes it; ``critical`` (Twisted's level for
    unhandled failures) is written ``ERROR``, since ctftp has no such level.
    """
    return _LEVEL_NAMES[level]


def _eventLevelName(event: LogEvent) -> str:
    """Level of an event, tolerating foreign events with a missing or odd level."""
    return _LEVEL_NAMES.get(event.get("log_level"), "INFO")  # type: ignore[arg-type]


# localtime() + strftime() for every line is measurable on a busy server, and
# many lines share a second: keep the last stamp.  The time zone names are part
# of the key so a tzset() (tests, a changed TZ) is not answered from the cache.
_stampCache: tuple[int, tuple[str, str], str] = (-1, ("", ""), "")


def localSecond(timestamp: float) -> str:
    """``2025-12-02T10:15:42`` for a POSIX timestamp, in local time (log and
    sidecar lines)."""
    global _stampCache
    second = int(timestamp)
    zone = time.tzname
    cachedSecond, cachedZone, stamp = _stampCache
    if second == cachedSecond and zone == cachedZone:
        return stamp
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))
    _stampCache = (second, zone, stamp)
    return stamp


def _traceback(event: LogEvent) -> str | None:
    """The traceback text of a ``log.failure`` event, or None for other events."""
    failure = event.get("log_failure")
    if failure is None:
        return None
    try:
        return str(failure.getTraceback()).rstrip("\n")
    except Exception as error:  # a broken Failure must not lose the log line
        return f"(unable to format traceback: {error!r})"


def _message(event: LogEvent) -> str:
    """
    ``formatEvent(event)``, with a fast path.

    Twisted's formatter supports ``{method()}`` calls in formats and costs
    about 10 us a line; a plain ``str.format_map`` gives the same text for
    every ordinary format in a fraction of that, and anything it cannot
    handle (calls, positional fields, bytes formats, flattened events) goes
    to ``formatEvent``.
    """
    fmt = event.get("log_format")
    if type(fmt) is str and "log_flattened" not in event:
        try:
            return fmt.format_map(event)
        except Exception:
            pass
    return formatEvent(event)


def formatTextLine(event: LogEvent) -> str | None:
    """
    Format an event as ctftp's text line: ``[2025-12-02T10:15:42] [INFO] message``.

    A ``log.failure`` event is followed by its traceback lines.  Returns None
    for an event with nothing to say, which observers skip.
    """
    message = _message(event)
    traceback = _traceback(event)
    if traceback is not None:
        message = f"{message}\n{traceback}" if message else traceback
    elif not message:
        return None
    stamp = localSecond(event.get("log_time") or time.time())
    return f"[{stamp}] [{_eventLevelName(event)}] {message}\n"


def _jsonSafe(value: Any, depth: int = 0) -> Any:
    """
    Make a value JSON-encodable come what may: non-finite floats, odd keys and
    unknown types become strings, and deep or circular nesting is cut off.
    Only used when the fast path of ``formatJSONLine`` fails.
    """
    if isinstance(value, str | bool | int | type(None)):
        return value
    if isinstance(value, float):
        return value if value - value == 0 else str(value)  # nan/inf are not JSON
    if depth > 32:
        return str(value)
    if isinstance(value, dict):
        return {str(key): _jsonSafe(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonSafe(item, depth + 1) for item in value]
    return str(value)


# One encoder for all lines: json.dumps with options builds a new one per call.
_dumps = json.JSONEncoder(ensure_ascii=False, default=str, allow_nan=False).encode


def formatJSONLine(event: LogEvent) -> str | None:
    """
    Format an event as one JSON object on one line.

    The object holds ``time`` (local, milliseconds, UTC offset), ``level``,
    ``message`` and ``traceback`` for a failure, then the event's own fields:
    every key not starting with ``log_`` whose value is a JSON type.  An
    event field that clashes with one of those names is kept as
    ``event_<name>``.  The result is always valid JSON and always encodable
    as UTF-8: lone surrogates (file names decoded with surrogateescape) are
    written as ``\\udcXX`` escapes.
    """
    message = _message(event)
    traceback = _traceback(event)
    if not message and traceback is None:
        return None
    timestamp = event.get("log_time") or time.time()
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="milliseconds"),
        "level": _eventLevelName(event),
        "message": message,
    }
    if traceback is not None:
        record["traceback"] = traceback
    for key, value in event.items():
        if key.startswith("log_") or not isinstance(value, _JSON_TYPES):
            continue
        if key in record:
            key = "event_" + key
        record[key] = value
    try:
        line = _dumps(record)
    except (TypeError, ValueError):  # nan, circular data, keys json cannot take
        line = _dumps(_jsonSafe(record))
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            # Only lone surrogates fail here, and only inside JSON strings, so
            # the backslash escapes are JSON's own \uXXXX escapes.
            line = line.encode("utf-8", "backslashreplace").decode("utf-8")
    return line + "\n"


#: ``log_format`` -> the formatter of one line.
FORMATTERS: dict[str, Callable[[LogEvent], str | None]] = {
    "text": formatTextLine,
    "json": formatJSONLine,
}


def streamObserver(stream: IO[str], logFormat: str) -> ILogObserver:
    """
    An observer writing every event to a text stream in ctftp's lines.

    For twistd's own log when it is the central log (no ``log_dir``): Twisted
    writes its ``FileLogObserver``'s lines to the stream; this one gives it
    ctftp's formatter (``log_format``). A line with text the stream could not
    encode (a lone surrogate from a file name that is not UTF-8) gets
    backslash escapes instead of an error.
    """
    formatter = FORMATTERS[logFormat]

    def format(event: LogEvent) -> str | None:
        line = formatter(event)
        if line is None or line.isascii():
            return line
        return line.encode("utf-8", "backslashreplace").decode("utf-8")

    return FileLogObserver(stream, format)


class LogFile:
    """
    The central log file ``log_dir/ctftp.log``.

    Each line is one ``os.write`` on an ``O_APPEND`` descriptor, so several
    processes (a multi-process deployment, twistd plus a helper) can share
    the file without interleaving parts of lines, and no Python buffer holds
    lines back from ``tail -f``.  ``reopen`` follows logrotate, which moves
    the file away and expects the writer to create a new one.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = self._open()

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        return os.open(self.path, flags, 0o644)

    def write(self, line: str) -> None:
        """
        Append one line; a file that is closed ignores it.

        The text is encoded with ``backslashreplace`` so that no file name
        can make a line unwritable.  Raises OSError when the system refuses
        the write (disk full), leaving the decision to the caller.
        """
        if self._fd < 0:
            return
        data = line.encode("utf-8", "backslashreplace")
        written = os.write(self._fd, data)
        while written < len(data):  # only after a signal or a full disk
            data = data[written:]
            written = os.write(self._fd, data)

    def reopen(self) -> None:
        """
        Reopen the same path, creating it if it was moved away.

        The new file is opened before the old descriptor is closed, so when
        the open fails (OSError, raised) logging carries on into the old file.
        """
        fd = self._open()
        old, self._fd = self._fd, fd
        if old >= 0:
            os.close(old)

    def close(self) -> None:
        """Close the file; later writes are ignored, a second close does nothing."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


# A failing log file must neither crash the server nor flood the remaining
# logs: its errors go to the global publisher at most once a minute.
_fileErrorLog = Logger(namespace="ctftp.logs", observer=globalLogPublisher)
_FILE_ERROR_INTERVAL = 60.0


@implementer(ILogObserver)
class _FileObserver:
    """Formats events and writes them to a LogFile, reporting write errors sparingly."""

    def __init__(self, logFile: LogFile, formatter: Callable[[LogEvent], str | None]) -> None:
        self.logFile = logFile
        self.formatter = formatter
        self._lastError = -_FILE_ERROR_INTERVAL
        self._suppressed = 0

    def __call__(self, event: LogEvent) -> None:
        line = self.formatter(event)
        if line is None:
            return
        try:
            self.logFile.write(line)
        except OSError as error:
            now = time.monotonic()
            if now - self._lastError < _FILE_ERROR_INTERVAL:
                self._suppressed += 1
                return
            _fileErrorLog.warn(
                "cannot write {path}: {error} ({suppressed} more failures suppressed)",
                path=self.logFile.path,
                error=str(error),
                suppressed=self._suppressed,
                **{_MARK: True},
            )
            self._lastError = now
            self._suppressed = 0


@implementer(ILogObserver)
class _Router:
    """
    Filters events by level, marks those that pass as ctftp's, and forwards
    them to the global publisher, or, when ctftp.log is written, writes them
    there and forwards only warnings and errors.

    The filter takes ``LogLevelFilterPredicate``'s decision (no level or no
    namespace: dropped) without its per-namespace lookup, since ctftp has
    one level for all; on a storm of small transfers the predicate cost a
    fifth of each transfer line.

    With a ``log_dir``, ctftp.log is the log: repeating every transfer line in
    twistd's log would format each event twice (measured: a fifth of the CPU
    of a storm of small transfers) and fill twistd.log with copies. An
    embedding application that wants every event then adds its observer to
    :data:`publisher`.
    """

    def __init__(self, fileObserver: _FileObserver | None, levels: frozenset[LogLevel]) -> None:
        self.fileObserver = fileObserver
        self.levels = levels

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_level") not in self.levels or not event.get("log_namespace"):
            return
        event[_MARK] = True
        if self.fileObserver is None:
            globalLogPublisher(event)
            return
        self.fileObserver(event)
        if event.get("log_level") in _FORWARDED_WITH_FILE:
            globalLogPublisher(event)


@implementer(ILogFilterPredicate)
class _ForeignErrors:
    """Passes error-level events that did not come through ctftp's publisher."""

    def __call__(self, event: LogEvent) -> PredicateResult:
        if _MARK in event or event.get("log_level") not in _ERROR_LEVELS:
            return PredicateResult.no
        return PredicateResult.yes


class LogSetup:
    """
    What ``configure`` installed.

    ``reopen`` is for SIGHUP after logrotate; ``close`` is for service stop and
    restores the unfiltered forwarding of ``publisher`` to the global publisher.
    """

    def __init__(
        self,
        observer: ILogObserver,
        errorObserver: ILogObserver | None,
        logFile: LogFile | None,
    ) -> None:
        self.observer = observer
        self.errorObserver = errorObserver
        self.logFile = logFile
        self._closed = False

    def reopen(self) -> None:
        """
        Reopen ctftp.log; a failure is logged and writing goes on into the
        old file, since a signal handler has nobody to raise to.
        """
        if self.logFile is None or self._closed:
            return
        try:
            self.logFile.reopen()
        except OSError as error:
            logger("ctftp.logs").error(
                "cannot reopen {path}: {error}", path=self.logFile.path, error=str(error)
            )

    def close(self) -> None:
        """Remove the observers, close ctftp.log and forward everything again."""
        global _current
        if self._closed:
            return
        self._closed = True
        _replaceObservers([globalLogPublisher], LogLevel.debug)
        if self.errorObserver is not None:
            globalLogPublisher.removeObserver(self.errorObserver)
        if self.logFile is not None:
            self.logFile.close()
        if _current is self:
            _current = None


_FORWARDED_WITH_FILE = frozenset({LogLevel.warn, LogLevel.error, LogLevel.critical})


def _levelsFrom(minimum: LogLevel) -> frozenset[LogLevel]:
    return frozenset(level for level in LogLevel.iterconstants() if level >= minimum)


def _replaceObservers(
    observers: list[ILogObserver], minimum: LogLevel, fieldsWanted: bool = True
) -> None:
    """Swap the observers ctftp put on ``publisher``, leaving any others alone."""
    global _enabledLevels, _fieldsWanted
    _fieldsWanted = fieldsWanted
    _enabledLevels = _levelsFrom(minimum)
    for observer in _installed:
        publisher.removeObserver(observer)
    _installed[:] = observers
    for observer in observers:
        publisher.addObserver(observer)


def configure(logDir: str, level: str, logFormat: str) -> LogSetup:
    """
    Install level filtering and, when ``logDir`` is set, ctftp.log.

    ``level`` is a key of ``LEVELS``, ``logFormat`` is ``text`` or ``json``;
    anything else is a ValueError.  ``logDir`` and its parents are created
    when missing; the log file is opened before anything changes, so an
    OSError leaves logging as it was.  A previous setup is closed first.
    """
    global _current
    if level not in LEVELS:
        raise ValueError(f"log_level must be one of {', '.join(LEVELS)}, not {level!r}")
    if logFormat not in FORMATTERS:
        raise ValueError(f"log_format must be text or json, not {logFormat!r}")

    logFile = None
    fileObserver = None
    if logDir:
        os.makedirs(logDir, exist_ok=True)
        logFile = LogFile(os.path.join(logDir, LOG_FILE_NAME))
        fileObserver = _FileObserver(logFile, FORMATTERS[logFormat])

    if _current is not None:
        _current.close()

    observer = _Router(fileObserver, _levelsFrom(LEVELS[level]))
    errorObserver = None
    if fileObserver is not None:
        errorObserver = FilteringLogObserver(fileObserver, [_ForeignErrors()])
        globalLogPublisher.addObserver(errorObserver)
    _replaceObservers([observer], LEVELS[level], fieldsWanted=logFormat == "json" or not logDir)
    _current = LogSetup(observer, errorObserver, logFile)
    return _current


class RateLimitedLog:
    """At most one line per ``interval`` seconds, saying how many were held back.

    For messages a remote party can trigger at will (refused clients, bad
    packets): the first one in an interval is logged, the rest are counted,
    and the next line that is logged carries the count in its
    ``suppressed`` field and as `` (N similar lines suppressed)``. The clock
    is an ``IReactorTime`` so that tests run on ``task.Clock``.
    """

    def __init__(
        self,
        log: Logger,
        clock: IReactorTime,
        interval: float = 60.0,
        level: LogLevel = LogLevel.warn,
    ) -> None:
        self.log = log
        self.clock = clock
        self.interval = interval
        self.level = level
        self.suppressed = 0
        self._last: float | None = None

    def __call__(self, format: str, **fields: Any) -> bool:
        """Log ``format`` with ``fields`` unless a line went out less than
        ``interval`` ago; return whether it was logged."""
        now = self.clock.seconds()
        if self._last is not None and now - self._last < self.interval:
            self.suppressed += 1
            return False
        suppressed, self.suppressed = self.suppressed, 0
        self._last = now
        if suppressed:
            format += " ({suppressed} similar lines suppressed)"
        self.log.emit(self.level, format, suppressed=suppressed, **fields)
        return True

    @property
    def active(self) -> bool:
        """Whether a line has gone out (and :meth:`clear` not called since)."""
        return self._last is not None

    def clear(self) -> None:
        """The trouble is over: the next line goes out at once."""
        self._last = None
        self.suppressed = 0
