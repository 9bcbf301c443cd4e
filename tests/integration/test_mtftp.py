"""PXE MTFTP against a running server: clients by hand on loopback (one
acknowledging, one listening then asking for what it missed), the same
with two workers, and atftp's own MTFTP client (``--mget``) in a network
namespace whose loopback routes multicast."""

from __future__ import annotations

import select
import shutil
from pathlib import Path

import pytest

from ._support import (
    GroupClient,
    Server,
    ack,
    ctftp_in_namespace,
    free_udp_port,
    loopback_multicast,
    rrq,
    run_client,
    wait_for,
)
from .conftest import ServerFactory, deterministic_bytes

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ctftp_only")]

WAIT = 5.0  # seconds any one packet may take on loopback
GROUP_ADDRESS = "239.255.75.1"


class MtftpClient(GroupClient):
    """A PXE MTFTP client by hand: the control socket sends the request,
    gets block 1 and sends the ACKs; the group socket gets the rest; every
    wait bounded."""

    def __init__(self, server: tuple[str, int], group: tuple[str, int]) -> None:
        super().__init__(server, 512)
        self.join(group)

    def ask(self, name: str) -> None:
        self.control.sendto(rrq(name), self.server)

    def receive(self, timeout: float = WAIT) -> int | None:
        """The next DATA block from the server or the group, kept; ``None``
        when nothing came within ``timeout``."""
        ready, _, _ = select.select([self.control, self.groupSocket], [], [], timeout)
        if not ready:
            return None
        sock = ready[0]
        datagram, sender = sock.recvfrom(65536)
        if sock is self.control:
            self.tid = sender
        return self.keep(datagram)

    def ackThrough(self, until: int | None = None) -> None:
        """Acknowledge each block as it comes, as the client that opened
        the transfer does, until block ``until`` (default: the last)."""
        for _ in range(70_000):
            block = self.receive()
            assert block is not None, "the server stopped sending"
            assert self.tid is not None
            self.control.sendto(ack(block), self.tid)
            if block == (until or self.last):
                return
        raise AssertionError("too many blocks")

    def listen(self, quiet: float = 1.5) -> None:
        """Take what passes on the group until it is quiet."""
        for _ in range(70_000):
            if self.receive(quiet) is None:
                return
        raise AssertionError("too many blocks")


def _mtftpServer(
    server_factory: ServerFactory, tmp_path: Path, payload: bytes, **overrides: str
) -> tuple[Server, tuple[str, int], tuple[str, int]]:
    if not loopback_multicast():
        pytest.skip("this host does not loop multicast back on 127.0.0.1")
    root = tmp_path / "root"
    root.mkdir()
    (root / "pxelinux.0").write_bytes(payload)
    group = (GROUP_ADDRESS, free_udp_port())
    conf = tmp_path / "mtftp.conf"
    conf.write_text(f"# FILE GROUP PORT\npxelinux.0 {group[0]} {group[1]}\n")
    port = free_udp_port()
    server = server_factory(root, mtftp_file=str(conf), mtftp_port=str(port), **overrides)
    assert wait_for(lambda: "Starting MTFTP listener" in server.central_log.read_text())
    return server, (server.host, port), group


def _events(server: Server, kind: str) -> list[str]:
    return [line for line in server.central_log.read_text().splitlines() if kind in line]


def test_one_client_acknowledges_another_listens_then_asks_for_what_it_missed(
    server_factory: ServerFactory, tmp_path: Path, group_clients: list[GroupClient]
) -> None:
    payload = deterministic_bytes(60 * 512 + 77, seed=75)
    server, mtftp, group = _mtftpServer(server_factory, tmp_path, payload)
    first, second = MtftpClient(mtftp, group), MtftpClient(mtftp, group)
    group_clients += [first, second]
    first.ask("/pxelinux.0")
    first.ackThrough(10)
    second.ask("pxelinux.0")  # being sent: no answer, it listens
    first.ackThrough()
    assert first.content() == payload
    second.listen()
    assert set(second.blocks) == set(range(2, 62))  # block 1 went to the first alone
    assert wait_for(lambda: len(_events(server, "status=error msg=server_busy")) == 1)
    second.ask("pxelinux.0")  # quiet now: it opens a transfer of its own
    second.ackThrough()
    assert second.content() == payload
    assert wait_for(lambda: len(_events(server, "EVENT type=1")) == 2)
    assert all(f"bytes={len(payload)} status=ok" in line for line in _events(server, "type=1"))


def test_with_two_workers_the_first_serves_mtftp(
    server_factory: ServerFactory, tmp_path: Path, group_clients: list[GroupClient]
) -> None:
    payload = deterministic_bytes(5 * 512 + 1, seed=76)
    server, mtftp, group = _mtftpServer(server_factory, tmp_path, payload, workers="2")
    client = MtftpClient(mtftp, group)
    group_clients.append(client)
    client.ask("pxelinux.0")
    client.ackThrough()
    assert client.content() == payload
    log = server.central_log.read_text()
    assert f"Starting MTFTP listener on {mtftp[0]}:{mtftp[1]} for worker 1" in log
    assert wait_for(lambda: f"bytes={len(payload)} status=ok" in server.central_log.read_text())


def test_atftp_mtftp_client_in_a_namespace(tmp_path: Path, multicast_namespace: str) -> None:
    if shutil.which("atftp") is None:
        pytest.skip("atftp is not installed")
    payload = deterministic_bytes(200_000, seed=77)
    root = tmp_path / "root"
    root.mkdir()
    (root / "pxelinux.0").write_bytes(payload)
    (tmp_path / "mtftp.conf").write_text("pxelinux.0 239.255.75.2 3001\n")
    overrides = {"mtftp_file": "mtftp.conf", "mtftp_port": "1759"}
    with ctftp_in_namespace(
        multicast_namespace, tmp_path, root, overrides, "Starting MTFTP listener"
    ) as central:
        target = tmp_path / "boot.out"
        mtftp = ["mcast-ip 239.255.75.2", "client-port 3001", "listen-delay 1", "timeout-delay 1"]
        argv = ["ip", "netns", "exec", multicast_namespace, "atftp"]
        argv += [a for setting in mtftp for a in ("--mtftp", setting)]
        argv += ["--mget", "-r", "pxelinux.0", "-l", str(target), "127.0.0.1", "1759"]
        result = run_client(argv, timeout=60)
        assert result.returncode == 0, result.describe()
        assert target.read_bytes() == payload
        assert f"bytes={len(payload)} status=ok" in central.read_text()
