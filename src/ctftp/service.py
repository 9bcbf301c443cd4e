"""The service tree: what ``twistd ctftp`` runs and what an application embeds.

``makeService(config)`` returns a :class:`CtftpService` (a ``MultiService``)
with one :class:`ListenerService` child per listener. Listener sockets are
bound in ``privilegedStartService``, so ``twistd --uid/--gid`` binds port 69 as
root and then serves unprivileged. The central log is set up there too, so the
first lines ("ctftp starting", "Starting listener") land in it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort

from ctftp.config import ConfigError, ServerConfig, settingWhere, unusableFolder
from ctftp.events import ITransferObserver, LogEventObserver, SidecarObserver
from ctftp.logs import LOG_FILE_NAME, LogFile, LogSetup, configure, logger
from ctftp.metrics import Metrics
from ctftp.mtftp import MtftpFileError, MtftpFiles, mtftpHosts
from ctftp.relay import RelayService, RelaySource, relayFromConfig
from ctftp.reload import ReloadPlan, planReload
from ctftp.remap import PcreRules, RemapSyntaxError, RuleSet
from ctftp.server import ListenerProtocol, TFTPServer
from ctftp.sidecar import SidecarWriter
from ctftp.sinks import HTTPEventSink, UDPEventSink
from ctftp.sources import IReadSource, LocalFileSource
from ctftp.systemd import (
    SocketActivatedListeners,
    SocketActivationError,
    notifyReady,
    notifyStopping,
)
from ctftp.udp import MAX_DATAGRAM, listenerListener
from ctftp.workers import WorkerSupervisor
from ctftp.writes import DevNullSink, IWriteSink, LocalWriteSink

EventSink = UDPEventSink | HTTPEventSink

__all__ = ["makeService", "defaultSink", "CtftpService", "ListenerService", "EventSinkService"]

_log = logger("ctftp.service")


class StartupFailed(SystemExit, Exception):
    """ctftp cannot start for a reason the user can fix (a port in use):
    one line and exit status 1, no traceback.

    A ``SystemExit`` for that line; an ``Exception`` too, because twistd
    reports only an Exception from a daemon's start-up back to the command
    that started it: a plain SystemExit left that command waiting for ever.
    """


class ListenerService(Service):
    """One listening UDP port."""

    def __init__(self, reactor: Any, protocol: ListenerProtocol, v6only: bool = False) -> None:
        self.reactor = reactor
        self.protocol = protocol
        self.v6only = v6only
        self.port: IListeningPort | None = None
        self.setName(protocol.name)

    def privilegedStartService(self) -> None:
        self._bind()
        super().privilegedStartService()

    def startService(self) -> None:
        self._bind()
        super().startService()

    def _bind(self) -> None:
        if self.port is not None:
            return
        _log.info(
            "Starting {kind} on {listener}",
            kind="MTFTP listener" if self.protocol.mtftp else "listener",
            listener=self.protocol.name,
        )
        self.port = listenerListener(self.reactor, v6only=self.v6only)(
            self.protocol.port,
            self.protocol,
            interface=self.protocol.host,
            maxPacketSize=MAX_DATAGRAM,
        )

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None


class EventSinkService(Service):
    """Starts and stops one event sink with the server; stopping gives its
    queue a short, bounded chance to drain."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink

    def startService(self) -> None:
        super().startService()
        self.sink.start()

    def stopService(self) -> Any:
        super().stopService()
        return self.sink.stop()


class CtftpService(MultiService):
    """The TFTP server: its listeners, logging and reload on SIGHUP."""

    def __init__(
        self,
        config: ServerConfig,
        server: TFTPServer,
        reactor: Any,
        installSignalHandlers: bool,
        metrics: Metrics | None = None,
        eventSinks: Sequence[EventSink] = (),
        reloadConfig: Callable[[], ServerConfig] | None = None,
    ) -> None:
        super().__init__()
        self._reloadConfig = reloadConfig
        self.config = config
        self.server = server
        self.reactor = reactor
        self.metrics = metrics
        self.eventSinks = list(eventSinks)
        self._installSignalHandlers = installSignalHandlers
        self._logSetup: LogSetup | None = None
        self._previousHUP: Any = None
        for sink in self.eventSinks:
            EventSinkService(sink).setServiceParent(self)
        self.supervisor: WorkerSupervisor | None = None
        if config.workers > 1:
            self.supervisor = WorkerSupervisor(config, reactor)
            self.supervisor.setServiceParent(self)
        elif config.systemd:
            SocketActivatedListeners(reactor, server).setServiceParent(self)
        else:
            for host, port in config.listeners:
                # [::]:P beside an IPv4 listener on P must not also take IPv4.
                v6only = ":" in host and any(
                    ":" not in other and otherPort == port for other, otherPort in config.listeners
                )
                listener = ListenerProtocol(server, host, port)
                ListenerService(reactor, listener, v6only).setServiceParent(self)
        if config.mtftp_file and config.workers == 1:
            for host in mtftpHosts(config.listeners):
                listener = ListenerProtocol(server, host, config.mtftp_port, mtftp=True)
                ListenerService(reactor, listener).setServiceParent(self)
        if metrics is not None and config.metrics_listen is not None:
            from ctftp.metricspage import metricsService  # twisted.web: only when asked for

            host, port = config.metrics_listen
            metricsService(metrics, host, port, reactor).setServiceParent(self)

    def _setUp(self) -> None:
        if self._logSetup is not None:
            return
        self._logSetup = configure(
            self.config.log_dir, self.config.log_level, self.config.log_format
        )
        _log.info(
            "ctftp starting with config: {source}",
            source=self.config.source or "(command line)",
        )
        if self._installSignalHandlers:
            self._previousHUP = signal.signal(
                signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload)
            )

    def privilegedStartService(self) -> None:
        self._setUp()
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            if not self._installSignalHandlers:
                raise
            # Run by twistd: a port in use is a user's problem, not a bug.
            # strerror alone: twistd passes a daemon's error back cut to 100 bytes.
            reason = getattr(e.socketError, "strerror", None) or e.socketError
            message = f"ctftp: cannot listen on {e.interface or '*'}:{e.port}: {reason}"
            _log.error("{message}", message=message)
            raise StartupFailed(message) from None
        except SocketActivationError as e:
            if not self._installSignalHandlers:
                raise
            _log.error("ctftp: {error}", error=str(e))
            raise StartupFailed(f"ctftp: {e}") from None

    def startService(self) -> None:
        self._setUp()
        super().startService()
        if self._installSignalHandlers:  # run by twistd: tell systemd (Type=notify)
            notifyReady()

    def stopService(self) -> Any:
        if self._installSignalHandlers:
            notifyStopping()
        self.server.stopTransfers()
        d = super().stopService()
        if self._installSignalHandlers and self._previousHUP is not None:
            signal.signal(signal.SIGHUP, self._previousHUP)
            self._previousHUP = None

        def closeLogs(result: Any) -> Any:
            _log.info("ctftp stopped")
            if self._logSetup is not None:
                self._logSetup.close()
                self._logSetup = None
            return result

        return d.addBoth(closeLogs)

    def reload(self) -> None:
        """What SIGHUP does.

        Reopen the log files (logrotate moved them); read the config file
        again (when the service knows how: ``reloadConfig``) and apply what
        may change live (:mod:`ctftp.reload`), naming in the log what changed
        and what needs a restart; read the remap rules again (a file that no
        longer parses is logged and the old rules stay); look event
        receivers' names up again. With workers, each worker does its own
        part on the SIGHUP passed on to it.
        """
        if self._logSetup is not None:
            self._logSetup.reopen()
        _log.info("SIGHUP: log files reopened")
        if self.supervisor is not None:
            self.supervisor.reload()
        plan = self._rereadConfig()
        if plan is not None and plan.live:
            self._apply(plan)
        for sink in self.eventSinks:
            sink.reload()
        try:
            self.server.rules, self.server.pcre = loadRules(self.config)
        except ConfigError as e:
            _log.error("SIGHUP: remap rules kept unchanged: {error}", error=str(e))
        else:
            if self.config.remap_file or self.config.pcre_file:
                _log.info("SIGHUP: remap rules reloaded")
        self._reloadMtftp()

    def _reloadMtftp(self) -> None:
        """Read ``mtftp_file`` again; a file being sent stays busy until its
        transfer ends, and a file that no longer parses keeps the old list."""
        old = self.server.mtftp
        if old is None:
            return
        try:
            new = loadMtftp(self.config)
        except ConfigError as e:
            _log.error("SIGHUP: MTFTP files kept unchanged: {error}", error=str(e))
            return
        assert new is not None
        new.takeRunning(old)
        self.server.mtftp = new
        _log.info("SIGHUP: MTFTP files reloaded ({count})", count=len(new))

    def _rereadConfig(self) -> ReloadPlan | None:
        if self._reloadConfig is None:
            return None
        try:
            reread = self._reloadConfig()
        except ConfigError as e:
            _log.error("SIGHUP: config not reloaded, nothing changed: {error}", error=str(e))
            return None
        plan = planReload(self.config, reread)
        if plan.restart:
            _log.warn(
                "SIGHUP: changed, but only a restart applies: {keys}",
                keys=", ".join(plan.restart),
            )
        if not plan.live and not plan.restart:
            _log.info("SIGHUP: config unchanged")
        return plan

    def _apply(self, plan: ReloadPlan) -> None:
        config = plan.config
        if plan.events:
            try:
                sinks = _eventSinks(config, self.reactor)
            except ConfigError as e:
                _log.error("SIGHUP: event receivers kept unchanged: {error}", error=str(e))
                config = dataclasses.replace(
                    config,
                    event_udp=self.config.event_udp,
                    event_http_url=self.config.event_http_url,
                    event_ca_bundle=self.config.event_ca_bundle,
                )
            else:
                self._replaceEventSinks(sinks)
        if plan.logs and self._logSetup is not None:
            self._logSetup.close()
            self._logSetup = configure(config.log_dir, config.log_level, config.log_format)
        self.config = config
        self.server.reconfigure(config)
        _log.info("SIGHUP: applied {keys}", keys=", ".join(plan.live))

    def _replaceEventSinks(self, sinks: list[EventSink]) -> None:
        """New receivers start at once; the old ones drain in the background."""
        for child in [c for c in self if isinstance(c, EventSinkService)]:
            self.server.observers.remove(child.sink)
            self.removeService(child)
        for sink in sinks:
            EventSinkService(sink).setServiceParent(self)
            self.server.observers.append(sink)
            if self.metrics is not None:
                self.metrics.watchSink(sink)
        self.eventSinks = sinks


def _checkLogDir(config: ServerConfig) -> None:
    """Create ``log_dir`` and its ``ctftp.log`` now: a folder that cannot be
    used is a config error (one line), found before the server starts."""
    if not config.log_dir:
        return
    try:
        os.makedirs(config.log_dir, exist_ok=True)
        LogFile(os.path.join(config.log_dir, LOG_FILE_NAME)).close()
    except OSError as e:
        raise unusableFolder(config, "log_dir", config.log_dir, e) from None


def _eventSinks(config: ServerConfig, reactor: Any) -> list[EventSink]:
    """The event receivers the config names; a bad CA bundle or URL is a
    config error (one line), found before the server starts."""
    sinks: list[EventSink] = []
    if config.event_udp is not None:
        sinks.append(UDPEventSink(reactor, *config.event_udp))
    if config.event_http_url:
        try:
            sinks.append(
                HTTPEventSink(
                    reactor, config.event_http_url, caBundle=config.event_ca_bundle or None
                )
            )
        except (OSError, ValueError) as e:
            key = "event_ca_bundle" if config.event_ca_bundle else "event_http_url"
            raise ConfigError(f"{settingWhere(config, key)}: {e}") from None
    return sinks


def loadRules(config: ServerConfig) -> tuple[RuleSet | None, PcreRules | None]:
    """Parse ``remap_file`` and ``pcre_file``; a bad file is a ConfigError
    naming file and line."""
    try:
        rules = RuleSet.fromFile(config.remap_file) if config.remap_file else None
        pcre = PcreRules.fromFile(config.pcre_file) if config.pcre_file else None
    except RemapSyntaxError as e:
        raise ConfigError(str(e)) from None
    except OSError as e:
        raise ConfigError(f"{e.filename}: cannot read rule file: {e.strerror}") from None
    return rules, pcre


def loadMtftp(config: ServerConfig) -> MtftpFiles | None:
    """Parse ``mtftp_file``; a bad file is a ConfigError naming file and
    line, and so is a group that RFC 2090 sessions may take too."""
    if not config.mtftp_file:
        return None
    try:
        files = MtftpFiles.fromFile(config.mtftp_file)
    except MtftpFileError as e:
        raise ConfigError(str(e)) from None
    except OSError as e:
        raise ConfigError(f"{e.filename}: cannot read mtftp file: {e.strerror}") from None
    if config.multicast:
        low, high = config.multicast_port
        for entry in files:
            address, port = entry.group
            if address in config.multicast_addr and low <= port <= high:
                raise ConfigError(
                    f"{files.source}:{entry.line}: group {address}:{port} is also one of"
                    " multicast_addr x multicast_port; give MTFTP a group of its own"
                )
    return files


def defaultSink(config: ServerConfig) -> IWriteSink | None:
    """Where uploads go: nowhere (``write_devnull``), the first root
    (``allow_write``), or refused (``None``)."""
    if config.write_devnull:
        return DevNullSink()
    if not config.allow_write:
        return None
    return LocalWriteSink(
        config.root_dir[0],
        allowCreate=config.allow_create,
        umask=config.umask,
        requireWorldWritable=config.require_world_readable,
        protectSidecars=config.file_log,
    )


def makeService(
    config: ServerConfig,
    *,
    reactor: Any = None,
    source: IReadSource | None = None,
    sink: IWriteSink | None = None,
    observers: Iterable[ITransferObserver] | None = None,
    installSignalHandlers: bool = False,
    reloadConfig: Callable[[], ServerConfig] | None = None,
) -> CtftpService:
    """Build ctftp's service tree for ``config``.

    ``source`` replaces the local files (an application serving generated
    content) and ``sink`` the local upload folder (an application storing
    uploads elsewhere). ``observers`` replaces the default transfer observers
    (the ``EVENT`` log lines, and sidecar lines when ``file_log`` is on); the
    metrics and the event receivers of the config are added to them either
    way. ``installSignalHandlers`` makes SIGHUP call ``reload()``; twistd's
    plugin sets it, an embedding application calls ``reload()`` itself.
    ``reloadConfig`` returns the config as it reads now (the file again, with
    the same command-line overrides); ``reload()`` applies what may change
    live.

    Raises :class:`ctftp.config.ConfigError` for a setting that only shows
    itself bad when used (an unreadable CA bundle).
    """
    if config.workers > 1 and config.metrics_listen is not None:
        # Each worker counts only its own transfers and they cannot share
        # one TCP port: refused rather than served wrong or dropped quietly.
        raise ConfigError(
            f"{settingWhere(config, 'metrics_listen')}: not available with workers > 1 in this"
            " version; remove it or set workers=1"
        )
    _checkLogDir(config)
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    relay = None
    if source is None:
        source = LocalFileSource(
            config.root_dir,
            requireWorldReadable=config.require_world_readable,
            protectSidecars=config.file_log,
        )
        if config.http_relay:
            relay = relayFromConfig(config, reactor)
            source = RelaySource(source, relay, config.fallback_url)
    if sink is None:
        sink = defaultSink(config)
    if observers is None:
        observers = [LogEventObserver()]
        if config.file_log:
            observers.append(SidecarObserver(SidecarWriter(reactor)))
    metrics = Metrics()
    eventSinks = _eventSinks(config, reactor)
    server = TFTPServer(
        config,
        reactor=reactor,
        source=source,
        sink=sink,
        observers=[*observers, metrics, *eventSinks],
    )
    server.rules, server.pcre = loadRules(config)
    server.mtftp = loadMtftp(config)
    metrics.watchServer(server)
    for eventSink in eventSinks:
        metrics.watchSink(eventSink)
    service = CtftpService(
        config, server, reactor, installSignalHandlers, metrics, eventSinks, reloadConfig
    )
    if relay is not None:
        RelayService(relay).setServiceParent(service)
    return service
