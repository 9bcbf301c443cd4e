"""Tests for ctftp.sidecar: the line format, appending, and failures that never raise."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel

from ctftp import logs
from ctftp.sidecar import SidecarWriter, sidecarLine

START = datetime(2025, 12, 2, 9, 16, 1, 400000, tzinfo=UTC).timestamp()
END = START + 1.0


@pytest.fixture
def cet() -> Iterator[None]:
    """Central European time (a POSIX rule, no tz database needed)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "CET-1CEST,M3.5.0,M10.5.0/3"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture
def sidecarEvents() -> Iterator[list[dict[str, Any]]]:
    """Events of the ctftp.sidecar logger, seen on ctftp's publisher."""
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "ctftp.sidecar":
            events.append(event)

    observer = cast(ILogObserver, observe)
    logs.publisher.addObserver(observer)
    yield events
    logs.publisher.removeObserver(observer)


def test_sidecarLine(cet: None) -> None:
    line = sidecarLine(START, END, "192.168.10.50", 40000, 16, "ok", "transfer_complete")
    assert (
        line
        == "2025-12-02T10:16:01;2025-12-02T10:16:02;192.168.10.50;40000;16;ok;transfer_complete\n"
    )


def test_sidecarLineIPv6AndError(cet: None) -> None:
    line = sidecarLine(START, START, "2001:db8::5", 1069, 0, "error", "timeout")
    assert line == "2025-12-02T10:16:01;2025-12-02T10:16:01;2001:db8::5;1069;0;error;timeout\n"


def test_sidecarLineKeepsFieldsIntact(cet: None) -> None:
    """A message cannot add fields or lines."""
    line = sidecarLine(START, END, "10.0.0.1", 1, 2, "error", "bad;thing\nhere\r")
    assert line.count(";") == 6 and line.count("\n") == 1
    assert line.endswith(";error;bad,thing here \n")


def test_appendTwice(tmp_path: Path, cet: None) -> None:
    served = tmp_path / "test.txt"
    served.write_text("payload")
    writer = SidecarWriter(Clock())
    first = sidecarLine(START, END, "192.168.10.50", 40000, 7, "ok", "transfer_complete")
    second = sidecarLine(END, END, "192.168.10.51", 40001, 0, "error", "timeout")
    writer.append(str(served), first)
    writer.append(str(served), second)
    sidecar = tmp_path / "test.txt.log"
    assert sidecar.read_text() == first + second
    assert served.read_text() == "payload"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(sidecar.stat().st_mode) == 0o644 & ~umask


def test_appendNonUTF8Name(tmp_path: Path) -> None:
    """Names decoded with surrogateescape reach the file system as their bytes."""
    name = b"caf\xe9.bin".decode("utf-8", "surrogateescape")
    SidecarWriter(Clock()).append(str(tmp_path / name), "line\n")
    assert os.path.exists(os.path.join(os.fsencode(tmp_path), b"caf\xe9.bin.log"))


def test_failureWarnsOncePerMinute(tmp_path: Path, sidecarEvents: list[dict[str, Any]]) -> None:
    clock = Clock()
    writer = SidecarWriter(clock)
    missing = str(tmp_path / "no-such-folder" / "file.bin")
    writer.append(missing, "line\n")  # does not raise
    assert len(sidecarEvents) == 1
    warning = sidecarEvents[0]
    assert warning["log_level"] == LogLevel.warn
    assert warning["path"] == missing + ".log"
    assert warning["suppressed"] == 0
    assert "No such file" in warning["error"]

    clock.advance(30)
    writer.append(missing, "line\n")
    clock.advance(29.9)
    writer.append(missing, "line\n")
    assert len(sidecarEvents) == 1

    clock.advance(0.1)
    writer.append(missing, "line\n")
    assert len(sidecarEvents) == 2
    assert sidecarEvents[1]["suppressed"] == 2
    assert not (tmp_path / "no-such-folder").exists()


def test_otherFailuresDoNotRaise(tmp_path: Path, sidecarEvents: list[dict[str, Any]]) -> None:
    writer = SidecarWriter(Clock())
    folder = tmp_path / "folder"
    (tmp_path / "folder.log").mkdir()  # the sidecar path is a folder
    writer.append(str(folder), "line\n")
    writer.append("nul\0byte", "line\n")  # ValueError from os.open
    assert len(sidecarEvents) == 1


@pytest.mark.parametrize("reader", [False, True], ids=["no-reader", "reader"])
def test_aFifoSidecarIsNeitherWaitedForNorWritten(
    tmp_path: Path, sidecarEvents: list[dict[str, Any]], reader: bool
) -> None:
    """A FIFO named X.log (anyone who can write in a served folder can make
    one) must not block the server in open, with or without a reader."""
    fifo = tmp_path / "f.bin.log"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK) if reader else -1
    try:
        SidecarWriter(Clock()).append(str(tmp_path / "f.bin"), "line\n")
        if reader:
            assert os.read(fd, 100) == b""  # nothing went into the pipe
    finally:
        if fd >= 0:
            os.close(fd)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert len(sidecarEvents) == 1 and sidecarEvents[0]["path"] == str(fifo)


def test_aSymlinkSidecarIsNotFollowed(tmp_path: Path, sidecarEvents: list[dict[str, Any]]) -> None:
    """A symlink named X.log must not lead the line to a file elsewhere."""
    outside = tmp_path / "outside.log"
    outside.write_text("before\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / "f.bin.log").symlink_to(outside)
    SidecarWriter(Clock()).append(str(root / "f.bin"), "line\n")
    assert outside.read_text() == "before\n"
    assert len(sidecarEvents) == 1
