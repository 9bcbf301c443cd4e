"""Tests for ctftp.logs: line formats, level filtering, ctftp.log and the publisher wiring."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.logger import ILogObserver, Logger, LogLevel, capturedLogs, globalLogPublisher
from twisted.python import log as legacy

from ctftp import logs

# 2025-12-02T09:15:42.250 UTC, i.e. 10:15:42 in Central European (winter) time.
LOG_TIME = datetime(2025, 12, 2, 9, 15, 42, 250000, tzinfo=UTC).timestamp()
CET = "CET-1CEST,M3.5.0,M10.5.0/3"  # a POSIX rule, so no tz database is needed


@pytest.fixture
def cet() -> Iterator[None]:
    """Run a test in Central European time, restoring the zone afterwards."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = CET
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture(autouse=True)
def unconfigured() -> Iterator[None]:
    """Every test starts and ends with the default forwarding."""
    yield
    if logs._current is not None:
        logs._current.close()


def event(fmt: str | None, logLevel: LogLevel = LogLevel.info, /, **fields: Any) -> dict[str, Any]:
    """An event as Logger.emit builds it, at the fixed LOG_TIME."""
    fields.update(
        log_format=fmt,
        log_level=logLevel,
        log_namespace="ctftp.test",
        log_source=None,
        log_logger=None,
        log_time=LOG_TIME,
    )
    return fields


def failureEvent(message: str) -> dict[str, Any]:
    events: list[dict[str, Any]] = []
    log = Logger(namespace="ctftp.test", observer=cast(ILogObserver, events.append))
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.failure(message)
    events[0]["log_time"] = LOG_TIME
    return events[0]


def readLines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# -- levels ------------------------------------------------------------------


def test_levels() -> None:
    expected = {
        "error": LogLevel.error,
        "warn": LogLevel.warn,
        "info": LogLevel.info,
        "debug": LogLevel.debug,
    }
    assert expected == logs.LEVELS
    assert [logs.levelName(level) for level in LogLevel.iterconstants()] == [
        "DEBUG",
        "INFO",
        "WARN",
        "ERROR",
        "ERROR",
    ]


# -- text lines ---------------------------------------------------------------


def test_textLine(cet: None) -> None:
    line = logs.formatTextLine(event("Starting listener on {address}", address="0.0.0.0:69"))
    assert line == "[2025-12-02T10:15:42] [INFO] Starting listener on 0.0.0.0:69\n"


def test_textLineLevelsAndFormats(cet: None) -> None:
    line = logs.formatTextLine(
        event(
            'RRQ from {client} file="{file}" mode="{mode}"',
            LogLevel.warn,
            client="192.168.10.50:40000",
            file="test.txt",
            mode="octet",
        )
    )
    assert line == (
        '[2025-12-02T10:15:42] [WARN] RRQ from 192.168.10.50:40000 file="test.txt" mode="octet"\n'
    )
    assert logs.formatTextLine(event("{x!r} {y[0]}", LogLevel.debug, x="a", y=[7])) == (
        "[2025-12-02T10:15:42] [DEBUG] 'a' 7\n"
    )


def test_textLineTwistedFormatting(cet: None) -> None:
    """Formats only Twisted's formatter understands still come out as formatEvent has them."""

    class Thing:
        def name(self) -> str:
            return "called"

    line = logs.formatTextLine(event("{thing.name()}", thing=Thing()))
    assert line == "[2025-12-02T10:15:42] [INFO] called\n"
    unformattable = logs.formatTextLine(event("{missing}"))
    assert unformattable is not None and "Unable to format event" in unformattable


def test_textLineNothingToSay() -> None:
    assert logs.formatTextLine(event(None)) is None
    assert logs.formatJSONLine(event(None)) is None


def test_textLineFailure(cet: None) -> None:
    line = logs.formatTextLine(failureEvent("unhandled"))
    assert line is not None
    first, *rest = line.splitlines()
    assert first == "[2025-12-02T10:15:42] [ERROR] unhandled"
    assert rest[0] == "Traceback (most recent call last):"
    assert any("ZeroDivisionError" in part for part in rest)
    assert line.endswith("\n") and not line.endswith("\n\n")


def test_textLineTimeCacheFollowsZone() -> None:
    """The per-second stamp cache does not answer across a change of time zone."""
    old = os.environ.get("TZ")
    try:
        os.environ["TZ"] = "UTC"
        time.tzset()
        assert logs.formatTextLine(event("x")) == "[2025-12-02T09:15:42] [INFO] x\n"
        os.environ["TZ"] = CET
        time.tzset()
        assert logs.formatTextLine(event("x")) == "[2025-12-02T10:15:42] [INFO] x\n"
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


# -- JSON lines ---------------------------------------------------------------


def test_jsonLine(cet: None) -> None:
    line = logs.formatJSONLine(
        event(
            "EVENT type={type} status={status}",
            type=1,
            status="ok",
            bytes=16,
            ratio=0.5,
            done=True,
            error_code=None,
            client=("192.168.10.50", 40000),
            options={"blksize": 1428},
            opaque=object(),
        )
    )
    assert line is not None and line.endswith("\n") and "\n" not in line[:-1]
    assert json.loads(line) == {
        "time": "2025-12-02T10:15:42.250+01:00",
        "level": "INFO",
        "message": "EVENT type=1 status=ok",
        "type": 1,
        "status": "ok",
        "bytes": 16,
        "ratio": 0.5,
        "done": True,
        "error_code": None,
        "client": ["192.168.10.50", 40000],
        "options": {"blksize": 1428},
    }
    assert line.startswith('{"time": "2025-12-02T10:15:42.250+01:00", "level": "INFO", "message"')


def test_jsonLineClashingFields(cet: None) -> None:
    """An event's own time/level/message fields are kept under another name."""
    parsed = json.loads(
        logs.formatJSONLine(event("done", message="transfer_complete", level=3)) or ""
    )
    assert parsed["message"] == "done"
    assert parsed["level"] == "INFO"
    assert parsed["event_message"] == "transfer_complete"
    assert parsed["event_level"] == 3


def test_jsonLineFailure() -> None:
    parsed = json.loads(logs.formatJSONLine(failureEvent("unhandled")) or "")
    assert parsed["level"] == "ERROR"
    assert parsed["message"] == "unhandled"
    assert "ZeroDivisionError" in parsed["traceback"]


@pytest.mark.parametrize(
    "name",
    [
        'quote"d.txt',
        "back\\slash.txt",
        "new\nline\ttab\x00nul.txt",
        "ünïcödé-文件.bin",
        b"bad-\xff\xfe-utf8.bin".decode("utf-8", "surrogateescape"),
        "\ud800lone-high.bin",
    ],
)
def test_jsonLineFilenamesAreValidJSON(name: str) -> None:
    line = logs.formatJSONLine(event('RRQ file="{file}"', file=name))
    assert line is not None
    encoded = line.encode("utf-8")  # strict: the line is always encodable
    parsed = json.loads(encoded.decode("utf-8"))
    assert parsed["file"] == name  # surrogates come back as \udcXX escapes
    assert parsed["message"] == f'RRQ file="{name}"'


def test_jsonLineOddValues() -> None:
    """Values json cannot take directly still give a valid object."""
    circular: list[Any] = [1]
    circular.append(circular)
    line = logs.formatJSONLine(
        event(
            "odd",
            nan=math.nan,
            inf=[math.inf],
            nested={"when": datetime(2025, 1, 1), (1, 2): "tuple key"},
            circular=circular,
        )
    )
    assert line is not None
    parsed = json.loads(line)  # strict JSON: json.loads accepts NaN, so check text too
    assert "NaN" not in line and "Infinity" not in line.replace('"inf"', "")
    assert parsed["nan"] == "nan"
    assert parsed["inf"] == ["inf"]
    assert parsed["nested"]["when"] == "2025-01-01 00:00:00"
    assert parsed["nested"]["(1, 2)"] == "tuple key"
    assert parsed["circular"][0] == 1


def test_jsonLineDefaultStrForNestedValues() -> None:
    parsed = json.loads(logs.formatJSONLine(event("x", nested={"path": Path("/srv")})) or "")
    assert parsed["nested"] == {"path": "/srv"}


# -- LogFile ------------------------------------------------------------------


def test_logFileAppendsWholeLines(tmp_path: Path) -> None:
    path = tmp_path / "ctftp.log"
    path.write_text("existing\n")
    logFile = logs.LogFile(str(path))
    logFile.write("first\n")
    logFile.write("zweite \udcff\n")
    logFile.close()
    assert path.read_bytes() == b"existing\nfirst\nzweite \\udcff\n"


def test_logFileReopenAfterRename(tmp_path: Path) -> None:
    path = tmp_path / "ctftp.log"
    logFile = logs.LogFile(str(path))
    logFile.write("one\n")
    path.rename(tmp_path / "ctftp.log.1")
    logFile.write("still old\n")
    logFile.reopen()
    logFile.write("two\n")
    logFile.close()
    assert readLines(tmp_path / "ctftp.log.1") == ["one", "still old"]
    assert readLines(path) == ["two"]


def test_logFileClose(tmp_path: Path) -> None:
    path = tmp_path / "ctftp.log"
    logFile = logs.LogFile(str(path))
    logFile.close()
    logFile.close()
    logFile.write("ignored\n")
    assert path.read_text() == ""


def test_logFileReopenFailureKeepsOldFile(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    path = folder / "ctftp.log"
    logFile = logs.LogFile(str(path))
    path.rename(tmp_path / "moved.log")
    folder.rmdir()
    with pytest.raises(OSError):
        logFile.reopen()
    logFile.write("kept\n")
    logFile.close()
    assert readLines(tmp_path / "moved.log") == ["kept"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_fileWriteErrorsAreReportedSparingly() -> None:
    logFile = logs.LogFile("/dev/full")
    observer = logs._FileObserver(logFile, logs.formatTextLine)
    with capturedLogs() as captured:
        for _ in range(3):
            observer(event("x"))
    logFile.close()
    warnings = [e for e in captured if e.get("log_namespace") == "ctftp.logs"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == LogLevel.warn
    assert warnings[0]["path"] == "/dev/full"


# -- publisher, configure, close ------------------------------------------------


def test_unconfiguredForwardsEverything() -> None:
    log = logs.logger("ctftp.test")
    with capturedLogs() as captured:
        log.debug("debug {n}", n=1)
        log.info("info")
    assert [e["log_format"] for e in captured] == ["debug {n}", "info"]
    assert captured[0]["log_namespace"] == "ctftp.test"
    assert captured[0]["log_logger"] is not None


def test_levelFiltering(tmp_path: Path) -> None:
    setup = logs.configure(str(tmp_path), "info", "text")
    log = logs.logger("ctftp.test")
    with capturedLogs() as captured:
        log.debug("dropped")
        log.info("kept {n}", n=1)
        log.warn("warned")
    setup.close()
    # With a log_dir, ctftp.log has everything; the global log only warnings up.
    assert [e["log_format"] for e in captured] == ["warned"]
    lines = readLines(tmp_path / "ctftp.log")
    assert [line.split("] ", 2)[1:] for line in lines] == [["[INFO", "kept 1"], ["[WARN", "warned"]]


def test_loggerReportsInvalidLevel(tmp_path: Path) -> None:
    """Dropping below-level events early does not hide a bad level."""
    logs.configure(str(tmp_path), "error", "text")
    with capturedLogs() as captured:
        logs.logger("ctftp.test").emit("loud", "bad level")  # type: ignore[arg-type]
    assert len(captured) == 1
    assert "invalid log level" in captured[0]["log_format"]


def test_levelFilteringAppliesToDirectEvents(tmp_path: Path) -> None:
    """Events handed to the publisher without a ctftp logger are filtered too."""
    logs.configure(str(tmp_path), "error", "text")
    other = Logger(namespace="ctftp.direct", observer=logs.publisher)
    with capturedLogs() as captured:
        other.warn("dropped")
        other.error("kept")
    assert [e["log_format"] for e in captured] == ["kept"]


def test_closeRestoresForwarding(tmp_path: Path) -> None:
    log = logs.logger("ctftp.test")
    setup = logs.configure(str(tmp_path), "error", "text")
    with capturedLogs() as captured:
        log.info("dropped")
    assert captured == []
    setup.close()
    setup.close()  # idempotent
    with capturedLogs() as captured:
        log.debug("forwarded")
    assert [e["log_format"] for e in captured] == ["forwarded"]
    log.error("after close")
    assert readLines(tmp_path / "ctftp.log") == []


def test_withoutLogDirEverythingGoesToTheGlobalLog() -> None:
    setup = logs.configure("", "info", "text")
    with capturedLogs() as captured:
        logs.logger("ctftp.test").info("seen {n}", n=1)
    setup.close()
    assert [e["log_format"] for e in captured] == ["seen {n}"]


def test_configureWithoutLogDir() -> None:
    setup = logs.configure("", "debug", "text")
    assert setup.logFile is None
    with capturedLogs() as captured:
        logs.logger("ctftp.test").debug("seen")
    setup.reopen()  # nothing to reopen, nothing raised
    assert len(captured) == 1


def test_configureCreatesLogDir(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    setup = logs.configure(str(folder), "info", "text")
    logs.logger("ctftp.test").info("hello")
    setup.close()
    assert readLines(folder / "ctftp.log")[0].endswith("[INFO] hello")


def test_configureTwiceReplacesSetup(tmp_path: Path) -> None:
    first = logs.configure(str(tmp_path / "one"), "info", "text")
    second = logs.configure(str(tmp_path / "two"), "info", "text")
    assert first.logFile is not None and first.logFile._fd == -1
    with capturedLogs() as captured:
        logs.logger("ctftp.test").warn("once")
    second.close()
    assert len(captured) == 1
    assert readLines(tmp_path / "one" / "ctftp.log") == []
    assert len(readLines(tmp_path / "two" / "ctftp.log")) == 1


def test_configureRejectsUnknownValues(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="log_level"):
        logs.configure(str(tmp_path), "verbose", "text")
    with pytest.raises(ValueError, match="log_format"):
        logs.configure(str(tmp_path), "info", "xml")
    assert logs._current is None


def test_configureJSON(tmp_path: Path) -> None:
    setup = logs.configure(str(tmp_path), "info", "json")
    logs.logger("ctftp.test").info("RRQ from {client}", client="10.0.0.1:1234")
    setup.close()
    (line,) = readLines(tmp_path / "ctftp.log")
    parsed = json.loads(line)
    assert parsed["message"] == "RRQ from 10.0.0.1:1234"
    assert parsed["client"] == "10.0.0.1:1234"
    assert parsed["level"] == "INFO"


def test_twistedErrorsLandInLogFile(tmp_path: Path) -> None:
    setup = logs.configure(str(tmp_path), "info", "text")
    twisted = Logger(namespace="twisted.internet.udp", observer=globalLogPublisher)
    try:
        raise RuntimeError("protocol exploded")
    except RuntimeError:
        twisted.failure("Unhandled Error")
    twisted.error("plain error")
    twisted.warn("a warning stays out")
    legacy.err(ValueError("legacy"), "legacy error")
    logs.logger("ctftp.test").error("ours, once")
    setup.close()
    twisted.error("after close")
    text = (tmp_path / "ctftp.log").read_text()
    assert "[ERROR] Unhandled Error\n" in text
    assert "RuntimeError: protocol exploded" in text
    assert "[ERROR] plain error\n" in text
    assert "legacy error" in text
    assert "a warning" not in text
    assert text.count("ours, once") == 1
    assert "after close" not in text


def test_setupReopen(tmp_path: Path) -> None:
    setup = logs.configure(str(tmp_path), "info", "text")
    log = logs.logger("ctftp.test")
    log.info("before")
    (tmp_path / "ctftp.log").rename(tmp_path / "ctftp.log.1")
    setup.reopen()
    log.info("after")
    setup.close()
    assert [line.split("] ")[-1] for line in readLines(tmp_path / "ctftp.log.1")] == ["before"]
    assert [line.split("] ")[-1] for line in readLines(tmp_path / "ctftp.log")] == ["after"]


def test_setupReopenFailureIsLogged(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    setup = logs.configure(str(folder), "info", "text")
    (folder / "ctftp.log").rename(tmp_path / "moved.log")
    folder.rmdir()
    with capturedLogs() as captured:
        setup.reopen()  # does not raise
    setup.close()
    assert [e["log_format"] for e in captured] == ["cannot reopen {path}: {error}"]
    assert "cannot reopen" in (tmp_path / "moved.log").read_text()
