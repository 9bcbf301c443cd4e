"""Helpers for the integration tests: a server process, a raw TFTP client, real clients.

Nothing here imports ctftp: the integration tests look at the server from the
outside only (UDP on loopback, files, log files, exit codes), the way a user
does, so they can also run against a reference server (``CTFTP_IT_SERVER``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Which server the tests start: ``ctftp`` (default) or ``tftpd-hpa``. The
#: reference server is only there to check the harness itself; tests of
#: ctftp-only features skip under it.
SERVER_KIND = os.environ.get("CTFTP_IT_SERVER", "ctftp")

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
CLIENT_TIMEOUT = 120.0

OP_RRQ, OP_WRQ, OP_DATA, OP_ACK, OP_ERROR, OP_OACK = 1, 2, 3, 4, 5, 6


# --------------------------------------------------------------------------
# Ports and addresses


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port that nothing listens on right now (the usual bind-to-0 trick)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def join_group(sock: socket.socket, group: tuple[str, int]) -> None:
    """Bind ``sock`` to the group's port (shared) and join the group on 127.0.0.1."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", group[1]))
    membership = socket.inet_aton(group[0]) + socket.inet_aton("127.0.0.1")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)


class GroupClient:
    """What the multicast clients the tests play by hand share: a control
    socket on 127.0.0.1 that talks to the server, a socket on the group
    once joined, and the blocks received (``last``: the short one's number)."""

    def __init__(self, server: tuple[str, int], blksize: int) -> None:
        self.server = server
        self.blksize = blksize
        self.control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.control.bind(("127.0.0.1", 0))
        self.groupSocket: socket.socket | None = None
        self.tid: tuple[str, int] | None = None
        self.blocks: dict[int, bytes] = {}
        self.last: int | None = None

    def join(self, group: tuple[str, int]) -> None:
        self.groupSocket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        join_group(self.groupSocket, group)

    def keep(self, datagram: bytes) -> int:
        """Keep a DATA packet's payload; its block number."""
        packet = parse(datagram)
        assert packet.opcode == OP_DATA, packet
        self.blocks[packet.block] = packet.payload
        if len(packet.payload) < self.blksize:
            self.last = packet.block
        return packet.block

    def content(self) -> bytes:
        return b"".join(self.blocks[n] for n in sorted(self.blocks))

    def close(self) -> None:
        self.control.close()
        if self.groupSocket is not None:
            self.groupSocket.close()


def loopback_multicast() -> bool:
    """Whether a group joined on 127.0.0.1 receives what is sent through it."""
    group = ("239.255.77.250", free_udp_port())
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        try:
            join_group(rx, group)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            tx.sendto(b"probe", group)
            rx.settimeout(1.0)
            return rx.recv(16) == b"probe"
        except OSError:
            return False


def twistd_command() -> list[str]:
    """The twistd of the interpreter running the tests."""
    script = Path(sys.executable).with_name("twistd")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


# --------------------------------------------------------------------------
# Raw TFTP packets


def rrq(name: str | bytes, mode: str = "octet", options: Mapping[str, str] | None = None) -> bytes:
    raw = name.encode() if isinstance(name, str) else name
    packet = struct.pack("!H", OP_RRQ) + raw + b"\0" + mode.encode() + b"\0"
    for key, value in (options or {}).items():
        packet += key.encode() + b"\0" + value.encode() + b"\0"
    return packet


def wrq(name: str, mode: str = "octet", options: Mapping[str, str] | None = None) -> bytes:
    return struct.pack("!H", OP_WRQ) + rrq(name, mode, options)[2:]


def data(block: int, payload: bytes) -> bytes:
    return struct.pack("!HH", OP_DATA, block & 0xFFFF) + payload


def ack(block: int) -> bytes:
    return struct.pack("!HH", OP_ACK, block & 0xFFFF)


def error(code: int, message: str) -> bytes:
    return struct.pack("!HH", OP_ERROR, code) + message.encode() + b"\0"


@dataclass
class Packet:
    opcode: int
    block: int = 0  # DATA/ACK block number, ERROR code
    payload: bytes = b""  # DATA payload, ERROR message, raw OACK body

    @property
    def options(self) -> dict[str, str]:
        parts = self.payload.split(b"\0")
        return {
            parts[i].decode().lower(): parts[i + 1].decode() for i in range(0, len(parts) - 1, 2)
        }


def parse(data: bytes) -> Packet:
    if len(data) < 2:
        raise ValueError(f"short packet {data!r}")
    (opcode,) = struct.unpack("!H", data[:2])
    if opcode in (OP_DATA, OP_ACK, OP_ERROR):
        if len(data) < 4:
            raise ValueError(f"short packet {data!r}")
        (block,) = struct.unpack("!H", data[2:4])
        body = data[4:]
        if opcode == OP_ERROR:
            body = body.rstrip(b"\0")
        return Packet(opcode, block, body)
    return Packet(opcode, 0, data[2:])  # OACK (and requests): the raw body


class RawClient:
    """A UDP socket speaking TFTP by hand, with every wait bounded."""

    def __init__(self, host: str = "127.0.0.1", port: int = 69) -> None:
        self.server = (host, port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes, to: tuple[str, int] | None = None) -> None:
        self.sock.sendto(data, to or self.server)

    def recv(self, timeout: float = 5.0) -> tuple[Packet, tuple[str, int]]:
        """The next datagram; ``TimeoutError`` if none comes within ``timeout``."""
        self.sock.settimeout(timeout)
        data, addr = self.sock.recvfrom(70000)  # socket.timeout is TimeoutError
        return parse(data), (addr[0], addr[1])

    def drain(self, quiet: float) -> list[tuple[Packet, tuple[str, int]]]:
        """Everything that arrives until ``quiet`` seconds pass without a datagram."""
        got: list[tuple[Packet, tuple[str, int]]] = []
        for _ in range(10000):
            try:
                got.append(self.recv(quiet))
            except TimeoutError:
                break
        return got

    def fetch(
        self,
        name: str,
        mode: str = "octet",
        options: Mapping[str, str] | None = None,
        timeout: float = 5.0,
        deadline: float = 60.0,
        resend_request: float | None = None,
    ) -> bytes:
        """Read a whole file (lock-step or windowed as negotiated); raise on ERROR.

        With ``resend_request``, the RRQ goes out again every that many seconds
        (at most 5 times) until the server answers, as real clients do.
        """
        request = rrq(name, mode, options)
        self.send(request)
        resends = 5 if resend_request is not None else 0
        blksize = 512
        window = 1
        expected = 1
        out = bytearray()
        tid: tuple[str, int] | None = None
        end = time.monotonic() + deadline
        received_in_window = 0
        while time.monotonic() < end:
            try:
                packet, addr = self.recv(timeout if tid or not resends else resend_request)
            except TimeoutError:
                if tid is None and resends:
                    resends -= 1
                    self.send(request)
                    continue
                raise
            if tid is None:
                tid = addr
            elif addr != tid:
                continue
            if packet.opcode == OP_ERROR:
                raise TftpError(packet.block, packet.payload.decode(errors="replace"))
            if packet.opcode == OP_OACK:
                opts = packet.options
                blksize = int(opts.get("blksize", blksize))
                window = int(opts.get("windowsize", window))
                self.send(ack(0), tid)
                continue
            if packet.opcode != OP_DATA:
                raise AssertionError(f"unexpected packet {packet}")
            if packet.block != expected & 0xFFFF:
                # Out of order (a retransmit or a lost packet): ask again from here.
                self.send(ack(expected - 1), tid)
                received_in_window = 0
                continue
            out += packet.payload
            expected += 1
            received_in_window += 1
            last = len(packet.payload) < blksize
            if last or received_in_window >= window:
                self.send(ack(packet.block), tid)
                received_in_window = 0
            if last:
                return bytes(out)
        raise TimeoutError(f"transfer of {name!r} not done within {deadline} s")


class TftpError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"TFTP ERROR {code}: {message}")
        self.code = code
        self.message = message


def fetch(
    host: str,
    port: int,
    name: str,
    mode: str = "octet",
    options: Mapping[str, str] | None = None,
) -> bytes:
    with RawClient(host, port) as client:
        return client.fetch(name, mode, options)


def probe(host: str, port: int, timeout: float = 0.25) -> bool:
    """True when the server answers an RRQ for a missing name with an ERROR."""
    with RawClient(host, port) as client:
        client.send(rrq("ctftp-it-probe-does-not-exist", "octet"))
        try:
            packet, _ = client.recv(timeout)
        except OSError:  # timeout, or ICMP port unreachable while it starts
            return False
        return packet.opcode == OP_ERROR


# --------------------------------------------------------------------------
# The server under test


def reachable(host: str) -> str:
    """The loopback address of a wildcard listener; other addresses unchanged."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def split_listener(listener: str) -> tuple[str, int]:
    host, _, port = listener.strip().rpartition(":")
    return host.strip("[]"), int(port)


@dataclass
class Server:
    """A running server process: where it listens, its folders, how to stop it."""

    root: Path
    workdir: Path
    listeners: list[tuple[str, int]]
    config: dict[str, str]
    config_path: Path | None
    proc: subprocess.Popen[bytes] | None = None
    output_path: Path | None = None

    @property
    def host(self) -> str:
        return self.listeners[0][0]

    @property
    def port(self) -> int:
        return self.listeners[0][1]

    @property
    def log_dir(self) -> Path:
        return Path(self.config["log_dir"])

    @property
    def central_log(self) -> Path:
        return self.log_dir / "ctftp.log"

    def output(self) -> str:
        if self.output_path is None or not self.output_path.exists():
            return ""
        return self.output_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with status {self.proc.returncode} before answering:\n"
                    + self.output()[-4000:]
                )
            if all(probe(reachable(host), port) for host, port in self.listeners):
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"server did not answer on {self.listeners} within {timeout} s:\n"
            + self.output()[-4000:]
        )

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        return stop_process(self.proc)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


def write_config(path: Path, config: Mapping[str, str]) -> Path:
    lines = ["# written by tests/integration"]
    lines += [f"{key}={value}" for key, value in config.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def ctftp_server_command(config_path: Path, workdir: Path) -> list[str]:
    return [
        *twistd_command(),
        "-n",
        "--pidfile",
        str(workdir / "twistd.pid"),
        "ctftp",
        "--config",
        str(config_path),
    ]


def hpa_server_command(config: Mapping[str, str]) -> list[str]:
    """tftpd-hpa with the few settings of ``config`` it has an equivalent for."""
    binary = shutil.which("in.tftpd") or "/usr/sbin/in.tftpd"
    cmd = [binary, "-L", "-u", "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")]
    # tftpd-hpa has a single -a address: the other listeners are dropped.
    cmd += ["-a", config["listeners"].split(",")[0].strip()]
    if "timeout_sec" in config:
        cmd += ["-T", str(int(float(config["timeout_sec"]) * 1_000_000))]
    if "max_blksize" in config:
        cmd += ["-B", config["max_blksize"]]
    cmd += ["-s", config["root_dir"]]
    return cmd


def start_server(workdir: Path, root: Path, overrides: Mapping[str, str] | None = None) -> Server:
    """Start the server under test serving ``root`` and wait until it answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    log_dir = workdir / "logs"
    log_dir.mkdir(exist_ok=True)
    config: dict[str, str] = {
        "root_dir": str(root),
        "listeners": f"127.0.0.1:{free_udp_port()}",
        "log_dir": str(log_dir),
        "timeout_sec": "1",
        "max_retries": "5",
    }
    config.update(overrides or {})
    listeners = [split_listener(item) for item in config["listeners"].split(",")]
    config_path = write_config(workdir / "ctftp.conf", config)
    if SERVER_KIND == "tftpd-hpa":
        cmd = hpa_server_command(config)
        listeners = listeners[:1]
    else:
        cmd = ctftp_server_command(config_path, workdir)
    output_path = workdir / "server.out"
    with output_path.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(root, workdir, listeners, config, config_path, proc, output_path)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def running_server(
    workdir: Path, root: Path, overrides: Mapping[str, str] | None = None
) -> Iterator[Server]:
    server = start_server(workdir, root, overrides)
    try:
        yield server
    finally:
        server.stop()


NAMESPACE_PORT = 6969  # the listener of a server alone in its network namespace


@contextlib.contextmanager
def ctftp_in_namespace(
    namespace: str, workdir: Path, root: Path, overrides: Mapping[str, str], ready: str
) -> Iterator[Path]:
    """ctftp serving ``root`` on 127.0.0.1:``NAMESPACE_PORT`` inside network
    namespace ``namespace``, with ``overrides``; yields its central log once
    that shows ``ready``, and stops the server at the end."""
    logs = workdir / "logs"
    logs.mkdir()
    config = {"root_dir": str(root), "listeners": f"127.0.0.1:{NAMESPACE_PORT}"}
    config = {**config, "log_dir": str(logs), **overrides}
    path = write_config(workdir / "ctftp.conf", config)
    with (workdir / "server.out").open("wb") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *ctftp_server_command(path, workdir)],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        central = logs / "ctftp.log"
        assert wait_for(lambda: central.exists() and ready in central.read_text(), timeout=15), (
            workdir / "server.out"
        ).read_text()
        yield central
    finally:
        stop_process(proc)


# --------------------------------------------------------------------------
# Real clients


@dataclass
class ClientResult:
    argv: Sequence[str]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.argv)}\nexit status {self.returncode}\n"
            f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}"
        )


def run_client(
    argv: Sequence[str], timeout: float = CLIENT_TIMEOUT, cwd: Path | None = None
) -> ClientResult:
    proc = subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
    return ClientResult(
        argv,
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )


def hpa_get(
    host: str, port: int, name: str, out: Path, mode: str = "binary", ipv6: bool = False
) -> list[str]:
    argv = ["tftp"]
    if ipv6:
        argv.append("-6")
    return [*argv, "-m", mode, host, str(port), "-c", "get", name, str(out)]


def atftp_get(host: str, port: int, name: str, out: Path, options: Sequence[str] = ()) -> list[str]:
    argv = ["atftp", "--get", "-r", name, "-l", str(out)]
    for option in options:
        argv += ["--option", option]
    return [*argv, host, str(port)]


def curl_url(host: str, port: int, name: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"tftp://{shown}:{port}/{name}"


def curl_get(
    host: str,
    port: int,
    name: str,
    out: Path,
    blksize: int | None = None,
    no_options: bool = False,
) -> list[str]:
    argv = ["curl", "-sS", "--path-as-is", "--max-time", str(int(CLIENT_TIMEOUT))]
    if no_options:
        argv.append("--tftp-no-options")
    elif blksize is not None:
        argv += ["--tftp-blksize", str(blksize)]
    return [*argv, curl_url(host, port, name), "-o", str(out)]


def hpa_put(host: str, port: int, local: Path, name: str, mode: str = "binary") -> list[str]:
    return ["tftp", "-m", mode, host, str(port), "-c", "put", str(local), name]


def atftp_put(
    host: str, port: int, local: Path, name: str, options: Sequence[str] = ()
) -> list[str]:
    argv = ["atftp", "--put", "-l", str(local), "-r", name]
    for option in options:
        argv += ["--option", option]
    return [*argv, host, str(port)]


def curl_put(
    host: str,
    port: int,
    local: Path,
    name: str,
    blksize: int | None = None,
    no_options: bool = False,
) -> list[str]:
    argv = ["curl", "-sS", "--max-time", str(int(CLIENT_TIMEOUT))]
    if no_options:
        argv.append("--tftp-no-options")
    elif blksize is not None:
        argv += ["--tftp-blksize", str(blksize)]
    return [*argv, "-T", str(local), curl_url(host, port, name)]


def busybox_put(
    host: str, port: int, local: Path, name: str, blksize: int | None = None
) -> list[str]:
    argv = ["busybox", "tftp", "-p", "-l", str(local), "-r", name]
    if blksize is not None:
        argv += ["-b", str(blksize)]
    return [*argv, host, str(port)]


def busybox_get(
    host: str, port: int, name: str, out: Path, blksize: int | None = None
) -> list[str]:
    argv = ["busybox", "tftp", "-g", "-r", name, "-l", str(out)]
    if blksize is not None:
        argv += ["-b", str(blksize)]
    return [*argv, host, str(port)]


def need(binary: str) -> str:
    """The path of a client program, or skip the test when it is not installed.

    ``tftp`` must be tftp-hpa's (the tests use its ``-m``/``-c`` syntax), not BSD tftp.
    """
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (.ci/run installs it)")
    if binary == "tftp" and not _prints(path, "-V", "tftp-hpa"):
        pytest.skip(f"{path} is not tftp-hpa's client")
    return path


@functools.cache
def _prints(path: str, argument: str, word: str) -> bool:
    return word in run_client([path, argument], timeout=10).stdout.split()


def busybox_has_tftp() -> bool:
    path = shutil.which("busybox")
    return path is not None and _prints(path, "--list", "tftp")


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
