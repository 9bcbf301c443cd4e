"""RFC 2347/2348/2349/7440 option negotiation, plus tftp-hpa's ``blksize2`` and
``utimeout``, and RFC 2090's ``multicast`` when the policy allows it. Pure:
the caller passes the request's options, the server's policy and the file
size, and gets back what was agreed and the OACK to send.

The rules (SPEC section 3):

* unknown options are ignored, and so is a value that is not a number;
* a number out of the option's range is refused with ERROR 8 (as atftpd does
  and atftp's test suite expects);
* a ``blksize`` in range but above ``max_blksize`` is lowered to it;
* ``blksize`` and ``blksize2`` together agree on one size, valid for both:
  the largest power of two within both (and ``max_blksize``);
* ``timeout`` and ``utimeout`` together: the later one is used, and only it
  is acknowledged;
* the OACK names only accepted options, in the client's spelling and order;
  no accepted option means no OACK;
* ``multicast`` (a read, ``OptionPolicy.multicast``) is accepted with an
  empty value in the OACK: its value (group, port, master) is the
  multicast session's to fill in (``ctftp.multicast``), or the entry is
  dropped if the read is sent by unicast after all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ctftp.packets import optionKey

__all__ = [
    "BLKSIZE_MIN",
    "BLKSIZE_MAX",
    "DEFAULT_BLKSIZE",
    "OptionPolicy",
    "Negotiated",
    "OptionRefused",
    "REFUSAL_MESSAGE",
    "negotiate",
]

BLKSIZE_MIN = 8
BLKSIZE_MAX = 65464
DEFAULT_BLKSIZE = 512
TIMEOUT_RANGE = (1, 255)  # seconds, RFC 2349
UTIMEOUT_RANGE = (10_000, 255_000_000)  # microseconds, tftp-hpa
WINDOWSIZE_RANGE = (1, 65535)  # RFC 7440

_NUMBER = re.compile(r"[0-9]+")
#: Longer than any value in range; also keeps int() away from Python's limit on
#: converting very long digit strings (a 4,301-digit value would raise).
_MAX_DIGITS = 20


@dataclass(frozen=True, slots=True)
class OptionPolicy:
    """What the server allows. ``maxWindowBytes`` bounds the data a transfer
    keeps in flight (and in memory for resends): the windowsize in the OACK is
    lowered so that ``windowsize * blksize`` stays within it."""

    enabled: bool = True
    maxBlksize: int = BLKSIZE_MAX
    refused: frozenset[str] = frozenset()
    maxWindowBytes: int = 16 * 1024 * 1024
    multicast: bool = False


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The agreed transfer parameters.

    ``timeout`` is ``None`` when the client did not set one (the server's
    ``timeout_sec`` applies). ``tsize`` is the size announced in the OACK for a
    read, or the size the client announced for a write. ``oack`` is empty when
    no OACK is to be sent.
    """

    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    timeout: float | None = None
    tsize: int | None = None
    oack: tuple[tuple[str, str], ...] = field(default=())
    multicast: bool = False

    def withoutOption(self, key: str) -> Negotiated:
        """The same, with option ``key`` (lower case) not acknowledged."""
        oack = tuple(entry for entry in self.oack if optionKey(entry[0]) != key)
        return replace(self, oack=oack, multicast=self.multicast and key != "multicast")


#: The message of ERROR 8 on the wire: atftpd 0.8's words, which atftp's test
#: suite looks for; what was wrong goes to the central log (OptionRefused).
REFUSAL_MESSAGE = "Failure to negotiate RFC2347 options"


class OptionRefused(Exception):
    """An option value out of range: ERROR 8; the text says which, for the log."""


def _number(value: str) -> int | None:
    value = value.strip()
    if not _NUMBER.fullmatch(value):
        return None
    digits = value.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _check(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise OptionRefused(f"Option {name} value {value} out of range {low}..{high}")
    return value


def _powerOfTwoAtMost(value: int) -> int:
    return 1 << (value.bit_length() - 1)


def negotiate(
    options: tuple[tuple[str, str], ...],
    policy: OptionPolicy,
    *,
    isRead: bool,
    size: int | None,
) -> Negotiated:
    """Agree on options for one request.

    ``size`` is the (converted) size of the file for a read, ``None`` when
    unknown, in which case ``tsize`` is not acknowledged. Raises
    :class:`OptionRefused` for a value out of range.
    """
    if not policy.enabled or not options:
        return Negotiated()
    plain: int | None = None  # what blksize agreed, if asked
    power: int | None = None  # what blksize2 agreed (a power of two), if asked
    windowsize = 1
    timeout: float | None = None
    tsize: int | None = None
    multicast = False
    # Accepted options as [client spelling, lower-case name, value]; the
    # windowsize value is settled last because it depends on blksize.
    accepted: list[tuple[str, str, int]] = []
    for name, rawValue in options:
        key = optionKey(name)
        if key in policy.refused:
            continue
        if key == "multicast":
            if isRead and policy.multicast:
                multicast = True
                accepted.append((name, key, 0))
            continue
        value = _number(rawValue)
        if value is None:
            continue
        if key == "blksize":
            plain = min(_check(name, value, BLKSIZE_MIN, BLKSIZE_MAX), policy.maxBlksize)
        elif key == "blksize2":
            _check(name, value, BLKSIZE_MIN, BLKSIZE_MAX)
            power = _powerOfTwoAtMost(min(value, policy.maxBlksize))
        elif key in ("timeout", "utimeout"):
            if key == "timeout":
                timeout = float(_check(name, value, *TIMEOUT_RANGE))
            else:
                timeout = _check(name, value, *UTIMEOUT_RANGE) / 1_000_000
            # Asked both ways, the later one sets the timer and is the one
            # acknowledged, so the OACK says the timeout in use.
            accepted = [entry for entry in accepted if entry[1] not in ("timeout", "utimeout")]
        elif key == "windowsize":
            windowsize = _check(name, value, *WINDOWSIZE_RANGE)
        elif key == "tsize":
            if isRead:
                if size is None:
                    continue
                value = size
            tsize = value
        else:
            continue
        accepted.append((name, key, value))
    if plain is not None and power is not None:
        blksize = _powerOfTwoAtMost(min(plain, power))
    else:
        blksize = plain or power or DEFAULT_BLKSIZE
    windowsize = max(1, min(windowsize, policy.maxWindowBytes // blksize))
    final = {"blksize": blksize, "blksize2": blksize, "windowsize": windowsize, "multicast": ""}
    oack = tuple((name, str(final.get(key, value))) for name, key, value in accepted)
    return Negotiated(blksize, windowsize, timeout, tsize, oack, multicast)
