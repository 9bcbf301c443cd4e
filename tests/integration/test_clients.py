"""Real TFTP clients (tftp-hpa, atftp, curl, busybox) against the server, byte-exact."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ._support import (
    SERVER_KIND,
    RawClient,
    Server,
    atftp_get,
    busybox_get,
    busybox_has_tftp,
    curl_get,
    fetch,
    free_udp_port,
    hpa_get,
    ipv6_loopback_available,
    need,
    run_client,
    start_server,
    wait_for,
)
from .conftest import SIZES, TEXT, ServerFactory, populate

pytestmark = pytest.mark.integration

Command = Callable[[str, int, str, Path], list[str]]

#: client id -> (program, command builder)
CLIENTS: dict[str, tuple[str, Command]] = {
    "tftp-hpa": ("tftp", lambda h, p, n, o: hpa_get(h, p, n, o)),
    "atftp": ("atftp", lambda h, p, n, o: atftp_get(h, p, n, o)),
    "atftp-options": (
        "atftp",
        lambda h, p, n, o: atftp_get(
            h, p, n, o, ["blksize 1428", "tsize 0", "windowsize 4", "timeout 2"]
        ),
    ),
    "atftp-blksize8192": ("atftp", lambda h, p, n, o: atftp_get(h, p, n, o, ["blksize 8192"])),
    "curl": ("curl", lambda h, p, n, o: curl_get(h, p, n, o)),
    "curl-blksize1428": ("curl", lambda h, p, n, o: curl_get(h, p, n, o, blksize=1428)),
    "busybox": ("busybox", lambda h, p, n, o: busybox_get(h, p, n, o)),
    "busybox-blksize1024": ("busybox", lambda h, p, n, o: busybox_get(h, p, n, o, blksize=1024)),
}


def require_client(client_id: str) -> Command:
    program, command = CLIENTS[client_id]
    need(program)
    if program == "busybox" and not busybox_has_tftp():
        pytest.skip("this busybox has no tftp applet")
    return command


@pytest.mark.parametrize("name", list(SIZES))
@pytest.mark.parametrize("client_id", list(CLIENTS))
def test_client_reads_file_byte_exact(
    shared_server: Server, payloads: dict[str, bytes], out_dir: Path, client_id: str, name: str
) -> None:
    command = require_client(client_id)
    out = out_dir / f"{client_id}-{name}"
    argv = command(shared_server.host, shared_server.port, name, out)
    if argv[0] == "curl" and not payloads[name]:
        # curl 7.x/8.x refuses an OACK with "tsize 0" ("invalid tsize -:0:- value in
        # OACK packet", exit 71), whatever the server: ask an empty file without options.
        argv.insert(1, "--tftp-no-options")
    result = run_client(argv)
    assert result.returncode == 0, result.describe()
    assert out.exists(), result.describe()
    got = out.read_bytes()
    assert len(got) == len(payloads[name]), result.describe()
    assert got == payloads[name], result.describe()


def test_tftp_hpa_netascii_round_trip(shared_server: Server, out_dir: Path) -> None:
    """The server sends CRLF / CR NUL; tftp-hpa turns it back into the LF original."""
    need("tftp")
    out = out_dir / "text.txt"
    argv = hpa_get(shared_server.host, shared_server.port, "text.txt", out, mode="ascii")
    result = run_client(argv)
    assert result.returncode == 0, result.describe()
    assert "Error" not in result.stderr + result.stdout, result.describe()
    assert out.read_bytes() == TEXT.encode(), result.describe()


@pytest.mark.slow
def test_rollover_40_mib_at_blksize_512(shared_server: Server, out_dir: Path) -> None:
    """81,920 blocks of 512 bytes: block numbers wrap past 65535 and the file stays exact."""
    size = 40 * 1024 * 1024
    name = "rollover-40mib.bin"
    data = os.urandom(size)
    (shared_server.root / name).write_bytes(data)
    (shared_server.root / name).chmod(0o644)
    out = out_dir / name
    if need_any("curl", "atftp") == "curl":
        argv = curl_get(shared_server.host, shared_server.port, name, out, blksize=512)
    else:
        argv = atftp_get(shared_server.host, shared_server.port, name, out, ["blksize 512"])
    result = run_client(argv, timeout=300)
    assert result.returncode == 0, result.describe()
    got = out.read_bytes()
    assert len(got) == size, result.describe()
    assert got == data, "content differs (block numbers mixed up at the rollover?)"


def need_any(*programs: str) -> str:
    for program in programs:
        if shutil.which(program):
            return program
    pytest.skip(f"none of {programs} is installed")


# --------------------------------------------------------------------------
# IPv6


@pytest.fixture
def dual_stack_server(server_factory: ServerFactory) -> Server:
    if not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback here")
    v6 = free_udp_port("::1")
    v4 = free_udp_port("127.0.0.1")
    return server_factory(listeners=f"[::1]:{v6},127.0.0.1:{v4}")


def test_ipv6_listener_with_curl(
    dual_stack_server: Server, payloads: dict[str, bytes], out_dir: Path
) -> None:
    need("curl")
    (host, port) = dual_stack_server.listeners[0]
    assert host == "::1"
    out = out_dir / "v6-curl"
    result = run_client(curl_get(host, port, "b513.bin", out))
    assert result.returncode == 0, result.describe()
    assert out.read_bytes() == payloads["b513.bin"]


def test_ipv6_listener_with_tftp_hpa(
    dual_stack_server: Server, payloads: dict[str, bytes], out_dir: Path
) -> None:
    need("tftp")
    (host, port) = dual_stack_server.listeners[0]
    out = out_dir / "v6-hpa"
    result = run_client(hpa_get(host, port, "mib1.bin", out, ipv6=True))
    assert result.returncode == 0, result.describe()
    assert out.read_bytes() == payloads["mib1.bin"], result.describe()


def test_second_listener_of_the_same_server(
    dual_stack_server: Server, payloads: dict[str, bytes], out_dir: Path
) -> None:
    need("curl")
    if len(dual_stack_server.listeners) < 2:
        pytest.skip(f"{SERVER_KIND} has a single listener")
    (host, port) = dual_stack_server.listeners[1]
    out = out_dir / "v4-curl"
    result = run_client(curl_get(host, port, "b512.bin", out))
    assert result.returncode == 0, result.describe()
    assert out.read_bytes() == payloads["b512.bin"]


# --------------------------------------------------------------------------
# Errors as the clients see them

MISSING = "no-such-file.bin"


def test_missing_file_tftp_hpa(shared_server: Server, out_dir: Path) -> None:
    need("tftp")
    result = run_client(hpa_get(shared_server.host, shared_server.port, MISSING, out_dir / "m"))
    # tftp-hpa exits 0 even on errors; it prints the server's error code.
    assert "Error code 1" in result.stdout + result.stderr, result.describe()


def test_missing_file_atftp(shared_server: Server, out_dir: Path) -> None:
    need("atftp")
    result = run_client(atftp_get(shared_server.host, shared_server.port, MISSING, out_dir / "m"))
    assert result.returncode != 0, result.describe()


def test_missing_file_curl(shared_server: Server, out_dir: Path) -> None:
    need("curl")
    result = run_client(curl_get(shared_server.host, shared_server.port, MISSING, out_dir / "m"))
    assert result.returncode == 68, result.describe()  # CURLE_TFTP_NOTFOUND


def test_missing_file_busybox(shared_server: Server, out_dir: Path) -> None:
    require_client("busybox")
    result = run_client(busybox_get(shared_server.host, shared_server.port, MISSING, out_dir / "m"))
    assert result.returncode != 0, result.describe()
    assert "(1)" in result.stderr, result.describe()


@pytest.mark.parametrize("option", ["blksize 7", "blksize 65465", "timeout 0", "timeout 256"])
def test_option_out_of_range_atftp(shared_server: Server, out_dir: Path, option: str) -> None:
    """atftp's own test suite (test/test.sh) asks with each of these and
    looks for atftpd's ERROR 8 message in the client's trace."""
    need("atftp")
    argv = atftp_get(shared_server.host, shared_server.port, "b513.bin", out_dir / "o", [option])
    result = run_client([argv[0], "--trace", *argv[1:]])
    assert "<Failure to negotiate RFC2347 options>" in result.stderr, result.describe()


TRAVERSALS = ["../secret.txt", "../root/../secret.txt", "/../secret.txt"]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_traversal_refused_curl(shared_server: Server, out_dir: Path, name: str) -> None:
    need("curl")
    out = out_dir / "t"
    result = run_client(curl_get(shared_server.host, shared_server.port, name, out))
    assert result.returncode != 0, result.describe()
    if SERVER_KIND == "ctftp":
        assert result.returncode == 69, result.describe()  # CURLE_TFTP_PERM: ERROR 2
    assert not out.exists() or b"secret" not in out.read_bytes()


@pytest.mark.parametrize("name", TRAVERSALS[:1])
def test_traversal_refused_tftp_hpa(shared_server: Server, out_dir: Path, name: str) -> None:
    need("tftp")
    out = out_dir / "t"
    result = run_client(hpa_get(shared_server.host, shared_server.port, name, out))
    expected = "Error code 2" if SERVER_KIND == "ctftp" else "Error code"
    assert expected in result.stdout + result.stderr, result.describe()
    assert not out.exists() or b"secret" not in out.read_bytes()


def test_traversal_refused_atftp(shared_server: Server, out_dir: Path) -> None:
    need("atftp")
    out = out_dir / "t"
    result = run_client(atftp_get(shared_server.host, shared_server.port, "../secret.txt", out))
    assert result.returncode != 0, result.describe()
    assert not out.exists() or b"secret" not in out.read_bytes()


def test_wildcard_ipv4_and_ipv6_listeners_on_one_port(
    server_factory: ServerFactory, payloads: dict[str, bytes]
) -> None:
    """``listeners=0.0.0.0:P,[::]:P`` (docs/configuration.md): both families on one port.

    On Linux an ``[::]`` socket is dual-stack by default and then collides with
    ``0.0.0.0`` on the same port unless it is made IPv6-only (IPV6_V6ONLY), as
    tftpd-hpa does when given both.
    """
    if not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback here")
    if SERVER_KIND != "ctftp":
        pytest.skip(f"{SERVER_KIND} has a single listener")
    port = free_udp_port("0.0.0.0")
    server = server_factory(listeners=f"0.0.0.0:{port},[::]:{port}")
    assert server.listeners == [("0.0.0.0", port), ("::", port)]
    for host in ("127.0.0.1", "::1"):
        assert fetch(host, port, "b513.bin") == payloads["b513.bin"], host


def test_ipv6_wildcard_alone_serves_ipv4_clients_logged_as_ipv4(
    server_factory: ServerFactory, payloads: dict[str, bytes]
) -> None:
    """``listeners=[::]:P`` is dual-stack (Linux default): IPv4 clients logged as IPv4."""
    if not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback here")
    if SERVER_KIND != "ctftp":
        pytest.skip("checks ctftp's log")
    bindv6only = Path("/proc/sys/net/ipv6/bindv6only")
    if bindv6only.exists() and bindv6only.read_text().strip() != "0":
        pytest.skip("net.ipv6.bindv6only=1: [::] sockets are IPv6-only here")
    port = free_udp_port("::")
    server = server_factory(listeners=f"[::]:{port}")
    with RawClient("127.0.0.1", port) as client:
        assert client.fetch("b511.bin") == payloads["b511.bin"]
        client_port = client.port
    assert fetch("::1", port, "b511.bin") == payloads["b511.bin"]
    line = f'RRQ from 127.0.0.1:{client_port} file="b511.bin"'
    assert wait_for(
        lambda: server.central_log.exists() and line in server.central_log.read_text(), 5
    ), server.central_log.read_text() if server.central_log.exists() else "no log"


@pytest.fixture(scope="module")
def pooled_server(
    tmp_path_factory: pytest.TempPathFactory, payloads: dict[str, bytes]
) -> Iterator[Server]:
    """A server whose transfers share one port (``port_pool=1``)."""
    base = tmp_path_factory.mktemp("pooled")
    populate(base / "root", payloads)
    server = start_server(base / "run", base / "root", {"port_pool": "1"})
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("client_id", list(CLIENTS))
def test_clients_read_from_one_shared_port_at_once(
    pooled_server: Server, payloads: dict[str, bytes], out_dir: Path, client_id: str
) -> None:
    """Every size by one client program, all transfers at once on one
    server port: each gets its own file, byte-exact."""
    command = require_client(client_id)
    names = [n for n in SIZES if payloads[n]]  # curl asks an empty file differently
    procs = []
    for name in names:
        out = out_dir / f"pooled-{client_id}-{name}"
        argv = command(pooled_server.host, pooled_server.port, name, out)
        procs.append((name, out, subprocess.Popen(argv, stdin=subprocess.DEVNULL)))
    for name, out, proc in procs:
        assert proc.wait(timeout=60) == 0, (client_id, name)
        assert out.read_bytes() == payloads[name], (client_id, name)
