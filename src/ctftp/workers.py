"""``workers=N``: N processes serve the same listeners, so a storm uses every core.

One Python process tops out at one core, and a provisioning storm (every
phone of a site rebooting after a power cut) is thousands of small transfers
a second. :class:`WorkerSupervisor` runs N ordinary ctftp servers as child
processes on the same listening addresses.

How the workers share a listener
    In ``privilegedStartService`` (as root, before twistd drops privileges)
    the supervisor binds, for each listener, one socket per worker with
    ``SO_REUSEPORT``. Linux then spreads incoming datagrams over the sockets
    by a hash of the client's address and port, so

    - a client's retransmitted RRQ (same address and port) lands on the same
      worker, whose duplicate-request check then ignores it; with a shared
      socket a second worker may start a second transfer;
    - each worker wakes only for its own share (with one socket shared by
      all, every worker wakes for every datagram and all but one find
      nothing). At two workers a shared socket is as fast, at times faster
      (an idle worker takes the next request; benchmarks/workers.py,
      figures in docs/operations.md), but the first point decides: a storm
      is when clients retransmit.

    The supervisor keeps its copies of the sockets, so when a worker dies the
    datagrams hashed to it wait in its socket until the replacement adopts
    it, rather than being lost or reshuffled.

    With ``systemd=true`` systemd binds one socket per address; the
    supervisor hands that same socket to every worker (the kernel cannot
    split one socket's queue).

The workers
    Each worker runs :func:`main` (``--worker K --fds 3,...``): it gets
    the parsed configuration as JSON in ``CTFTP_WORKER_CONFIG`` (so no file
    is read after privileges are dropped) and its sockets as descriptors 3,
    4, ... (the sd_listen_fds(3) layout), and runs ctftp's normal service
    tree (``makeService``) with :class:`ctftp.systemd.SocketActivatedListeners`
    in place of bound listeners, and without the ``metrics_listen`` page
    (N processes cannot share its port). Each writes ``log_dir/ctftp.log``
    itself (whole lines, one ``O_APPEND`` write each, so lines of different
    workers never mix), through the supervisor's descriptor when it may not
    open the file (``twistd --uid``); each log event carries a ``worker`` field (visible with
    ``log_format=json``) and each worker logs ``worker K serving`` at start
    and its transfer counts when it stops. A worker's twistd-log output
    (its stderr) is relayed into the supervisor's log prefixed ``worker K``:
    everything when there is no ``log_dir``, warnings and errors otherwise
    (ctftp.log already has the rest).

    A worker that dies is restarted, with a back-off that doubles while it
    keeps dying within seconds of starting; each death is logged with the
    worker's number, pid and exit status. ``stopService`` sends SIGTERM to
    every worker and waits (bounded) before SIGKILL. A worker whose
    supervisor disappears is told by the kernel (``PR_SET_PDEATHSIG``) and
    stops, instead of holding the port forever.

PXE MTFTP (``mtftp_file``)
    The supervisor binds the MTFTP port (one socket per address) and hands
    it to worker 1 alone (``--mtftp-fds``): an MTFTP file has one group, so
    one process must know whether it is being sent.

``workers=1`` never comes here: it is the ordinary single process.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import ipaddress
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from zope.interface import implementer

import ctftp
from ctftp import logs
from ctftp.config import ServerConfig
from ctftp.events import ITransferObserver, TransferRecord, formatAddress
from ctftp.mtftp import mtftpHosts
from ctftp.systemd import (
    SD_LISTEN_FDS_START,
    SocketActivatedListeners,
    SocketActivationError,
    listenFds,
)
from ctftp.tap import freezeStartupObjects, importReactorWithoutTLS

if TYPE_CHECKING:
    from ctftp.service import CtftpService

__all__ = [
    "WORKER_CONFIG_ENV",
    "WorkerStats",
    "WorkerSupervisor",
    "bindReusePort",
    "configFromJSON",
    "configToJSON",
    "main",
    "makeSupervisor",
    "serviceOnSockets",
]

#: The environment variable that carries the configuration to a worker.
WORKER_CONFIG_ENV = "CTFTP_WORKER_CONFIG"

#: Variables a worker must not inherit: systemd's are for the supervisor only
#: (a worker sending READY=1 would confuse a Type=notify unit).
_PRIVATE_ENV = ("NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_USEC")

_log = logs.logger("ctftp.workers")
#: Relayed worker output goes to the global publisher only: the worker
#: already wrote its ctftp events to ctftp.log itself.
_relayLog = Logger(namespace="ctftp.workers", observer=globalLogPublisher)
#: The level a worker's stderr line starts with (``_StderrLines``).
_LEVEL_PREFIX = re.compile(r"\[(ERROR|WARN|INFO|DEBUG)\] ")

_PR_SET_PDEATHSIG = 1


# -- the configuration, across a process boundary ------------------------------------


_NETWORKS = (ipaddress.IPv4Network, ipaddress.IPv6Network)


def _plain(name: str, value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, _NETWORKS):
        return str(value)
    if isinstance(value, tuple | list):
        if value and all(isinstance(item, _NETWORKS) for item in value):
            # allow_clients / deny_clients: the config-file spelling, which
            # keyword construction accepts whatever the normaliser.
            return ", ".join(str(item) for item in value)
        return [_plain(name, item) for item in value]
    if isinstance(value, frozenset | set):
        return sorted((_plain(name, item) for item in value), key=str)
    if isinstance(value, Mapping):
        return {str(key): _plain(name, item) for key, item in value.items()}
    raise TypeError(f"ServerConfig.{name}: {type(value).__name__} cannot be passed to workers")


def configToJSON(config: ServerConfig) -> str:
    """The configuration as JSON that :func:`configFromJSON` turns back into it.

    Values become their plain JSON forms (tuples lists, sets sorted lists,
    networks strings), which ``ServerConfig``'s keyword construction accepts;
    a worker therefore gets exactly the parsed configuration, without
    reading the file again (it may be unreadable once privileges dropped).
    Values equal to their default are left out, so the worker's keyword
    construction never has to accept an odd form of a default.
    """
    values = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.default is not dataclasses.MISSING and value == field.default:
            continue
        values[field.name] = _plain(field.name, value)
    return json.dumps(values)


def configFromJSON(text: str) -> ServerConfig:
    """Rebuild the configuration :func:`configToJSON` wrote."""
    return ServerConfig(**json.loads(text))


def _singleProcess(config: ServerConfig) -> ServerConfig:
    """The worker's own configuration: one process, on the sockets it is given."""
    names = {field.name for field in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    if "workers" in names:
        changes["workers"] = 1
    if "systemd" in names:
        changes["systemd"] = False
    return dataclasses.replace(config, **changes) if changes else config


# -- a worker -------------------------------------------------------------------------


@implementer(ITransferObserver)
class WorkerStats:
    """Counts one worker's transfers, for its closing log line (and tests)."""

    def __init__(self) -> None:
        self.started = 0
        self.ok = 0
        self.failed = 0

    def transferStarted(self, record: TransferRecord) -> None:
        self.started += 1

    def transferEnded(self, record: TransferRecord) -> None:
        if record.status == "ok":
            self.ok += 1
        else:
            self.failed += 1


def serviceOnSockets(
    config: ServerConfig,
    fds: Sequence[int],
    *,
    reactor: Any = None,
    origin: str = "systemd",
    installSignalHandlers: bool = True,
    metrics: bool = True,
    mtftpFds: Sequence[int] = (),
) -> CtftpService:
    """ctftp's normal service tree, listening on already-bound sockets ``fds``.

    ``makeService`` builds the tree (sources, observers, event sinks,
    logging, SIGHUP); its listeners are replaced by one
    :class:`SocketActivatedListeners` on ``fds``, so nothing is bound. What a
    worker runs; also what a launcher that passes sockets by hand runs.
    ``metrics=False`` leaves out the ``metrics_listen`` page: N workers
    cannot all bind its TCP port, and a page of one worker's counts would
    pass for the whole server's. ``mtftpFds`` are sockets on ``mtftp_port``
    (PXE MTFTP), without which this process serves no MTFTP.
    """
    from ctftp.service import ListenerService, makeService

    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    service = makeService(
        _singleProcess(config), reactor=reactor, installSignalHandlers=installSignalHandlers
    )
    for child in list(service):
        if isinstance(child, ListenerService | SocketActivatedListeners) or (
            not metrics and child.name == "metrics"
        ):
            child.disownServiceParent()
    SocketActivatedListeners(reactor, service.server, fds, origin).setServiceParent(service)
    if mtftpFds:
        SocketActivatedListeners(
            reactor, service.server, mtftpFds, origin, mtftp=True
        ).setServiceParent(service)
    return service


@implementer(ILogObserver)
class _WorkerTag:
    """Adds ``worker=K`` to every ctftp event, ahead of the log file observers."""

    def __init__(self, worker: int) -> None:
        self.worker = worker

    def __call__(self, event: LogEvent) -> None:
        event.setdefault("worker", self.worker)


@implementer(ILogObserver)
class _StderrLines:
    """The worker's twistd-log stand-in: ``LEVEL message`` lines on stderr,
    which the supervisor reads and relays into its own log."""

    def __call__(self, event: LogEvent) -> None:
        line = logs.formatTextLine(event)
        if line is None:
            return
        # Drop the "[time] " stamp: the supervisor's log adds its own.
        text = line.split("] ", 1)[1] if line.startswith("[") else line
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # the supervisor is gone; PR_SET_PDEATHSIG ends this process


class _WorkerLogFile(logs.LogFile):
    """ctftp.log as a worker opens it: by path, or else through the
    supervisor's descriptor.

    Under ``twistd --uid`` the supervisor creates ctftp.log as root before
    privileges drop, and a worker, started afterwards as the unprivileged
    user, may not open it; the supervisor's descriptor (``--log-fd``) still
    writes to it, line by line with ``O_APPEND`` like every other writer.
    The same holds at SIGHUP: a reopen by path that fails keeps writing
    through the descriptor.
    """

    inherited: int | None = None

    def _open(self) -> int:
        try:
            return super()._open()
        except OSError:
            if self.inherited is None:
                raise
            return os.dup(self.inherited)


def _dieWithParent(parent: int) -> None:
    """Stop (SIGTERM) when the supervisor dies, so no orphan holds the port."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if parent and os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _parseArgs(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ctftp.workers",
        description="A ctftp worker process; started by the workers=N supervisor, not by hand.",
    )
    parser.add_argument("--worker", type=int, required=True, help="worker number, from 1")
    parser.add_argument(
        "--fds", required=True, help="comma-separated listener descriptors (3,4,...)"
    )
    parser.add_argument("--parent", type=int, default=0, help="supervisor pid")
    parser.add_argument(
        "--mtftp-fds", default="", help="comma-separated PXE MTFTP descriptors (worker 1)"
    )
    parser.add_argument(
        "--log-fd", type=int, default=None, help="the supervisor's descriptor of ctftp.log"
    )
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of a worker process.

    The supervisor runs it as ``python -c "...main(sys.argv[1:])" --worker K
    --fds 3,...`` rather than ``python -m ctftp.workers``, which would make
    runpy warn that the package already imported this module.
    """
    args = _parseArgs(sys.argv[1:] if argv is None else argv)
    raw = os.environ.pop(WORKER_CONFIG_ENV, None)
    if raw is None:
        raise SystemExit(f"ctftp worker: {WORKER_CONFIG_ENV} is not set (started by hand?)")
    config = configFromJSON(raw)
    fds = [int(part) for part in args.fds.split(",") if part.strip()]
    mtftpFds = [int(part) for part in args.mtftp_fds.split(",") if part.strip()]
    _dieWithParent(args.parent)
    if args.log_fd is not None:
        _WorkerLogFile.inherited = args.log_fd
        os.set_inheritable(args.log_fd, False)
        # logs.configure opens ctftp.log with the LogFile class of its module.
        logs.LogFile = _WorkerLogFile  # type: ignore[misc]

    importReactorWithoutTLS()
    from twisted.internet import reactor

    logs.publisher.addObserver(_WorkerTag(args.worker))
    globalLogPublisher.addObserver(_WorkerTag(args.worker))
    minimum = LogLevel.warn if config.log_dir else LogLevel.debug
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(_StderrLines(), [LogLevelFilterPredicate(minimum)])],
        discardBuffer=True,
        redirectStandardIO=False,
    )
    service = serviceOnSockets(
        config,
        fds,
        reactor=reactor,
        origin=f"the supervisor, worker {args.worker}",
        metrics=False,
        mtftpFds=mtftpFds,
    )
    service.server.multicast.shareAmong(args.worker, config.workers)
    freezeStartupObjects()  # a worker's process is ctftp's own, as with twistd
    stats = WorkerStats()
    service.server.observers.append(stats)
    exitCode = [0]

    def start() -> None:
        try:
            service.startService()
        except Exception:
            _log.failure("worker {worker} could not start", worker=args.worker)
            exitCode[0] = 1
            reactor.stop()
            return
        _log.info("worker {worker} serving (pid {pid})", worker=args.worker, pid=os.getpid())

    def stop() -> Deferred[Any] | None:
        if not service.running:
            return None
        _log.info(
            "worker {worker} stopping (pid {pid}): {started} transfers, {ok} ok, {failed} failed",
            worker=args.worker,
            pid=os.getpid(),
            started=stats.started,
            ok=stats.ok,
            failed=stats.failed,
        )
        return service.stopService()

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    raise SystemExit(exitCode[0])


# -- the supervisor ----------------------------------------------------------------------


def bindReusePort(
    host: str, port: int, count: int, reusePort: bool = True, v6only: bool = False
) -> list[socket.socket]:
    """``count`` non-blocking UDP sockets on ``host:port`` with ``SO_REUSEPORT``.

    Port 0 is resolved by the first bind and the others join it. Sockets are
    bound by the supervisor as root (before twistd drops privileges), and
    Linux lets only a process of the same effective user join a
    ``SO_REUSEPORT`` group, so an unprivileged process cannot take a share of
    port 69. ``reusePort=False`` (one socket, shared) leaves the option off;
    ``v6only`` makes an IPv6 socket IPv6-only (``[::]:69`` beside
    ``0.0.0.0:69``, as ``ListenerService`` does). Raises
    ``CannotListenError`` (closing what was bound), as ``listenUDP`` would.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sockets.append(sock)
            if reusePort:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if v6only and family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.setblocking(False)
    except OSError as e:
        for sock in sockets:
            sock.close()
        raise CannotListenError(host, port, e) from e
    return sockets


def _describeExit(reason: Failure) -> str:
    value = reason.value
    if isinstance(value, ProcessDone):
        return "exit status 0"
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            try:
                name = signal.Signals(value.signal).name
            except ValueError:
                name = str(value.signal)
            return f"killed by signal {value.signal} ({name})"
        return f"exit status {value.exitCode}"
    return str(value)


class _Worker(ProcessProtocol):
    """One worker slot: its process (when running), output relay and restarts."""

    def __init__(self, supervisor: WorkerSupervisor, number: int, fds: list[int]) -> None:
        self.supervisor = supervisor
        self.number = number
        self.fds = fds
        self.pid: int | None = None
        self.startedAt = 0.0
        self.quickDeaths = 0
        self.restarts = 0
        self.restartCall: IDelayedCall | None = None
        self.relayLevel = LogLevel.info
        self._partial: dict[int, bytes] = {}

    @property
    def alive(self) -> bool:
        return self.pid is not None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buffered = self._partial.pop(childFD, b"") + data
        *lines, rest = buffered.split(b"\n")
        if len(rest) > 65536:  # a line that never ends: relay it in pieces
            lines.append(rest)
            rest = b""
        if rest:
            self._partial[childFD] = rest
        for line in lines:
            self.supervisor._relay(self, line.decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:
        for rest in self._partial.values():
            self.supervisor._relay(self, rest.decode("utf-8", "replace"))
        self._partial.clear()
        self.supervisor._ended(self, reason)


class WorkerSupervisor(Service):
    """Binds the listeners once and runs ``count`` ctftp worker processes on them.

    ``count`` defaults to ``config.workers``. ``sharedSockets`` hands one
    socket per listener to every worker instead of one ``SO_REUSEPORT``
    socket each (what ``systemd=true`` must do; otherwise only for
    measuring). ``python`` is the interpreter the workers run.
    """

    #: First restart delay; it doubles (up to ``maxRestartDelay``) while a
    #: worker keeps dying within ``healthyAfter`` seconds of its start.
    restartDelay = 0.5
    maxRestartDelay = 30.0
    healthyAfter = 10.0
    #: Bound on stopService's wait for SIGTERM, then SIGKILL and as long again.
    stopTimeout = 10.0

    def __init__(
        self,
        config: ServerConfig,
        reactor: Any = None,
        count: int | None = None,
        *,
        sharedSockets: bool = False,
        python: str = sys.executable,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.config = config
        self.reactor = reactor
        self.count = int(count if count is not None else getattr(config, "workers", 1))
        if self.count < 1:
            raise ValueError("expected at least one worker")
        self.sharedSockets = sharedSockets
        self.python = python
        self.workers: list[_Worker] = []
        self._sockets: list[socket.socket] = []
        self._mtftpSockets: list[socket.socket] = []  # worker 1's (PXE MTFTP)
        self._passedFds: list[int] = []
        self._logFd: int | None = None
        self._stopping = False
        self._stopped: Deferred[None] | None = None
        self.setName("workers")

    # -- sockets ----------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        self._bind()
        self._openLog()
        super().privilegedStartService()

    def _openLog(self) -> None:
        """Open ctftp.log while still privileged, for workers that may not
        (see :class:`_WorkerLogFile`); without it they open it themselves."""
        if self._logFd is not None or not self.config.log_dir:
            return
        try:
            os.makedirs(self.config.log_dir, exist_ok=True)
            self._logFd = os.open(
                os.path.join(self.config.log_dir, logs.LOG_FILE_NAME),
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                0o644,
            )
        except OSError:
            self._logFd = None

    def _bind(self) -> None:
        if self.workers:
            return
        perWorker: list[list[int]] = [[] for _ in range(self.count)]
        if getattr(self.config, "systemd", False):
            self._passedFds = listenFds()
            if not self._passedFds:
                raise SocketActivationError(
                    "systemd=true but no sockets were passed to this process: start ctftp"
                    " through its .socket unit, or set systemd=false to bind listeners"
                )
            for fds in perWorker:
                fds.extend(self._passedFds)
            _log.info(
                "{count} workers share the {n} sockets passed by systemd",
                count=self.count,
                n=len(self._passedFds),
            )
        else:
            try:
                listeners = self.config.listeners
                for host, port in listeners:
                    # [::]:P beside an IPv4 listener on P must not also take IPv4.
                    v6only = ":" in host and any(
                        ":" not in other and otherPort == port for other, otherPort in listeners
                    )
                    if self.sharedSockets:
                        group = bindReusePort(host, port, 1, False, v6only) * self.count
                        self._sockets.append(group[0])
                    else:
                        group = bindReusePort(host, port, self.count, True, v6only)
                        self._sockets.extend(group)
                    for fds, sock in zip(perWorker, group, strict=True):
                        fds.append(sock.fileno())
                    how = "one socket shared" if self.sharedSockets else "SO_REUSEPORT"
                    _log.info(
                        "Starting listener on {listener} for {count} workers ({how})",
                        listener=formatAddress(host, group[0].getsockname()[1]),
                        count=self.count,
                        how=how,
                    )
            except CannotListenError:
                self._closeSockets()
                raise
        if self.config.mtftp_file:
            try:
                for host in mtftpHosts(self.config.listeners):
                    self._mtftpSockets += bindReusePort(host, self.config.mtftp_port, 1, False)
                    _log.info(
                        "Starting MTFTP listener on {listener} for worker 1",
                        listener=formatAddress(host, self.config.mtftp_port),
                    )
            except CannotListenError:
                self._closeSockets()
                raise
        self.workers = [_Worker(self, n + 1, fds) for n, fds in enumerate(perWorker)]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound listener addresses, one per listener (for port 0 listeners)."""
        seen: list[tuple[str, int]] = []
        for sock in self._sockets:
            host, port = sock.getsockname()[:2]
            if (host, port) not in seen:
                seen.append((host, port))
        return seen

    def _closeSockets(self) -> None:
        for sock in self._sockets + self._mtftpSockets:
            sock.close()
        self._sockets, self._mtftpSockets = [], []
        for fd in self._passedFds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._passedFds = []
        if self._logFd is not None:
            os.close(self._logFd)
            self._logFd = None

    # -- processes ---------------------------------------------------------------------

    def startService(self) -> None:
        self._bind()
        self._openLog()
        super().startService()
        self._stopping = False
        for worker in self.workers:
            self._spawn(worker)

    def _environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key not in _PRIVATE_ENV}
        env[WORKER_CONFIG_ENV] = configToJSON(self.config)
        # The workers import ctftp from where this process did, even when that
        # is a source tree on sys.path rather than an installed package.
        here = os.path.dirname(os.path.dirname(os.path.abspath(ctftp.__file__)))
        path = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = here + (os.pathsep + path if path else "")
        return env

    def _spawn(self, worker: _Worker) -> None:
        worker.restartCall = None
        # The child's descriptors from 3 on: its listeners, worker 1's MTFTP
        # sockets, then the log file's.
        childFDs: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        mtftp = [sock.fileno() for sock in self._mtftpSockets] if worker.number == 1 else []
        numbers: list[str] = []
        for number, fd in enumerate(worker.fds + mtftp, start=SD_LISTEN_FDS_START):
            childFDs[number] = fd
            numbers.append(str(number))
        extraArgs: list[str] = []
        if mtftp:
            extraArgs = ["--mtftp-fds", ",".join(numbers[len(worker.fds) :])]
        if self._logFd is not None:
            logFd = SD_LISTEN_FDS_START + len(numbers)
            childFDs[logFd] = self._logFd
            extraArgs += ["--log-fd", str(logFd)]
        args = [
            self.python,
            "-c",  # not -m: ctftp's package imports this module, and runpy warns
            "import sys; from ctftp.workers import main; main(sys.argv[1:])",
            "--worker",
            str(worker.number),
            "--fds",
            ",".join(numbers[: len(worker.fds)]),
            "--parent",
            str(os.getpid()),
            *extraArgs,
        ]
        try:
            process = self.reactor.spawnProcess(
                worker, self.python, args, env=self._environment(), childFDs=childFDs
            )
        except OSError as e:
            _log.error("cannot start worker {number}: {error}", number=worker.number, error=str(e))
            self._scheduleRestart(worker, quick=True)
            return
        worker.pid = process.pid
        worker.startedAt = time.monotonic()
        _log.info("worker {number} started (pid {pid})", number=worker.number, pid=worker.pid)

    def _relay(self, worker: _Worker, line: str) -> None:
        """One line of a worker's log, at its own level: ``[LEVEL] message``
        becomes ``worker K: message``; a line without a level (a traceback's)
        keeps the level of the line before it."""
        line = line.rstrip("\r")
        if not line.strip():
            return
        match = _LEVEL_PREFIX.match(line)
        if match is not None:
            worker.relayLevel = logs.LEVELS[match.group(1).lower()]
            line = line[match.end() :]
        level = worker.relayLevel
        _relayLog.emit(level, "worker {number}: {line}", number=worker.number, line=line)

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        pid, worker.pid = worker.pid, None
        status = _describeExit(reason)
        if self._stopping:
            _log.info(
                "worker {number} (pid {pid}) ended: {status}",
                number=worker.number,
                pid=pid,
                status=status,
            )
        else:
            quick = time.monotonic() - worker.startedAt < self.healthyAfter
            delay = self._scheduleRestart(worker, quick)
            _log.error(
                "worker {number} (pid {pid}) died: {status}; restarting it in {delay:.1f} s",
                number=worker.number,
                pid=pid,
                status=status,
                delay=delay,
            )

    def _scheduleRestart(self, worker: _Worker, quick: bool) -> float:
        worker.quickDeaths = worker.quickDeaths + 1 if quick else 0
        delay = min(self.restartDelay * 2 ** max(worker.quickDeaths - 1, 0), self.maxRestartDelay)
        worker.restarts += 1
        worker.restartCall = self.reactor.callLater(delay, self._spawn, worker)
        return delay

    def reload(self) -> None:
        """SIGHUP: pass it on, so that every worker reloads (reopens its logs)."""
        live = [worker for worker in self.workers if worker.alive]
        for worker in live:
            self._signal(worker, "HUP")
        _log.info("SIGHUP: passed on to {count} workers", count=len(live))

    def _signal(self, worker: _Worker, name: str) -> None:
        transport = worker.transport
        if worker.alive and transport is not None:
            # OSError: it is exiting already, and processEnded follows.
            with contextlib.suppress(OSError):
                transport.signalProcess(name)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._stopped is not None:
            return self._stopped
        self._stopping = True
        for worker in self.workers:
            if worker.restartCall is not None and worker.restartCall.active():
                worker.restartCall.cancel()
            worker.restartCall = None
        pending = [worker for worker in self.workers if worker.alive]
        for worker in pending:
            self._signal(worker, "TERM")
        done: Deferred[None] = Deferred()
        self._stopped = done
        self._waitForWorkers(pending, done)
        return done

    def _waitForWorkers(self, pending: list[_Worker], done: Deferred[None]) -> None:
        deadline = time.monotonic() + self.stopTimeout
        killed = [False]

        def check() -> None:
            live = [worker for worker in pending if worker.alive]
            if not live:
                finish()
                return
            now = time.monotonic()
            if now >= deadline and not killed[0]:
                killed[0] = True
                for worker in live:
                    _log.warn(
                        "worker {number} (pid {pid}) ignored SIGTERM for {timeout} s: SIGKILL",
                        number=worker.number,
                        pid=worker.pid,
                        timeout=self.stopTimeout,
                    )
                    self._signal(worker, "KILL")
            elif now >= deadline + self.stopTimeout:
                _log.error(
                    "workers {numbers} did not end; giving up on them",
                    numbers=", ".join(str(worker.number) for worker in live),
                )
                finish()
                return
            self.reactor.callLater(0.05, check)

        def finish() -> None:
            self._closeSockets()
            self.workers = []
            self._stopped = None
            done.callback(None)

        check()


def makeSupervisor(config: ServerConfig, reactor: Any = None) -> IService:
    """The service that runs ``config.workers`` worker processes (Linux).

    Add it where the listener services would go; the rest of the tree
    (logging setup, SIGHUP) stays in the supervisor process.
    """
    return WorkerSupervisor(config, reactor)


if __name__ == "__main__":
    main()
