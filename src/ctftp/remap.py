"""Filename remapping: tftp-hpa rule files and atftpd pcre files (SPEC section 5).

Provisioning depends on rewriting what clients ask for: phones request
``SEP<MAC>.cnf.xml``, PXE ROMs send drive letters and backslashes, firmware
comes by odd names.  Two rule languages are in use and both are kept:

* :class:`RuleSet` reads tftp-hpa's ``-m`` remap file (``FLAGS REGEX
  [REPLACEMENT]``) with its POSIX extended regular expressions translated to
  Python :mod:`re` so that a file written for tftpd-hpa on Linux (glibc)
  rewrites names the same way here;
* :class:`PcreRules` reads atftpd's ``--pcre`` file (``regex replacement``),
  first match wins.

Everything here is pure: no sockets, no clock, no file system beyond reading
the rule file.  Whether the rewritten name may be served is decided later by
the resolver (SPEC section 4); the ``E`` flag asks the caller through an
``exists`` callback.  ``docs/remap.md`` is the user's guide; the decisions
where tftp-hpa or glibc left room are recorded there and next to the code.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ctftp.timelimit import Overtime, limited

__all__ = [
    "DEFAULT_DENY_MESSAGE",
    "FAILURE_MESSAGE",
    "MAX_NAME_LENGTH",
    "MAX_STEPS",
    "PcreRules",
    "RemapDenied",
    "RemapFailed",
    "RemapSyntaxError",
    "RuleSet",
    "TIME_LIMIT",
    "readNameText",
]

#: tftp-hpa's deadman counter: rule evaluations (and ``g`` rounds) per name.
MAX_STEPS = 4096

#: A rewritten name longer than this ends the remap with a failure.  It is
#: PATH_MAX on Linux, so no such name could be opened anyway; the cap stops a
#: rule such as ``rs .* \0\0`` from doubling a name 4096 times.
MAX_NAME_LENGTH = 4096

#: Seconds one name may spend in the rules (their regexes, see
#: :mod:`ctftp.timelimit`) before the remap fails; real rule sets take
#: microseconds.
TIME_LIMIT = 0.05

#: The ERROR 2 text when an ``a`` rule has no (or an empty) message; tftpd-hpa
#: sends its default EACCESS text then.
DEFAULT_DENY_MESSAGE = "Access violation"

#: The ERROR 2 text when the step bound is exceeded, as tftpd-hpa sends it.
FAILURE_MESSAGE = "Remap table failure"

# Candidate end positions tried per apply() when looking for the POSIX
# leftmost-longest match (see _Regex.search).  Real rule sets need a handful;
# the budget only matters for runaway rule sets, which fail at MAX_STEPS.
_PROBE_BUDGET = 65536


class RemapSyntaxError(Exception):
    """A rule file that cannot be used; ``str()`` is ``FILE:LINE: message``.

    Start-up stops with this one line, and a SIGHUP reload keeps the old
    rules, so the message has to name the exact place to fix.
    """

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source = source
        self.line = line
        self.message = message


class RemapDenied(Exception):
    """An ``a`` rule matched: the request gets ERROR 2 with :attr:`message`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RemapFailed(Exception):
    """The rules did not finish within :data:`MAX_STEPS` steps (or grew the name
    past :data:`MAX_NAME_LENGTH`, or ran past :data:`TIME_LIMIT`): ERROR 2
    ``Remap table failure``. :attr:`detail`, when set, is for the operator's
    log, not for the client."""

    def __init__(self, message: str = FAILURE_MESSAGE, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


_T = TypeVar("_T")


def _withinTimeLimit(
    source: str,
    rules: Sequence[_Rule] | Sequence[_PcreRule],
    work: Callable[[list[int]], _T],
) -> _T:
    """``work(running)`` within :data:`TIME_LIMIT`, where ``work`` keeps the
    index of the rule it is trying in ``running[0]``; past the limit, a
    :class:`RemapFailed` whose detail names that rule's ``source:line``."""
    running = [0]
    try:
        return limited(TIME_LIMIT, lambda: work(running))
    except Overtime:
        raise RemapFailed(
            detail=f"{source}:{rules[running[0]].line}: the regex took more than "
            f"{TIME_LIMIT * 1000:.0f} ms on this name and was stopped"
        ) from None


# ---------------------------------------------------------------------------
# POSIX extended regular expressions (as glibc's regcomp(REG_EXTENDED) reads
# them) -> Python re.


class _EreError(Exception):
    """A regex that glibc would refuse, or that ctftp refuses on purpose."""


# The C locale's character classes.  tftpd-hpa runs as a daemon, usually in
# the C locale, and TFTP names are ASCII in practice; a Unicode reading would
# make [[:alpha:]] depend on the environment the server was started from.
_CLASSES = {
    "alpha": "a-zA-Z",
    "upper": "A-Z",
    "lower": "a-z",
    "digit": "0-9",
    "xdigit": "0-9A-Fa-f",
    "alnum": "0-9A-Za-z",
    "space": r" \t\n\r\f\v",
    "blank": r" \t",
    "punct": "".join(re.escape(c) for c in string.punctuation),
    "print": r"\x20-\x7e",
    "graph": r"\x21-\x7e",
    "cntrl": r"\x00-\x1f\x7f",
}

_WORD = "[0-9A-Za-z_]"
# glibc's GNU operators, which REG_EXTENDED does not switch off.  The word
# boundaries are spelled with look-arounds so that they use the same ASCII word
# characters as \w and behave like glibc on an empty string.
_GNU_ESCAPES = {
    "w": (_WORD, True),
    "W": ("[^0-9A-Za-z_]", True),
    "s": (r"[ \t\n\r\f\v]", True),
    "S": (r"[^ \t\n\r\f\v]", True),
    "b": (f"(?:(?<={_WORD})(?!{_WORD})|(?<!{_WORD})(?={_WORD}))", False),
    "B": (f"(?:(?<={_WORD})(?={_WORD})|(?<!{_WORD})(?!{_WORD}))", False),
    "<": (f"(?<!{_WORD})(?={_WORD})", False),
    ">": (f"(?<={_WORD})(?!{_WORD})", False),
    "`": (r"\A", False),
}

# Escapes that Perl or Python users write and that ERE does not have; glibc
# would quietly match the bare letter, which is never what the author meant.
_ESCAPE_HINTS = {
    "d": "use [0-9] or [[:digit:]]",
    "D": "use [^0-9]",
    "n": "a newline cannot occur in a TFTP filename",
    "t": "use [[:blank:]] or a literal tab",
    "A": "use ^",
    "Z": "use $",
    "z": "use $",
}

_RE_DUP_MAX = 32767
_END = None  # placeholder for "$" in a translated pattern (see _Translation)

_Piece = str | None


@dataclass(frozen=True)
class _Translation:
    """A translated ERE.

    ``pieces`` is the Python pattern with ``None`` where the ERE had an end
    anchor: rendered as ``\\Z`` it is the pattern used for searching; rendered
    as ``(?!)`` it is the one used to test a match that must end before the
    end of the string (see :meth:`_Regex.search`).
    """

    pieces: tuple[_Piece, ...]
    variable: bool  # has quantifiers, alternation or back-references
    wordOps: bool  # looks at the character after a position

    def render(self, end: str) -> str:
        return "".join(end if p is None else p for p in self.pieces)


class _EreTranslator:
    """Recursive descent over glibc's ERE grammar, emitting Python re source."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.groups = 0
        self.completed: set[int] = set()
        self.variable = False
        self.wordOps = False

    def translate(self) -> _Translation:
        pieces = self.regexp(inGroup=False)
        return _Translation(tuple(pieces), self.variable, self.wordOps)

    def peek(self, offset: int = 0) -> str | None:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else None

    def regexp(self, inGroup: bool) -> list[_Piece]:
        # A back-reference may only name a group closed earlier on the same
        # path: glibc forgets groups of a sibling branch ("(a)|b\1" is refused).
        initial = set(self.completed)
        accumulated: set[int] = set()
        pieces = self.branch(inGroup)
        while self.peek() == "|":
            self.pos += 1
            self.variable = True
            accumulated |= self.completed
            self.completed = set(initial)
            pieces = [*pieces, "|", *self.branch(inGroup)]
        self.completed |= accumulated
        return pieces

    def branch(self, inGroup: bool) -> list[_Piece]:
        pieces: list[_Piece] = []
        while True:
            c = self.peek()
            if c is None or c == "|" or (c == ")" and inGroup):
                return pieces
            atom, quantifiable = self.atom(inGroup)
            quantified = False
            while self.peek() in ("*", "+", "?", "{"):
                if not quantifiable:
                    raise _EreError(self.badRepeat())
                quantifier = self.quantifier()
                self.variable = True
                if quantified:
                    # ERE stacks repetitions ("a+?" is (a+)?, never lazy);
                    # Python would read "+?" as a lazy quantifier.
                    atom = ["(?:", *atom, ")"]
                atom = [*atom, quantifier]
                quantified = True
            pieces.extend(atom)

    def badRepeat(self) -> str:
        previous = self.text[self.pos - 1] if self.pos else ""
        message = f'nothing to repeat before "{self.text[self.pos]}" at offset {self.pos}'
        if previous == "(" and self.peek() == "?":
            message += " ((?...) groups are Python/Perl syntax, not ERE)"
        return message

    def quantifier(self) -> str:
        c = self.text[self.pos]
        self.pos += 1
        if c != "{":
            return c
        close = self.text.find("}", self.pos)
        if close < 0:
            raise _EreError(f"unmatched {{ at offset {self.pos - 1}")
        body = self.text[self.pos : close]
        interval = re.fullmatch(r"([0-9]*)(,([0-9]*))?", body)
        if interval is None or body == "":
            raise _EreError(f'invalid interval "{{{body}}}"')
        low = int(interval.group(1) or 0)
        if interval.group(2) is None:
            high: int | None = low
        else:
            high = int(interval.group(3)) if interval.group(3) else None
        if high is not None and high < low:
            raise _EreError(f'invalid interval "{{{body}}}"')
        if max(low, high or 0) > _RE_DUP_MAX:
            raise _EreError(f'interval "{{{body}}}" is above {_RE_DUP_MAX}')
        self.pos = close + 1
        if high == low:
            return f"{{{low}}}"
        return f"{{{low},{'' if high is None else high}}}"

    def atom(self, inGroup: bool) -> tuple[list[_Piece], bool]:
        c = self.text[self.pos]
        if c in "*+?{":
            raise _EreError(self.badRepeat())
        self.pos += 1
        if c == "(":
            self.groups += 1
            number = self.groups
            inner = self.regexp(inGroup=True)
            if self.peek() != ")":
                raise _EreError("unmatched (")
            self.pos += 1
            self.completed.add(number)
            return ["(", *inner, ")"], True
        if c == ")":  # only reached outside a group: an ordinary character
            return [re.escape(c)], True
        if c == "^":
            return ["^"], False
        if c == "$":
            return [_END], False
        if c == ".":
            return ["."], True
        if c == "[":
            return [self.bracket()], True
        if c == "\\":
            return self.escape()
        return [re.escape(c)], True

    def escape(self) -> tuple[list[_Piece], bool]:
        c = self.peek()
        if c is None:
            raise _EreError("trailing backslash")
        self.pos += 1
        if c in "123456789":
            if int(c) not in self.completed:
                raise _EreError(f"invalid back reference \\{c}")
            self.variable = True
            return [f"(?:\\{c})"], True
        if c == "'":
            return [_END], False
        if c in _GNU_ESCAPES:
            python, quantifiable = _GNU_ESCAPES[c]
            if c in "bB<>":
                self.wordOps = True
            return [python], quantifiable
        if c.isascii() and c.isalnum():
            hint = _ESCAPE_HINTS.get(c, f'write "{c}" without the backslash')
            raise _EreError(
                f'"\\{c}" is not an ERE escape (glibc would match a plain "{c}"); {hint}'
            )
        return [re.escape(c)], True

    def bracket(self) -> str:
        negate = self.peek() == "^"
        if negate:
            self.pos += 1
        items: list[str] = []
        first = True
        while True:
            c = self.peek()
            if c is None:
                raise _EreError("unmatched [")
            if c == "]" and not first:
                self.pos += 1
                break
            first = False
            if c == "[" and self.peek(1) in (":", ".", "="):
                items.append(self.bracketClass())
                if self.peek() == "-" and self.peek(1) not in ("]", None):
                    raise _EreError("a character class cannot start a range")
                continue
            self.pos += 1
            if self.peek() == "-" and self.peek(1) not in ("]", None):
                self.pos += 1
                end = self.text[self.pos]
                if end == "[" and self.peek(1) in (":", ".", "="):
                    if self.peek(1) == ":":
                        raise _EreError("a character class cannot end a range")
                    self.bracketClass()  # raises: collating elements are refused
                self.pos += 1
                if ord(end) < ord(c):
                    raise _EreError(f'invalid range "{c}-{end}"')
                items.append(f"{re.escape(c)}-{re.escape(end)}")
                if self.peek() == "-" and self.peek(1) not in ("]", None):
                    raise _EreError(f'invalid range end after "{c}-{end}"')
            else:
                items.append(re.escape(c))
        return "[" + ("^" if negate else "") + "".join(items) + "]"

    def bracketClass(self) -> str:
        kind = self.text[self.pos + 1]
        close = self.text.find(kind + "]", self.pos + 2)
        if close < 0:
            raise _EreError("unmatched [")
        name = self.text[self.pos + 2 : close]
        self.pos = close + 2
        if kind != ":":
            raise _EreError(
                f'"[{kind}{name}{kind}]": collating symbols and equivalence classes '
                "are not supported; write the character itself"
            )
        if name not in _CLASSES:
            raise _EreError(f'invalid character class "[:{name}:]"')
        return _CLASSES[name]


@dataclass(frozen=True)
class _Regex:
    """A compiled ERE that finds POSIX's leftmost-longest match.

    Python's ``re`` returns the leftmost match its backtracking finds first;
    POSIX (and glibc) return the longest match starting at the leftmost
    position: ``(foo|foobar)`` on ``foobar.bin`` matches ``foobar`` there and
    ``foo`` in Python.  :meth:`search` finds the leftmost start with Python and
    then tries longer ends first.
    """

    source: str
    flags: int
    main: re.Pattern[str]
    beforeEnd: re.Pattern[str]
    translation: _Translation

    @classmethod
    def compile(cls, source: str, ignoreCase: bool) -> _Regex:
        # re.ASCII: the C locale folds case in ASCII only (no Kelvin sign for "k").
        flags = re.DOTALL | re.ASCII | (re.IGNORECASE if ignoreCase else 0)
        try:
            translation = _EreTranslator(source).translate()
            main = re.compile(translation.render(r"\Z"), flags)
            beforeEnd = re.compile(translation.render("(?!)"), flags)
        except RecursionError:
            raise _EreError("groups nested too deeply") from None
        except (re.error, OverflowError) as e:  # a translation gap, reported not hidden
            raise _EreError(f"cannot translate to Python: {e}") from None
        return cls(source, flags, main, beforeEnd, translation)

    def search(self, text: str, pos: int, budget: list[int]) -> re.Match[str] | None:
        match = self.main.search(text, pos)
        if match is None or not self.translation.variable:
            return match
        start = match.start()
        for end in range(len(text), match.end(), -1):
            if budget[0] <= 0:
                break
            budget[0] -= 1
            if end == len(text):
                longer = self.main.fullmatch(text, start, end)
            elif self.translation.wordOps:
                # A boundary at ``end`` must see the character after it, which
                # endpos would hide: pin the end with a look-ahead instead.
                pinned = f"(?:{self.main.pattern})(?={re.escape(text[end:])}\\Z)"
                longer = re.compile(pinned, self.flags).match(text, start)
            else:
                longer = self.beforeEnd.fullmatch(text, start, end)
            if longer is not None:
                return longer
        return match


# ---------------------------------------------------------------------------
# tftp-hpa rule files.


def _isspace(c: str) -> bool:
    return c in " \t\n\r\f\v"


def _fields(line: str) -> list[str]:
    """Split a rule line the way tftp-hpa's readescstring does.

    Fields end at unescaped white space; an unescaped ``#`` ends the line.
    Backslashes stay in the field: the regex compiler and the replacement
    expander give them their meaning.
    """
    fields: list[str] = []
    i = 0
    n = len(line)
    while True:
        while i < n and _isspace(line[i]):
            i += 1
        if i >= n or line[i] == "#":
            return fields
        start = i
        escaped = False
        while i < n and (escaped or not (_isspace(line[i]) or line[i] == "#")):
            escaped = not escaped and line[i] == "\\"
            i += 1
        fields.append(line[start:i])


# Replacement template operations.
_LITERAL, _GROUP, _CASE, _IP, _HEX = range(5)
_Op = tuple[int, str]


def _parseTemplate(template: str) -> tuple[_Op, ...]:
    """Parse a replacement once, at load time, into operations."""
    ops: list[_Op] = []
    literal: list[str] = []

    def flush() -> None:
        if literal:
            ops.append((_LITERAL, "".join(literal)))
            literal.clear()

    i = 0
    while i < len(template):
        c = template[i]
        if c != "\\":
            literal.append(c)
            i += 1
            continue
        if i + 1 == len(template):  # a lone trailing backslash is itself
            literal.append("\\")
            break
        d = template[i + 1]
        i += 2
        if d in "0123456789":
            flush()
            ops.append((_GROUP, d))
        elif d in "ULE":
            flush()
            ops.append((_CASE, d))
        elif d == "i":
            flush()
            ops.append((_IP, ""))
        elif d == "x":
            flush()
            ops.append((_HEX, ""))
        else:  # \\ \# \<space> and any other character: the character itself
            literal.append(d)
    flush()
    return tuple(ops)


def _changeCase(text: str, mode: str) -> str:
    # One character for one, as towupper/towlower do ("ß" stays "ß").
    if mode == "U":
        return "".join(u if len(u := c.upper()) == 1 else c for c in text)
    if mode == "L":
        return "".join(lo if len(lo := c.lower()) == 1 else c for c in text)
    return text


@dataclass(frozen=True)
class _Client:
    family: int
    text: str
    hex: str


def _client(host: str) -> _Client:
    """The ``\\i``/``\\x`` texts and the address family of a client.

    An IPv4-mapped IPv6 address (a dual-stack ``[::]`` listener) counts as the
    IPv4 client it is, so ``4`` rules and ``\\x`` work on such listeners.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise ValueError(f"client address {host!r} is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return _Client(address.version, str(address), address.packed.hex().upper())


def _expand(ops: Sequence[_Op], match: re.Match[str] | None, client: _Client) -> str:
    out: list[str] = []
    mode = "E"
    for kind, value in ops:
        if kind == _CASE:
            mode = value
            continue
        if kind == _LITERAL:
            text = value
        elif kind == _GROUP:
            number = int(value)
            if match is None or number > (match.re.groups or 0):
                continue
            text = match.group(number) or ""
        elif kind == _IP:
            text = client.text
        else:
            text = client.hex
        out.append(_changeCase(text, mode))
    return "".join(out)


# Flags that contradict each other; tftp-hpa refuses the same pairs.
_BAD_COMBINATIONS = ("r~", "ra", "as", "ae", "es", "eE", "aE", "Es")


@dataclass(frozen=True)
class _Rule:
    line: int
    flags: str
    regex: _Regex
    template: tuple[_Op, ...]
    rewrite: bool
    globalMode: int  # 0: once, 1: "g" (rescan from the start), 2: "gg" (sed-like)
    exit: bool
    hasFile: bool
    restart: bool
    abort: bool
    inverse: bool
    onlyFamily: frozenset[int]
    onlyOp: frozenset[str]

    def appliesTo(self, op: str, family: int) -> bool:
        # As tftp-hpa: every restriction must hold, so "GP" or "46" never apply.
        if self.onlyOp and self.onlyOp != {op}:
            return False
        return not self.onlyFamily or self.onlyFamily == {family}


def _parseRule(line: str, lineNumber: int, source: str) -> _Rule | None:
    def fail(message: str) -> RemapSyntaxError:
        return RemapSyntaxError(source, lineNumber, message)

    fields = _fields(line)
    if not fields:
        return None
    flags = fields[0]
    if flags.startswith(":"):
        raise fail("labels (:name) and j jumps are not supported by ctftp")
    for c in flags:
        if c not in "rgieEsaGP~46":
            raise fail(f'invalid flag "{c}" in "{flags}" (flags are r g i e E s a G P ~ 4 6)')
    for pair in _BAD_COMBINATIONS:
        if pair[0] in flags and pair[1] in flags:
            raise fail(f"rule flags {pair[0]} and {pair[1]} cannot be combined")
    if len(fields) < 2:
        raise fail("regex missing")
    try:
        regex = _Regex.compile(fields[1], ignoreCase="i" in flags)
    except _EreError as e:
        raise fail(f'bad regex "{fields[1]}": {e}') from None
    rewrite = "r" in flags
    globalMode = min(flags.count("g"), 2) if rewrite else 0
    return _Rule(
        line=lineNumber,
        flags=flags,
        regex=regex,
        template=_parseTemplate(fields[2] if len(fields) > 2 else ""),
        rewrite=rewrite,
        globalMode=globalMode,
        exit="e" in flags,
        hasFile="E" in flags,
        restart="s" in flags,
        abort="a" in flags,
        inverse="~" in flags,
        onlyFamily=frozenset(int(c) for c in flags if c in "46"),
        onlyOp=frozenset({"G": "get", "P": "put"}[c] for c in flags if c in "GP"),
    )


def _splitLines(text: str) -> list[str]:
    # tftp-hpa reads lines up to "\n" and drops every "\r" and NUL on the way.
    return [line.replace("\r", "").replace("\0", "") for line in text.split("\n")]


def readNameText(path: str) -> str:
    """The text of a file that names files (rules, ``mtftp_file``).

    Filenames are UTF-8 with surrogate escapes everywhere in ctftp (see
    ``ctftp.packets``), so a file read the same way matches the same bytes.
    """
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "surrogateescape")


class RuleSet:
    """A parsed tftp-hpa remap file; immutable, so a reload swaps whole sets."""

    def __init__(self, rules: Sequence[_Rule], source: str) -> None:
        self._rules = tuple(rules)
        self.source = source

    @classmethod
    def fromFile(cls, path: str) -> RuleSet:
        """Parse the rule file at ``path``.

        Raises :class:`RemapSyntaxError` for a rule that does not parse and
        :class:`OSError` when the file cannot be read.
        """
        return cls.fromText(readNameText(path), source=path)

    @classmethod
    def fromText(cls, text: str, source: str = "<rules>") -> RuleSet:
        """Parse rules from ``text``; ``source`` names it in error messages."""
        rules = []
        for number, line in enumerate(_splitLines(text), start=1):
            rule = _parseRule(line, number, source)
            if rule is not None:
                rules.append(rule)
        return cls(rules, source)

    def __len__(self) -> int:
        return len(self._rules)

    def apply(
        self,
        name: str,
        *,
        clientHost: str,
        op: str,
        exists: Callable[[str], bool] = lambda n: True,
    ) -> str:
        """Rewrite ``name`` as tftpd-hpa would for this client and operation.

        ``op`` is ``"get"`` (RRQ) or ``"put"`` (WRQ); ``clientHost`` is the
        client's IP address; ``exists`` answers the ``E`` flag's question
        "can this name be served?".  Raises :class:`RemapDenied` when an ``a``
        rule matches and :class:`RemapFailed` when the rules run past
        :data:`MAX_STEPS` steps or :data:`TIME_LIMIT`.
        """
        if op not in ("get", "put"):
            raise ValueError(f'op must be "get" or "put", not {op!r}')
        client = _client(clientHost)
        return _withinTimeLimit(
            self.source,
            self._rules,
            lambda running: self._apply(name, client, op, exists, running),
        )

    def _apply(
        self,
        name: str,
        client: _Client,
        op: str,
        exists: Callable[[str], bool],
        running: list[int],
    ) -> str:
        rules = self._rules
        current = name
        steps = 0
        budget = [_PROBE_BUDGET]
        index = 0
        while index < len(rules):
            running[0] = index
            rule = rules[index]
            following = index + 1
            if not rule.appliesTo(op, client.family):
                index = following
                continue
            if steps >= MAX_STEPS:
                raise RemapFailed()
            steps += 1
            if rule.inverse:
                match = None
                matched = rule.regex.main.search(current) is None
            else:
                match = rule.regex.search(current, 0, budget)
                matched = match is not None
            if not matched:
                index = following
                continue
            result = current
            if rule.rewrite and match is not None:
                while True:
                    replacement = _expand(rule.template, match, client)
                    offset = match.start() + len(replacement)
                    result = result[: match.start()] + replacement + result[match.end() :]
                    if len(result) > MAX_NAME_LENGTH:
                        raise RemapFailed()
                    if rule.globalMode == 0:
                        break
                    if rule.globalMode == 1:
                        offset = 0
                    elif offset >= len(result):
                        break
                    match = rule.regex.search(result, offset, budget)
                    if match is None:
                        break
                    if steps >= MAX_STEPS:
                        raise RemapFailed()
                    steps += 1
            if rule.hasFile and not exists(result):
                index = following  # the rewrite is undone and the rule did not match
                continue
            current = result
            if rule.abort:
                message = _expand(rule.template, match, client)
                raise RemapDenied(message or DEFAULT_DENY_MESSAGE)
            if rule.exit or rule.hasFile:
                return current
            index = 0 if rule.restart else following
        return current


# ---------------------------------------------------------------------------
# atftpd pcre files.


@dataclass(frozen=True)
class _PcreRule:
    line: int
    regex: re.Pattern[str]
    template: tuple[tuple[bool, str], ...]  # (isGroup, literal text or group number)


def _parsePcreTemplate(template: str, groups: int) -> tuple[tuple[bool, str], ...]:
    """``$0``-``$9``, ``${n}``, ``$&`` and ``$$``; any other ``$`` is itself."""
    ops: list[tuple[bool, str]] = []
    literal: list[str] = []
    pattern = re.compile(r"\$(?:([0-9])|\{([0-9]+)\}|(&)|(\$))")
    pos = 0
    for m in pattern.finditer(template):
        literal.append(template[pos : m.start()])
        pos = m.end()
        if m.group(4):
            literal.append("$")
            continue
        number = int(m.group(1) or m.group(2) or 0)
        if number > groups:
            raise ValueError(f"{m.group(0)} refers to group {number}; the regex has {groups}")
        if literal:
            ops.append((False, "".join(literal)))
            literal.clear()
        ops.append((True, str(number)))
    literal.append(template[pos:])
    if "".join(literal):
        ops.append((False, "".join(literal)))
    return tuple(ops)


class PcreRules:
    """A parsed atftpd ``--pcre`` file: the first pattern that matches wins.

    As atftpd 0.8 does (pcre2_substitute), the matched part of the name is
    replaced and the rest is kept; anchor with ``^...$`` to replace it all.
    """

    def __init__(self, rules: Sequence[_PcreRule], source: str) -> None:
        self._rules = tuple(rules)
        self.source = source

    @classmethod
    def fromFile(cls, path: str) -> PcreRules:
        """Parse the pattern file at ``path``.

        Raises :class:`RemapSyntaxError` for a line that does not parse and
        :class:`OSError` when the file cannot be read.
        """
        return cls.fromText(readNameText(path), source=path)

    @classmethod
    def fromText(cls, text: str, source: str = "<rules>") -> PcreRules:
        """Parse patterns from ``text``; ``source`` names it in error messages.

        Blank lines and lines starting with ``#`` are skipped (atftpd itself
        refuses them, but every example file has comments).
        """
        rules = []
        for number, raw in enumerate(_splitLines(text), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 2:
                raise RemapSyntaxError(
                    source,
                    number,
                    f"expected 'regex replacement' (2 fields), found {len(fields)}",
                )
            try:
                regex = re.compile(fields[0])
            except (re.error, RecursionError, OverflowError) as e:
                raise RemapSyntaxError(source, number, f'bad regex "{fields[0]}": {e}') from None
            try:
                template = _parsePcreTemplate(fields[1], regex.groups)
            except ValueError as e:
                raise RemapSyntaxError(source, number, str(e)) from None
            rules.append(_PcreRule(number, regex, template))
        return cls(rules, source)

    def __len__(self) -> int:
        return len(self._rules)

    def apply(self, name: str) -> str | None:
        """The rewritten name, or ``None`` when no pattern matches; raises
        :class:`RemapFailed` when the patterns run past :data:`TIME_LIMIT`."""
        return _withinTimeLimit(
            self.source,
            self._rules,
            lambda running: self._apply(name, running),
        )

    def _apply(self, name: str, running: list[int]) -> str | None:
        for index, rule in enumerate(self._rules):
            running[0] = index
            match = rule.regex.search(name)
            if match is None:
                continue
            replacement = "".join(
                (match.group(int(value)) or "") if isGroup else value
                for isGroup, value in rule.template
            )
            return name[: match.start()] + replacement + name[match.end() :]
        return None
