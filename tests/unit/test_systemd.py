"""Tests for ctftp.systemd: sd_listen_fds parsing, socket probing, adoption, sd_notify."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.protocol import DatagramProtocol

from ctftp import logs, systemd
from ctftp.config import ServerConfig
from ctftp.server import ListenerProtocol, TFTPServer
from ctftp.sources import LocalFileSource
from ctftp.systemd import (
    SocketActivatedListeners,
    SocketActivationError,
    adoptDatagramPorts,
    listenFds,
    notify,
    notifyReady,
    notifyReloading,
    notifyStopping,
    socketAddress,
)
from ctftp.testing import MemoryUDPReactor

# -- listenFds --------------------------------------------------------------------


@pytest.fixture
def fd3() -> Iterator[int]:
    """Descriptors 3 and 4 open (dups of a UDP socket), restored afterwards."""
    saved = {}
    for fd in (3, 4):
        with contextlib.suppress(OSError):
            saved[fd] = os.dup(fd)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    for fd in (3, 4):
        os.dup2(sock.fileno(), fd, inheritable=True)
    sock.close()
    yield 3
    for fd in (3, 4):
        if fd in saved:
            os.dup2(saved[fd], fd, inheritable=False)
            os.close(saved[fd])
        else:
            with contextlib.suppress(OSError):
                os.close(fd)


def test_listen_fds_for_this_process(fd3: int) -> None:
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b", "X": "1"}
    assert listenFds(env) == [3, 4]
    assert env == {"X": "1"}  # children do not inherit them
    for fd in (3, 4):
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC


def test_listen_fds_explicit_pid(fd3: int) -> None:
    assert listenFds({"LISTEN_PID": "4242", "LISTEN_FDS": "1"}, pid=4242) == [3]


def test_listen_fds_pid_mismatch_is_empty_and_still_unset() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert listenFds(env) == []
    assert env == {}


def test_listen_fds_keep_environment_when_asked(fd3: int) -> None:
    env = {"LISTEN_PID": "7", "LISTEN_FDS": "1"}
    assert listenFds(env, pid=7, unset=False) == [3]
    assert env == {"LISTEN_PID": "7", "LISTEN_FDS": "1"}


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"LISTEN_FDS": "1"},
        {"LISTEN_PID": "PID"},
        {"LISTEN_PID": "PID", "LISTEN_FDS": "0"},
        {"LISTEN_PID": "PID", "LISTEN_FDS": "-1"},
        {"LISTEN_PID": "PID", "LISTEN_FDS": "one"},
        {"LISTEN_PID": "nope", "LISTEN_FDS": "1"},
    ],
)
def test_listen_fds_nothing_passed(env: dict[str, str]) -> None:
    env = {key: value.replace("PID", str(os.getpid())) for key, value in env.items()}
    assert listenFds(env) == []


def test_listen_fds_default_environment(monkeypatch: pytest.MonkeyPatch, fd3: int) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert listenFds() == [3]
    assert "LISTEN_PID" not in os.environ and "LISTEN_FDS" not in os.environ


def test_listen_fds_closed_descriptor() -> None:
    # A count far past anything open: the first closed descriptor is named.
    closed = next(fd for fd in range(900, 1000) if not _isOpen(fd))
    env = {"LISTEN_PID": "1", "LISTEN_FDS": str(closed - 2)}
    with pytest.raises(SocketActivationError, match=f"descriptor {closed}|descriptor \\d+"):
        listenFds(env, pid=1)


def _isOpen(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


# -- socketAddress ------------------------------------------------------------------


def test_socket_address_ipv4_and_ipv6() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        assert socketAddress(s.fileno()) == (socket.AF_INET, "127.0.0.1", s.getsockname()[1])
        assert s.fileno() >= 0  # not closed by the probe
        s.getsockname()
    try:
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s6.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with s6:
        assert socketAddress(s6.fileno()) == (socket.AF_INET6, "::1", s6.getsockname()[1])


def test_socket_address_refuses_tcp_and_files(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        with pytest.raises(SocketActivationError, match="not a UDP socket"):
            socketAddress(s.fileno())
        s.getsockname()  # still open
    with (
        (tmp_path / "f").open("w") as f,
        pytest.raises(SocketActivationError, match="not a socket"),
    ):
        socketAddress(f.fileno())


# -- adoptDatagramPorts on a reactor without ReactorBase ----------------------------------


class AdoptingReactor(MemoryUDPReactor):
    """Records adoptDatagramPort calls (the IReactorSocket path)."""

    def __init__(self) -> None:
        super().__init__()
        self.adopted: list[tuple[int, int, Any, int]] = []

    def adoptDatagramPort(
        self, fd: int, family: int, protocol: Any, maxPacketSize: int = 8192
    ) -> Any:
        self.adopted.append((fd, family, protocol, maxPacketSize))
        return FakePort()


class FakePort:
    stopped = False

    def stopListening(self) -> None:
        self.stopped = True


def test_adopt_calls_factory_with_bound_address() -> None:
    reactor = AdoptingReactor()
    made: list[tuple[str, int]] = []

    def factory(host: str, port: int) -> DatagramProtocol:
        made.append((host, port))
        return DatagramProtocol()

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    bound = s.getsockname()[1]
    fd = os.dup(s.fileno())
    s.close()
    ports = adoptDatagramPorts(reactor, [fd], factory)
    assert len(ports) == 1
    assert made == [("127.0.0.1", bound)]
    assert reactor.adopted[0][:2] == (fd, socket.AF_INET)
    assert reactor.adopted[0][3] == 65536
    assert not _isOpen(fd)  # the original was closed after adoption


def test_adopt_failure_closes_what_was_adopted() -> None:
    reactor = AdoptingReactor()
    good = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    good.bind(("127.0.0.1", 0))
    bad = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with good, bad:
        with pytest.raises(SocketActivationError):
            adoptDatagramPorts(
                reactor, [good.fileno(), bad.fileno()], lambda h, p: DatagramProtocol()
            )
        assert len(reactor.adopted) == 1
        good.getsockname()  # originals stay open on failure


def test_service_without_passed_sockets_says_what_to_do(tmp_path: Path) -> None:
    config = ServerConfig(root_dir=str(tmp_path))
    server = TFTPServer(config, reactor=AdoptingReactor(), source=LocalFileSource(config.root_dir))
    service = SocketActivatedListeners(AdoptingReactor(), server, fds=[])
    with pytest.raises(SocketActivationError, match="set systemd=false"):
        service.privilegedStartService()


def test_service_adopts_once_and_stops(tmp_path: Path) -> None:
    config = ServerConfig(root_dir=str(tmp_path))
    reactor = AdoptingReactor()
    server = TFTPServer(config, reactor=reactor, source=LocalFileSource(config.root_dir))
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        s.bind(("::", 0))
    except OSError:
        pytest.skip("no IPv6")
    port = s.getsockname()[1]
    service = SocketActivatedListeners(reactor, server, fds=[os.dup(s.fileno())])
    s.close()
    service.privilegedStartService()
    service.startService()
    assert len(reactor.adopted) == 1
    protocol = reactor.adopted[0][2]
    assert isinstance(protocol, ListenerProtocol)
    assert (protocol.host, protocol.port, protocol.name) == ("::", port, f"[::]:{port}")
    assert service.protocols == [protocol]
    ports = list(service.ports)
    service.stopService()
    assert all(p.stopped for p in ports)  # type: ignore[attr-defined]


# -- sd_notify ---------------------------------------------------------------------------


@pytest.fixture
def notifySocket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_notify_path_socket(notifySocket: socket.socket) -> None:
    env = {"NOTIFY_SOCKET": notifySocket.getsockname()}
    assert notifyReady("serving 2 listeners", env)
    assert notifySocket.recv(4096) == b"READY=1\nSTATUS=serving 2 listeners"
    assert notifyStopping(env)
    assert notifySocket.recv(4096) == b"STOPPING=1"
    assert notifyReloading(env)
    lines = notifySocket.recv(4096).decode().split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=") and int(lines[1].split("=")[1]) > 0
    assert notifyReady(environ=env)
    assert notifySocket.recv(4096) == b"READY=1"
    assert env == {"NOTIFY_SOCKET": notifySocket.getsockname()}  # kept for later notifications


def test_notify_abstract_socket() -> None:
    name = f"ctftp-test-{os.getpid()}-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"


def test_notify_default_environment(
    notifySocket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notifySocket.getsockname())
    assert notifyStopping()
    assert notifySocket.recv(4096) == b"STOPPING=1"


def test_notify_without_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notifyReady()
    assert not notify("READY=1", {"NOTIFY_SOCKET": ""})


def test_notify_failures_are_logged_not_raised(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    logs.publisher.addObserver(seen.append)
    try:
        assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "missing")})
        assert not notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"})
    finally:
        logs.publisher.removeObserver(seen.append)
    assert [e["log_format"].split(":")[0] for e in seen] == [
        "cannot notify systemd at {path}",
        "NOTIFY_SOCKET={path}",
    ]


# -- when Twisted's endpoints module took the variables first ------------------------------


def test_listen_fds_from_the_import_time_snapshot(
    monkeypatch: pytest.MonkeyPatch, fd3: int
) -> None:
    monkeypatch.delenv("LISTEN_PID", raising=False)
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.setattr(systemd, "_inherited", {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2"})
    assert listenFds() == [3, 4]
    assert listenFds() == []  # consumed, like the environment
    monkeypatch.setattr(systemd, "_inherited", {"LISTEN_PID": "1", "LISTEN_FDS": "2"})
    assert listenFds() == []  # for another process


def test_listen_fds_from_twisted(monkeypatch: pytest.MonkeyPatch, fd3: int) -> None:
    from twisted.internet.endpoints import _SystemdParser
    from twisted.python.systemd import ListenFDs

    monkeypatch.delenv("LISTEN_PID", raising=False)
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.setattr(systemd, "_inherited", {})
    monkeypatch.setattr(_SystemdParser, "_sddaemon", ListenFDs([3], ("tftp",)), raising=False)
    assert listenFds() == [3]
    assert fcntl.fcntl(3, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    monkeypatch.setattr(_SystemdParser, "_sddaemon", ListenFDs([], ()), raising=False)
    assert listenFds() == []


def test_module_imports_leave_the_variables_alone() -> None:
    """ctftp.systemd (and what it imports) must not import Twisted's endpoints
    module, which consumes LISTEN_FDS, before the snapshot is taken."""
    src = Path(systemd.__file__).resolve().parent
    code = (
        "import os, sys, types\n"
        "pkg = types.ModuleType('ctftp'); pkg.__path__ = [sys.argv[1]]\n"
        "sys.modules['ctftp'] = pkg\n"
        "import ctftp.systemd as s\n"
        "assert 'twisted.internet.endpoints' not in sys.modules\n"
        "assert s._inherited == {'LISTEN_PID': str(os.getpid()), 'LISTEN_FDS': '1'}, s._inherited\n"
        "assert s.listenFds() == [3]\n"
    )
    wrapper = (
        "import os, sys\n"
        "os.dup2(int(sys.argv[1]), 3, inheritable=True); os.set_inheritable(3, True)\n"
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1')\n"
        "os.execv(sys.executable, [sys.executable, '-c', sys.argv[2], sys.argv[3]])\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        result = subprocess.run(
            [sys.executable, "-c", wrapper, str(sock.fileno()), code, str(src)],
            pass_fds=[sock.fileno()],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
