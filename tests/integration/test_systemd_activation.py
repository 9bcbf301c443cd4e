"""Socket activation without systemd: ctftp serves real clients on sockets it did not bind.

``systemd-socket-activate --datagram`` (Debian's systemd package) binds the
sockets, waits for the first datagram and execs ctftp with ``LISTEN_FDS`` /
``LISTEN_PID``, which is what systemd does for ``ctftp.socket``; where it is
not installed, a small Python launcher does the same (bind, move to fd 3...,
set the variables, exec). ``NOTIFY_SOCKET`` points at a socket of the test,
so ``Type=notify``'s ``READY=1`` / ``STOPPING=1`` are checked as well.

Until ``makeService`` adopts passed sockets for ``systemd=true``, ctftp runs from
a launcher script built from ``ctftp.workers.serviceOnSockets``; once wired,
the launcher runs ``ctftp CONFIG`` (the unit's ExecStart) with
``systemd=true``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from ctftp.config import ServerConfig
from ctftp.server import TFTPServer
from ctftp.sources import LocalFileSource
from ctftp.systemd import SocketActivatedListeners
from ctftp.testing import fetch as twistedFetch

from ._support import (
    REPO_ROOT,
    curl_get,
    free_udp_port,
    hpa_get,
    ipv6_loopback_available,
    need,
    probe,
    run_client,
    stop_process,
    twistd_command,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ctftp_only")]


ACTIVATE_SCRIPT = """\
import fcntl, os, socket, sys
addresses, command = sys.argv[1].split(","), sys.argv[2:]
high = []
for address in addresses:
    host, port = address.rsplit(":", 1)
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, int(port)))
        high.append(fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD, 100))  # out of the way of 3...
for index, fd in enumerate(high):
    os.dup2(fd, 3 + index, inheritable=True)
    os.close(fd)
    print(f"Listening on {addresses[index]} as {3 + index}.", file=sys.stderr, flush=True)
os.environ["LISTEN_FDS"] = str(len(addresses))
os.environ["LISTEN_PID"] = str(os.getpid())  # exec keeps the pid
os.execvp(command[0], command)
"""


# -- the units -----------------------------------------------------------------------------


def unit(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (REPO_ROOT / "contrib" / name).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_units_say_what_the_docs_promise() -> None:
    service, sock = unit("ctftp.service"), unit("ctftp.socket")
    assert service["Type"] == ["notify"]
    assert service["User"] == ["ctftp"] and service["Group"] == ["ctftp"]
    assert service["ProtectSystem"] == ["strict"]
    assert service["PrivateTmp"] == ["yes"] and service["NoNewPrivileges"] == ["yes"]
    assert service["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert service["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["KillMode"] == ["mixed"]
    assert "/var/log/ctftp" in service["ReadWritePaths"][0]
    assert sock["ListenDatagram"] == ["0.0.0.0:69", "[::]:69"]
    assert sock["BindIPv6Only"] == ["ipv6-only"]


def test_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    script = Path(sys.executable).with_name("ctftp")
    for name in ("ctftp.service", "ctftp.socket"):
        text = (REPO_ROOT / "contrib" / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/ctftp/bin/ctftp", str(script)))
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "ctftp.socket"), str(tmp_path / "ctftp.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "ctftp" in line and "/etc/ctftp/ctftp.conf" not in line
    ]
    assert result.returncode == 0 or not complaints, result.stdout + result.stderr
    assert not complaints, complaints


# -- adopted sockets in-process: the reply leaves from the address asked -------------------------


@pytest_twisted.inlineCallbacks
def test_adopted_wildcard_socket_answers_from_address_asked(tmp_path: Path) -> Any:
    data = random.Random(5).randbytes(3000)
    (tmp_path / "f.bin").write_bytes(data)
    config = ServerConfig(root_dir=str(tmp_path), file_log=False)
    server = TFTPServer(config, reactor=reactor, source=LocalFileSource(config.root_dir))
    passed = []
    port4 = free_udp_port("0.0.0.0")
    sock4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock4.bind(("0.0.0.0", port4))
    passed.append(os.dup(sock4.fileno()))
    sock4.close()
    port6 = None
    if ipv6_loopback_available():
        port6 = free_udp_port("::")
        sock6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack
        sock6.bind(("::", port6))
        passed.append(os.dup(sock6.fileno()))
        sock6.close()
    service = SocketActivatedListeners(reactor, server, passed)
    service.startService()
    try:
        assert [p.name for p in service.protocols][0] == f"0.0.0.0:{port4}"
        for address in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            result = yield twistedFetch(reactor, (address, port4), "f.bin", interface="127.0.0.1")
            assert (result.peer[0], result.data) == (address, data)
        if port6 is not None:
            result = yield twistedFetch(reactor, ("::1", port6), "f.bin", interface="::1")
            assert (result.peer[0], result.data) == ("::1", data)
            # An IPv4 client of the dual-stack socket: answered from the IPv4 address asked.
            result = yield twistedFetch(
                reactor, ("127.0.0.4", port6), "f.bin", interface="127.0.0.1"
            )
            assert (result.peer[0], result.data) == ("127.0.0.4", data)
    finally:
        yield service.stopService()
        server.stopTransfers()


# -- a ctftp process on passed sockets, serving real clients ---------------------------------


@pytest.fixture
def notifySocket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(20)
    yield sock
    sock.close()


def serverCommand(config: Path) -> list[str]:
    script = Path(sys.executable).with_name("ctftp")
    if script.exists():
        return [str(script), str(config)]  # what ExecStart runs
    return [*twistd_command(), "-n", "--pidfile=", "ctftp", "--config", str(config)]


def activateCommand(
    tmp_path: Path, addresses: list[str], env: dict[str, str], names: bool
) -> list[str]:
    """The launcher; ``names``: set LISTEN_FDNAMES, as systemd 227 and later do."""
    fdnames = ":".join(f"tftp{index}" for index in range(len(addresses)))
    tool = shutil.which("systemd-socket-activate")
    if tool is not None:
        cmd = [tool, "--datagram"]
        for address in addresses:
            cmd += ["-l", address]
        for key, value in env.items():
            cmd += ["-E", f"{key}={value}"]
        if names:
            cmd.append(f"--fdname={fdnames}")
        return cmd
    script = tmp_path / "activate.py"
    script.write_text(ACTIVATE_SCRIPT)
    if names:
        env["LISTEN_FDNAMES"] = fdnames
    return [sys.executable, str(script), ",".join(addresses)]


@pytest.mark.parametrize("names", [True, False], ids=["fdnames", "no-fdnames"])
def test_socket_activation_serves_real_clients(
    tmp_path: Path, notifySocket: socket.socket, names: bool
) -> None:
    need("curl")
    data = random.Random(7).randbytes(300_000)
    root = tmp_path / "root"
    root.mkdir()
    (root / "boot.img").write_bytes(data)
    logDir = tmp_path / "logs"
    port = free_udp_port()
    unused = free_udp_port()  # `listeners`: ctftp must not bind it
    values = {
        "root_dir": str(root),
        "log_dir": str(logDir),
        "listeners": f"127.0.0.1:{unused}",
        "timeout_sec": "1",
        "systemd": "true",
    }
    config = write_config(tmp_path / "ctftp.conf", values)
    six = ipv6_loopback_available()
    addresses = [f"127.0.0.1:{port}"] + ([f"[::1]:{port}"] if six else [])
    env = {
        "NOTIFY_SOCKET": notifySocket.getsockname(),
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/"),
    }
    if "PYTHONPATH" in os.environ:  # systemd-socket-activate passes only what it is given
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    cmd = activateCommand(tmp_path, addresses, env, names) + serverCommand(config)
    out = tmp_path / "server.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            cmd,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    try:
        assert wait_for(
            lambda: out.read_text().count("Listening on") == len(addresses), timeout=10
        ), out.read_text()

        # The first request is the one that starts ctftp (systemd-socket-activate
        # execs on it); it waits in the passed socket and is served.
        result = run_client(curl_get("127.0.0.1", port, "boot.img", tmp_path / "curl.img"))
        assert result.returncode == 0, result.describe() + out.read_text()[-3000:]
        assert (tmp_path / "curl.img").read_bytes() == data

        assert notifySocket.recv(4096).startswith(b"READY=1")

        if six and shutil.which("tftp"):
            need("tftp")
            argv = hpa_get("::1", port, "boot.img", tmp_path / "hpa.img", ipv6=True)
            result = run_client(argv)
            assert result.returncode == 0, result.describe()
            assert (tmp_path / "hpa.img").read_bytes() == data

        # ctftp listened on what it was given, and did not bind `listeners`.
        log = (logDir / "ctftp.log").read_text()
        assert f"Starting listener on 127.0.0.1:{port} (socket passed by systemd)" in log
        if six:
            assert f"Starting listener on [::1]:{port} (socket passed by systemd)" in log
        assert f"127.0.0.1:{unused}" not in log.replace(f"listeners=127.0.0.1:{unused}", "")
        assert not probe("127.0.0.1", unused)
        assert re.search(r'EVENT type=1 client=127\.0\.0\.1:\d+ file="boot\.img" bytes=300000', log)

        # twistd ends itself with the signal it stopped on; the launcher exits 0.
        assert stop_process(proc) in (0, -signal.SIGTERM)
        assert notifySocket.recv(4096) == b"STOPPING=1"
    finally:
        stop_process(proc)
