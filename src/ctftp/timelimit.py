"""A time limit on work that cannot be interrupted otherwise: remap regexes.

Remap rules (SPEC section 5) are matched with Python's backtracking ``re``,
where some patterns take exponential time on names built for them
(``([a-z0-9]+[-_.]?)+\\.cfg$`` on forty characters) and ordinary ones take
polynomial time on long names (``^(.*)-(.*)-(.*)\\.cfg$`` on 3,000 dashes).
glibc, which tftpd-hpa uses, matches both at once. The match runs in the
reactor's thread, so one such request would stop the whole server, against
SPEC section 4: nothing a client asks for may block it.

``re`` checks for signals every few thousand steps of a match, so a
``SIGALRM`` from an interval timer whose handler raises ends the match.
:func:`limited` arms the timer around one call and turns that into
:class:`Overtime`. It only does so where it cannot disturb anyone: in the
main thread (where Python runs signal handlers), and when neither a
``SIGALRM`` handler nor a real-time interval timer is in use already (an
application embedding ctftp may have its own); elsewhere the call runs
without a limit.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["Overtime", "limited"]

_T = TypeVar("_T")


class Overtime(Exception):
    """The call ran past its time limit and was stopped."""


# Whether the timer is ours to act on: cleared before the timer is stopped,
# so a signal that arrives in between is ignored instead of raising in the
# clean-up.
_armed = False


def _expired(signum: int, frame: object) -> None:
    if _armed:
        raise Overtime()


def _available() -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, signal.SIG_IGN):
        return False  # someone's handler (or None: one set outside Python)
    return signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def limited(seconds: float, work: Callable[[], _T]) -> _T:
    """``work()``, stopped with :class:`Overtime` after ``seconds`` of wall
    time, where a limit disturbs nobody (see the module's docstring); else
    ``work()`` without a limit."""
    global _armed
    if not _available():
        return work()
    previous = signal.signal(signal.SIGALRM, _expired)
    try:
        _armed = True
        signal.setitimer(signal.ITIMER_REAL, seconds)
        return work()
    finally:
        _armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
