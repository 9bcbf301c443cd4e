"""ctftp.timelimit: a time limit on a call, by SIGALRM, only where nobody else uses it."""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ctftp.timelimit import Overtime, limited

# Python's backtracking takes about a second on this (four times as long for
# each "a1" more), glibc no time at all.
SLOW = re.compile(r"^([a-z0-9]+[-_.]?)+\.cfg$")
SLOW_NAME = "a1" * 12 + "!"


@pytest.fixture(autouse=True)
def untouchedAlarm() -> Iterator[None]:
    """Every test leaves SIGALRM and the real-time timer as it found them."""
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    before = signal.getsignal(signal.SIGALRM)
    yield
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is before


def test_a_quick_call_returns_its_value() -> None:
    assert limited(1.0, lambda: SLOW.search("abc.cfg")) is not None


def test_a_runaway_regex_is_stopped() -> None:
    with pytest.raises(Overtime):
        limited(0.01, lambda: SLOW.search(SLOW_NAME))


def test_an_exception_of_the_call_passes_through() -> None:
    def fail() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        limited(1.0, fail)


def test_no_limit_while_someone_else_handles_sigalrm() -> None:
    fired: list[Any] = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(a))
    try:
        assert limited(0.001, lambda: SLOW.search("a1" * 9 + "!")) is None  # ran to its end
        assert signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert fired == []


def test_no_limit_while_a_real_time_timer_runs() -> None:
    previous = signal.signal(signal.SIGALRM, signal.SIG_IGN)
    signal.setitimer(signal.ITIMER_REAL, 60)
    try:
        assert limited(0.001, lambda: SLOW.search("a1" * 9 + "!")) is None
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 50  # the other timer is left alone
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_no_limit_outside_the_main_thread() -> None:
    results: list[Any] = []
    thread = threading.Thread(
        target=lambda: results.append(limited(0.001, lambda: SLOW.search("a1" * 9 + "!")))
    )
    thread.start()
    thread.join(30)
    assert results == [None]
