"""systemd integration: socket activation (``systemd=true``) and ``Type=notify``.

Socket activation lets systemd bind port 69 (as root, before ctftp starts)
and hand the bound sockets to an unprivileged ctftp: ctftp needs no
capability at all, starts on the first request, and a restart loses no
request (the socket, and the datagrams queued on it, stay with systemd).
The protocol is sd_listen_fds(3): ``LISTEN_PID`` names the process the
sockets are for, ``LISTEN_FDS`` counts them from file descriptor 3.
:func:`listenFds` implements it without libsystemd, and
:func:`adoptDatagramPorts` turns the descriptors into listening ports.

Adopted sockets become :class:`ctftp.udp.ListenerPort` s, not the plain
``udp.Port`` that ``reactor.adoptDatagramPort`` would build: on a wildcard
socket (systemd's ``ListenDatagram=69`` binds ``[::]:69``) the listener must
learn each datagram's destination address (``IP_PKTINFO`` /
``IPV6_RECVPKTINFO``) so that the transfer answers from the address the
client asked, exactly as for the ports ctftp binds itself.

:func:`notifyReady` / :func:`notifyStopping` speak sd_notify(3) for
``Type=notify`` units: one datagram to ``NOTIFY_SOCKET``, a no-op without it.

The worker processes of ``workers=N`` (:mod:`ctftp.workers`) receive their
sockets the same way, so :class:`SocketActivatedListeners` serves both.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.base import ReactorBase
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol

# Only modules that do not import twisted.internet.endpoints (see _inherited).
from ctftp.logs import logger
from ctftp.server import ListenerProtocol, TFTPServer
from ctftp.udp import MAX_DATAGRAM, ListenerPort

__all__ = [
    "SD_LISTEN_FDS_START",
    "SocketActivationError",
    "SocketActivatedListeners",
    "adoptDatagramPorts",
    "listenFds",
    "notify",
    "notifyReady",
    "notifyReloading",
    "notifyStopping",
    "socketAddress",
]

#: The first passed descriptor (sd_listen_fds(3)): 0, 1, 2 are stdio.
SD_LISTEN_FDS_START = 3

_ENV_NAMES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")

_log = logger("ctftp.systemd")


class SocketActivationError(Exception):
    """The passed sockets are missing or unusable; the message is one line
    for the operator (which descriptor, what is wrong, what to do)."""


def _snapshot() -> dict[str, str]:
    return {name: os.environ[name] for name in _ENV_NAMES if name in os.environ}


#: The variables as they were when this module was first imported. Twisted's
#: ``twisted.internet.endpoints`` parses and removes them when it is imported
#: (ctftp's HTTP code imports it), and without ``LISTEN_FDNAMES`` (systemd
#: before 227, ``systemd-socket-activate`` without ``--fdname``) it drops the
#: descriptors too; so ``ctftp/__init__.py`` imports this module first, and
#: this module imports nothing that imports Twisted's endpoints.
_inherited: dict[str, str] = _snapshot()


def listenFds(
    environ: MutableMapping[str, str] | None = None,
    pid: int | None = None,
    unset: bool = True,
) -> list[int]:
    """The descriptors systemd passed to this process, as sd_listen_fds(3).

    ``[]`` unless ``LISTEN_PID`` is this process's id (``pid``, default
    ``os.getpid()``) and ``LISTEN_FDS`` a positive count: the variables are
    inherited by children, and a child must not take its parent's sockets.
    With ``unset`` (the default) the variables are removed from ``environ``
    (default ``os.environ``) whatever the outcome, so that processes ctftp
    starts do not see them; each returned descriptor gets ``FD_CLOEXEC``
    for the same reason.

    Without ``environ``, when the process environment no longer has the
    variables, the answer comes from what they were when ctftp was imported,
    or else from Twisted's own parse of them (see ``_inherited``).
    """
    global _inherited
    if environ is None and "LISTEN_PID" not in os.environ and "LISTEN_FDS" not in os.environ:
        if "LISTEN_PID" in _inherited:
            saved = dict(_inherited)
            if unset:
                _inherited = {}
            return listenFds(saved, pid, unset=False)
        return _checked(_fromTwisted())
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    rawPid, rawCount = env.get("LISTEN_PID"), env.get("LISTEN_FDS")
    if unset:
        for name in _ENV_NAMES:
            env.pop(name, None)
        if environ is None:
            _inherited = {}
    if rawPid is None or rawCount is None:
        return []
    try:
        listenPid, count = int(rawPid), int(rawCount)
    except ValueError:
        return []
    if listenPid != (os.getpid() if pid is None else pid) or count <= 0:
        return []
    return _checked(list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)))


def _fromTwisted() -> list[int]:
    """The descriptors Twisted's endpoints module took from the environment,
    if it was imported (it is not imported here: that would consume them)."""
    endpoints = sys.modules.get("twisted.internet.endpoints")
    daemon = getattr(getattr(endpoints, "_SystemdParser", None), "_sddaemon", None)
    inherited = getattr(daemon, "inheritedDescriptors", None)
    if inherited is None:
        return []
    return [int(fd) for fd in inherited()]


def _checked(fds: list[int]) -> list[int]:
    """Set ``FD_CLOEXEC`` on each descriptor; a closed one is an error."""
    for fd in fds:
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        except OSError as e:
            raise SocketActivationError(
                f"LISTEN_FDS={len(fds)} but file descriptor {fd} is not open ({e.strerror})"
            ) from None
    return fds


def socketAddress(fd: int) -> tuple[int, str, int]:
    """``(family, host, port)`` of the UDP socket ``fd``; raise
    :class:`SocketActivationError` when it is not a bound UDP socket."""
    try:
        probe = socket.socket(fileno=fd)
    except OSError as e:
        raise SocketActivationError(
            f"file descriptor {fd} is not a socket ({e.strerror}); the socket unit must"
            " use ListenDatagram="
        ) from None
    try:
        family, kind = probe.family, probe.type
        if family not in (socket.AF_INET, socket.AF_INET6) or kind != socket.SOCK_DGRAM:
            raise SocketActivationError(
                f"file descriptor {fd} is not a UDP socket ({family.name}, {kind.name});"
                " the socket unit must use ListenDatagram="
            )
        sockname = probe.getsockname()
    finally:
        probe.detach()  # the descriptor is not ours to close here
    return family, sockname[0], sockname[1]


def adoptDatagramPorts(
    reactor: Any,
    fds: Iterable[int],
    makeProtocol: Callable[[str, int], DatagramProtocol],
    maxPacketSize: int = MAX_DATAGRAM,
    closeOriginals: bool = True,
) -> list[IListeningPort]:
    """Listen on already-bound UDP sockets.

    For each descriptor, ``makeProtocol(host, port)`` gets the address the
    socket is bound to (so that replies can leave from it) and returns the
    protocol. On a real reactor the port is a :class:`ctftp.udp.ListenerPort`
    (large receive buffer; on a wildcard address each datagram's destination
    is passed as ``datagramReceived``'s third argument); any other reactor
    gets ``reactor.adoptDatagramPort``. The port works on a duplicate of the
    descriptor; with ``closeOriginals`` the original is closed once every
    socket is adopted, so that no stray copy keeps the socket alive. On
    error, the ports already adopted are closed and the error raised.
    """
    ports: list[IListeningPort] = []
    originals: list[int] = []
    try:
        for fd in fds:
            family, host, port = socketAddress(fd)
            os.set_blocking(fd, False)  # required by Twisted; shared with every copy
            protocol = makeProtocol(host, port)
            if isinstance(reactor, ReactorBase):
                adopted = ListenerPort._fromListeningDescriptor(
                    reactor, fd, family, protocol, maxPacketSize
                )
                adopted.startListening()
            else:
                adopted = reactor.adoptDatagramPort(
                    fd, family, protocol, maxPacketSize=maxPacketSize
                )
            ports.append(adopted)
            originals.append(fd)
    except BaseException:
        for adoptedPort in ports:
            adoptedPort.stopListening()
        raise
    if closeOriginals:
        for fd in originals:
            os.close(fd)
    return ports


class SocketActivatedListeners(Service):
    """The listeners of ``systemd=true``: one per passed socket, instead of
    binding ``listeners``.

    ``fds`` defaults to :func:`listenFds` (read once, at start). Every
    datagram goes to ``server``, as from the ports ``ListenerService`` binds.
    ``origin`` only says in the "Starting listener" line who bound the
    socket; ``mtftp`` makes them PXE MTFTP listeners (``ctftp.mtftp``).
    """

    def __init__(
        self,
        reactor: Any,
        server: TFTPServer,
        fds: Sequence[int] | None = None,
        origin: str = "systemd",
        mtftp: bool = False,
    ) -> None:
        self.reactor = reactor
        self.mtftp = mtftp
        self.server = server
        self.fds = None if fds is None else list(fds)
        self.origin = origin
        self.ports: list[IListeningPort] = []
        self.protocols: list[ListenerProtocol] = []
        self.setName("socket-activated MTFTP listeners" if mtftp else "socket-activated listeners")

    def privilegedStartService(self) -> None:
        self._adopt()
        super().privilegedStartService()

    def startService(self) -> None:
        self._adopt()
        super().startService()

    def _makeProtocol(self, host: str, port: int) -> ListenerProtocol:
        protocol = ListenerProtocol(self.server, host, port, self.mtftp)
        _log.info(
            "Starting {kind} on {listener} (socket passed by {origin})",
            kind="MTFTP listener" if self.mtftp else "listener",
            listener=protocol.name,
            origin=self.origin,
        )
        self.protocols.append(protocol)
        return protocol

    def _adopt(self) -> None:
        if self.ports:
            return
        if self.fds is None:
            self.fds = listenFds()
        if not self.fds:
            raise SocketActivationError(
                "systemd=true but no sockets were passed to this process (LISTEN_FDS and"
                " LISTEN_PID unset or for another process): start ctftp through its .socket"
                " unit, or set systemd=false to bind listeners"
            )
        self.ports = adoptDatagramPorts(self.reactor, self.fds, self._makeProtocol)

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        ports, self.ports = self.ports, []
        self.fds = []  # closed: a restart of this service cannot adopt them again
        if not ports:
            return None
        return gatherResults([maybeDeferred(port.stopListening) for port in ports])


# -- sd_notify -------------------------------------------------------------------


def notify(state: str, environ: MutableMapping[str, str] | None = None) -> bool:
    """Send ``state`` (``KEY=VALUE`` lines) to systemd's ``NOTIFY_SOCKET``.

    Returns whether it was sent. Without the variable (not run by systemd,
    or ``Type=simple``) nothing happens; an abstract socket name is written
    ``@name``. A failure is logged, never raised: notification is a courtesy
    to the service manager and must not stop the server.
    """
    env = os.environ if environ is None else environ
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):
        address = "\0" + path[1:]
    elif path.startswith("/"):
        address = path
    else:
        _log.warn("NOTIFY_SOCKET={path}: unsupported address, not notifying", path=path)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as e:
        _log.warn("cannot notify systemd at {path}: {error}", path=path, error=str(e))
        return False
    return True


def notifyReady(status: str = "", environ: MutableMapping[str, str] | None = None) -> bool:
    """``READY=1``: every listener is up (``Type=notify`` start completes)."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""), environ)


def notifyReloading(environ: MutableMapping[str, str] | None = None) -> bool:
    """``RELOADING=1`` with the monotonic time ``Type=notify-reload`` asks for;
    send :func:`notifyReady` when the reload is done."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}", environ)


def notifyStopping(environ: MutableMapping[str, str] | None = None) -> bool:
    """``STOPPING=1``: the service is shutting down on purpose."""
    return notify("STOPPING=1", environ)
