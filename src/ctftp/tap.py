"""The twistd plugin's options and service, and the ``ctftp`` console script.

``twistd ctftp`` reaches this module through ``twisted/plugins/ctftp_plugin.py``.
Every configuration key in :data:`ctftp.config.KEYS` becomes a
``--key-with-dashes VALUE`` option here, so the command line can do everything
the config file can, and wins over it.
"""

from __future__ import annotations

import gc
import re
import signal
import sys
from functools import partial
from typing import TYPE_CHECKING

from twisted.python import usage
from twisted.python.logfile import LogFile

from ctftp.config import KEYS, ConfigError, ServerConfig, checkKey

if TYPE_CHECKING:
    from collections.abc import Callable

    from twisted.application.service import IService
    from twisted.logger import ILogObserver

__all__ = [
    "Options",
    "main",
    "makeService",
    "twistdLogObserver",
    "writeTwistdLogAsCentralLog",
]

#: Short forms accepted for a key's option: alias -> key name.
ALIASES: dict[str, str] = {"root": "root_dir", "listen": "listeners"}

EXIT_USAGE = 2

_UNRECOGNIZED = re.compile(r"option (\S+) not recognized")


def _help(name: str) -> str:
    key = KEYS[name]
    if key.default is None:
        return f"{key.help} (required unless in --config)"
    return f"{key.help} (default: {key.default or 'empty'})"


def _parameters() -> list[list[str | None]]:
    params: list[list[str | None]] = [
        ["config", "c", None, "config file of key=value lines; options given here win over it"]
    ]
    for name in KEYS:
        params.append([name.replace("_", "-"), None, None, _help(name)])
    for alias, name in ALIASES.items():
        params.append([alias, None, None, f"short for --{name.replace('_', '-')}"])
    return params


def _fail(message: str) -> SystemExit:
    """Print one line to stderr and return the exit to raise.

    twistd answers a ``UsageError`` with its whole usage text; a config
    mistake deserves one line that says what is wrong, so exit directly.
    """
    print(f"ctftp: {message}", file=sys.stderr)
    return SystemExit(EXIT_USAGE)


class Options(usage.Options):
    """``twistd ctftp`` options: ``--config FILE`` plus one option per config key.

    After parsing, ``self.config`` is the complete :class:`ServerConfig`.
    """

    synopsis = "[--config FILE] [--key-with-dashes VALUE ...]"
    longdesc = (
        "Serve files over TFTP. Every config file key is also an option, with dashes for "
        "underscores; an option given here wins over the file. See docs/configuration.md."
    )
    optParameters = _parameters()

    config: ServerConfig

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse, answering a mistyped option with one line and a suggestion.

        twistd prints its whole usage text for a ``UsageError``; for
        ``--timeout-secs`` one line naming ``--timeout-sec`` helps more.
        """
        try:
            self._checkLongOptions(sys.argv[1:] if options is None else options)
            try:
                super().parseOptions(options)
            except usage.UsageError as error:
                message = str(error)
                unknown = _UNRECOGNIZED.match(message)
                if unknown and unknown.group(1).startswith("--"):
                    checkKey(unknown.group(1))
                raise ConfigError(f"command line: {message}") from None
        except ConfigError as oneLine:
            raise _fail(str(oneLine)) from None

    def _checkLongOptions(self, args: list[str]) -> None:
        """Refuse, in one line, what getopt would let through or misread.

        getopt takes any unique prefix of a long option (``--root-d`` for
        ``--root-dir``), which a later option could make ambiguous; it has no
        hint for a key written with underscores (``--allow_write``); and it
        takes the next option as the value of one given without a value
        (``--allow-write --listen X``), then reports "Wrong number of
        arguments". Only exact option names pass here.
        """
        withValue = {option[:-1] for option in self.longOpt if option.endswith("=")}
        flags = {option for option in self.longOpt if not option.endswith("=")}
        shortWithValue = {"-" + letter for letter in re.findall(r"(\w):", self.shortOpt)}
        index = 0
        while index < len(args):
            arg = args[index]
            index += 1
            if arg == "--":
                return
            if arg in shortWithValue:
                index += 1
            if not arg.startswith("--"):
                continue
            name, equals, _ = arg[2:].partition("=")
            if name in flags:
                continue
            if name not in withValue:
                dashed = name.replace("_", "-")
                known = withValue | flags
                longer = [option for option in known if option.startswith(dashed)]
                if dashed in known or len(longer) == 1:
                    meant = dashed if dashed in known else longer[0]
                    raise ConfigError(
                        f"command line: unknown option '--{name}' (did you mean '--{meant}'?)"
                    )
                checkKey("--" + name)  # raises: no key has this option name
            if equals or index >= len(args):
                continue  # a missing last value is getopt's to report
            value = args[index]
            index += 1
            if value.startswith("--") and value[2:].partition("=")[0] in withValue | flags:
                raise ConfigError(
                    f"command line: option --{name} requires a value, got the option '{value}'"
                )

    def overrides(self) -> dict[str, str]:
        """Return the options actually given, keyed by config key name.

        Unset options keep their ``None`` default, so only what the user typed
        overrides the file.
        """
        result: dict[str, str] = {}
        for name in KEYS:
            value = self.get(name.replace("_", "-"))
            if value is not None:
                result[name] = value
        for alias, name in ALIASES.items():
            value = self.get(alias)
            if value is None:
                continue
            long = "--" + name.replace("_", "-")
            if name in result and result[name] != value:
                raise ConfigError(f"command line: --{alias}: conflicts with {long}; give one")
            result[name] = value
        return result

    def readConfig(self) -> ServerConfig:
        """The config from the file (if any) and the options given; again on SIGHUP."""
        overrides = self.overrides()
        path = self.get("config")
        if path is not None:
            return ServerConfig.fromFile(path, overrides)
        return ServerConfig.fromStrings(overrides)

    def postOptions(self) -> None:
        """Build ``self.config``, turning a user mistake into one line and exit status 2."""
        try:
            self.config = self.readConfig()
        except ConfigError as error:
            raise _fail(str(error)) from None
        writeTwistdLogAsCentralLog(self.parent, self.config)


def writeTwistdLogAsCentralLog(twistd: usage.Options | None, config: ServerConfig) -> None:
    """
    With ``log_dir`` empty, have twistd write its log in ctftp's lines.

    twistd's log is then the central log (SPEC 2), whose lines SPEC 7 fixes
    (``[time] [LEVEL] message``, or JSON with ``log_format=json``), while
    twistd's own observer would write ``time [namespace#level] message``.
    twistd takes its observer from its ``--logger`` option (the dotted name
    of a factory, imported once the options are parsed) when it starts
    logging, before the service is built. So ``twistd`` (the parsed twistd
    options, None outside twistd) gets :func:`twistdLogObserver` as its
    ``logger``, which opens the same file twistd would (standard output with
    ``-n``, else ``--logfile`` or ``twistd.log``) with ctftp's formatter. An
    operator's own ``--logger`` or ``--syslog`` is left alone, and so is
    ``--logfile -`` without ``-n``, which twistd refuses itself.
    """
    global _twistdLog
    if twistd is None or config.log_dir or twistd.get("logger") or twistd.get("syslog"):
        return
    logfile = twistd.get("logfile") or ""
    nodaemon = bool(twistd.get("nodaemon"))
    if logfile == "-" and not nodaemon:
        return
    _twistdLog = partial(_openTwistdLog, logfile, nodaemon, config.log_format)
    twistd["logger"] = f"{__name__}.{twistdLogObserver.__name__}"


#: What :func:`twistdLogObserver` opens, set by :func:`writeTwistdLogAsCentralLog`.
_twistdLog: Callable[[], ILogObserver] | None = None


def twistdLogObserver() -> ILogObserver:
    """twistd's ``--logger`` factory when ctftp's lines are twistd's log."""
    if _twistdLog is None:
        raise RuntimeError("ctftp.tap.twistdLogObserver is set by twistd ctftp itself")
    return _twistdLog()


def _openTwistdLog(logfile: str, nodaemon: bool, logFormat: str) -> ILogObserver:
    """twistd's choice of log file (``UnixAppLogger._getLogObserver``), rotated
    on SIGUSR1 as twistd does, written in ctftp's format."""
    from ctftp import logs

    if logfile == "-" or (nodaemon and not logfile):
        return logs.streamObserver(sys.stdout, logFormat)
    stream = LogFile.fromFullPath(logfile or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(signum: int, frame: object) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(stream.rotate)  # type: ignore[attr-defined]

        signal.signal(signal.SIGUSR1, rotate)
    return logs.streamObserver(stream, logFormat)


def makeService(options: Options) -> IService:
    """Build the ctftp service tree for twistd, with SIGHUP handling installed.

    The process is ctftp's own here (an embedding application calls
    ``ctftp.makeService`` instead), so the reactor is imported without TLS
    (:func:`importReactorWithoutTLS`) and what start-up loaded is handed to
    :func:`freezeStartupObjects`.
    """
    importReactorWithoutTLS()
    from ctftp import service

    try:
        built = service.makeService(
            options.config, installSignalHandlers=True, reloadConfig=options.readConfig
        )
    except ConfigError as e:
        raise _fail(str(e)) from None
    freezeStartupObjects()
    return built


def importReactorWithoutTLS() -> None:
    """Import the reactor without letting it load pyOpenSSL; TLS comes later, if used.

    Importing ``twisted.internet.reactor`` loads pyOpenSSL and cryptography
    when they are installed (for ``startTLS`` on TCP connections and
    ``listenSSL``/``connectSSL``, none of which ctftp uses): 12 of the 44 MB
    the process has at that point. ctftp needs TLS only for an ``https://``
    relay link or ``event_http_url``, and builds those clients with
    ``twisted.web.client``'s ``Agent``, which wraps its connections in TLS
    itself (``wrapClientTLS``) when ``twisted.web.client`` is imported,
    after this (see :mod:`ctftp.webclient`).

    So the reactor is imported while ``OpenSSL`` is marked missing, and the
    mark is removed at once. Nothing is done when the reactor (chosen with
    ``twistd --reactor``, say) or pyOpenSSL is already loaded.
    """
    if "twisted.internet.reactor" in sys.modules or "OpenSSL" in sys.modules:
        return
    sys.modules["OpenSSL"] = None  # type: ignore[assignment]
    try:
        import twisted.internet.reactor  # noqa: F401
    finally:
        del sys.modules["OpenSSL"]


def freezeStartupObjects() -> None:
    """Keep the garbage collector's full passes off what start-up loaded.

    About 55,000 objects (Twisted's and ctftp's modules, classes and
    functions) live as long as the process; every full collection walked
    all of them, a 20-35 ms stall of every transfer, twice per 10,000 small
    transfers. ``gc.freeze`` moves them out of the collector's sight (after
    a collection, so that no garbage is kept): a full pass then costs about
    2 ms.
    """
    gc.collect()
    gc.freeze()


USAGE = """\
usage: ctftp CONFIG [--key-with-dashes VALUE ...]
       ctftp --root-dir DIR [--listeners HOST:PORT ...]

Runs the TFTP server in the foreground: 'ctftp CONFIG' is 'twistd -n ctftp --config CONFIG'.
Options are those of 'twistd ctftp --help'."""


def twistdArgv(argv: list[str]) -> list[str]:
    """Return the twistd command line that ``ctftp ARGS`` stands for.

    ``--pidfile=`` (no pidfile): a foreground server needs none, and twistd's
    default ``twistd.pid`` in the current folder would stop a second ``ctftp``
    started from the same folder.
    """
    head = ["twistd", "-n", "--pidfile=", "ctftp"]
    if argv and not argv[0].startswith("-"):
        return [*head, "--config", argv[0], *argv[1:]]
    return [*head, *argv]


def main(argv: list[str] | None = None) -> None:
    """The ``ctftp`` console script: a shorter spelling of ``twistd -n ctftp``."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        print(USAGE, file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    if args[0] in ("-h", "--help"):
        print(USAGE)
        raise SystemExit(0)
    from twisted.scripts.twistd import run

    sys.argv = twistdArgv(args)
    run()
