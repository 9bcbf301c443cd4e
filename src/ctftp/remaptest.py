"""``ctftp-remap-test``: show what remap rules do to names read on stdin.

Remap rules are hard to get right by reading them, and a mistake shows up as
a phone that cannot boot.  This tool runs the exact engine the server uses
(:mod:`ctftp.remap`), like ``atftpd --pcre-test`` and ``in.tftpd --map-test``,
so a rule file can be checked before it is installed or before SIGHUP::

    printf 'SEP001122334455.cnf.xml\\n' | ctftp-remap-test phones.rules
    SEP001122334455.cnf.xml -> phones/SEP-default.cnf.xml
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from ctftp.errors import RequestRefused
from ctftp.remap import PcreRules, RemapDenied, RemapFailed, RemapSyntaxError, RuleSet
from ctftp.resolver import resolveExisting

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctftp-remap-test",
        description=(
            "Read filenames on stdin, one a line, and print what each becomes under "
            "a tftp-hpa remap file (RULES) or an atftpd pcre file (--pcre FILE)."
        ),
    )
    parser.add_argument("rules", nargs="?", metavar="RULES", help="tftp-hpa remap rule file")
    parser.add_argument("--pcre", metavar="FILE", help="atftpd pcre pattern file instead")
    parser.add_argument(
        "--client",
        metavar="IP",
        default="127.0.0.1",
        help="client address for \\i, \\x and the 4/6 flags (default: 127.0.0.1)",
    )
    parser.add_argument(
        "--op",
        choices=["get", "put"],
        default="get",
        help="request type for the G/P flags: get (RRQ) or put (WRQ); default get",
    )
    parser.add_argument(
        "--root",
        metavar="DIR",
        help="answer the E flag by looking for the file under DIR "
        "(default: every name counts as existing)",
    )
    return parser


def _names(stdin: TextIO) -> Iterator[str]:
    # Names are bytes on the wire; read them as the server decodes them.
    buffer = getattr(stdin, "buffer", None)
    lines = (
        (raw.decode("utf-8", "surrogateescape") for raw in buffer)
        if buffer is not None
        else iter(stdin)
    )
    for line in lines:
        name = line.rstrip("\n").rstrip("\r")
        if name:
            yield name


def _write(stream: TextIO, text: str) -> None:
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        stream.flush()
        buffer.write(text.encode("utf-8", "surrogateescape"))
        buffer.flush()
    else:
        stream.write(text)


def _existsUnder(root: str) -> Callable[[str], bool]:
    """The server's question for ``E``: does the name resolve to a file in root?"""

    def exists(name: str) -> bool:
        try:
            real = resolveExisting([root], name, protectSidecars=False)
        except RequestRefused:
            return False
        return os.path.isfile(real)

    return exists


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit status (1 when a rule file is unusable)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.rules is None) == (args.pcre is None):
        parser.error("give either a RULES file or --pcre FILE")
    try:
        ipaddress.ip_address(args.client.split("%", 1)[0])
    except ValueError:
        parser.error(f"--client: {args.client!r} is not an IP address")
    path = args.pcre if args.pcre is not None else args.rules
    try:
        rules: RuleSet | PcreRules = (
            PcreRules.fromFile(path) if args.pcre is not None else RuleSet.fromFile(path)
        )
    except RemapSyntaxError as e:
        _write(sys.stderr, f"{e}\n")
        return 1
    except OSError as e:
        _write(sys.stderr, f"{path}: {e.strerror or e}\n")
        return 1
    exists = _existsUnder(args.root) if args.root else (lambda name: True)
    for name in _names(sys.stdin):
        try:
            if isinstance(rules, PcreRules):
                result = rules.apply(name)
                line = f"{name} -> {name} (no match)" if result is None else f"{name} -> {result}"
            else:
                line = f"{name} -> " + rules.apply(
                    name, clientHost=args.client, op=args.op, exists=exists
                )
        except RemapDenied as e:
            line = f"{name} -> denied: {e.message}"
        except RemapFailed as e:
            line = f"{name} -> failed: {e.message}"
            if e.detail:
                line += f" ({e.detail})"
        _write(sys.stdout, line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
