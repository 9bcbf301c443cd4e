"""RFC 2090 multicast against a running server: three clients of one file
on loopback, taking turns as master; and atftp's own multicast client in a
network namespace whose loopback routes multicast."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ._support import (
    NAMESPACE_PORT,
    OP_OACK,
    GroupClient,
    ack,
    ctftp_in_namespace,
    free_udp_port,
    loopback_multicast,
    parse,
    rrq,
    run_client,
    wait_for,
)
from .conftest import ServerFactory, deterministic_bytes

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ctftp_only")]

BLKSIZE = 1024
WAIT = 5.0  # seconds any one packet may take on loopback


class MulticastClient(GroupClient):
    """An RFC 2090 read client by hand: the control socket talks to the
    session's port, the group socket receives DATA; every wait bounded."""

    def __init__(self, server: tuple[str, int]) -> None:
        super().__init__(server, BLKSIZE)

    def request(self, name: str) -> None:
        options = {"multicast": "", "blksize": str(BLKSIZE)}
        self.control.sendto(rrq(name, options=options), self.server)

    def optionAck(self) -> bool:
        """Wait for an OACK; join its group the first time; master or not."""
        self.control.settimeout(WAIT)
        datagram, addr = self.control.recvfrom(65536)
        packet = parse(datagram)
        assert packet.opcode == OP_OACK, packet
        assert self.tid in (None, addr)
        self.tid = addr
        address, port, master = packet.options["multicast"].split(",")
        if self.groupSocket is None:
            self.join((address, int(port)))
        return master == "1"

    def ack(self, block: int) -> None:
        assert self.tid is not None
        self.control.sendto(ack(block), self.tid)

    def receive(self, timeout: float = WAIT) -> int:
        """One DATA from the group (its sender must be the TID): its block."""
        assert self.groupSocket is not None
        self.groupSocket.settimeout(timeout)
        datagram, addr = self.groupSocket.recvfrom(65536)
        assert addr == self.tid
        return self.keep(datagram)

    def drain(self) -> None:
        """Take every DATA already waiting in the group socket."""
        try:
            while True:
                self.receive(timeout=0.2)
        except TimeoutError:
            pass

    def firstMissing(self) -> int | None:
        end = self.last if self.last is not None else max(self.blocks, default=0) + 1
        return next((n for n in range(1, end + 1) if n not in self.blocks), None)

    def finishAsMaster(self) -> None:
        """Ask for each missing block, then acknowledge the last one."""
        for _ in range(70_000):
            missing = self.firstMissing()
            if missing is None:
                assert self.last is not None
                self.ack(self.last)
                return
            self.ack(missing - 1)
            self.receive()
        raise AssertionError("too many rounds")


def test_three_clients_share_one_stream_and_take_turns(
    server_factory: ServerFactory, tmp_path: Path, group_clients: list[GroupClient]
) -> None:
    if not loopback_multicast():
        pytest.skip("this host does not loop multicast back on 127.0.0.1")
    payload = deterministic_bytes(40 * BLKSIZE + 123, seed=2090)
    root = tmp_path / "root"
    root.mkdir()
    (root / "boot.img").write_bytes(payload)
    groupPort = free_udp_port()
    server = server_factory(
        root, multicast="true", multicast_addr="239.255.77.1", multicast_port=str(groupPort)
    )
    first, second, third = (MulticastClient((server.host, server.port)) for _ in range(3))
    group_clients += [first, second, third]
    first.request("boot.img")
    assert first.optionAck() is True
    first.ack(0)
    for block in range(1, 11):
        assert first.receive() == block
        first.ack(block)
    # Two more clients join while block 11 is on its way.
    for late in (second, third):
        late.request("boot.img")
        assert late.optionAck() is False
        assert late.tid == first.tid
    while first.last is None:
        first.ack(first.receive())
    assert first.content() == payload
    # Master now, the second asks for the ten blocks it missed.
    assert second.optionAck() is True
    second.drain()
    assert second.firstMissing() == 1
    second.finishAsMaster()
    assert second.content() == payload
    # The third heard those ten too: it has the file and only says so.
    assert third.optionAck() is True
    third.drain()
    assert third.firstMissing() is None
    third.finishAsMaster()
    assert third.content() == payload

    def ended() -> list[str]:
        lines = server.central_log.read_text().splitlines()
        return [line for line in lines if "EVENT type=1" in line]

    assert wait_for(lambda: len(ended()) == 3), server.central_log.read_text()
    assert all(f"bytes={len(payload)} status=ok" in line for line in ended())
    log = server.central_log.read_text()
    assert log.count(f"to 239.255.77.1:{groupPort} started") == 1


# -- atftp's client, in a network namespace ------------------------------------------


def test_atftp_multicast_client_in_a_namespace(tmp_path: Path, multicast_namespace: str) -> None:
    if shutil.which("atftp") is None:
        pytest.skip("atftp is not installed")
    payload = deterministic_bytes(300_000, seed=2091)
    root = tmp_path / "root"
    root.mkdir()
    (root / "boot.img").write_bytes(payload)
    overrides = {"multicast": "true"}
    with ctftp_in_namespace(
        multicast_namespace, tmp_path, root, overrides, "Starting listener"
    ) as central:
        target = tmp_path / "boot.out"
        argv = ["ip", "netns", "exec", multicast_namespace, "atftp", "--option", "multicast"]
        argv += ["--option", f"blksize {BLKSIZE}", "--get", "-r", "boot.img", "-l", str(target)]
        result = run_client([*argv, "127.0.0.1", str(NAMESPACE_PORT)], timeout=60)
        assert result.returncode == 0, result.describe()
        assert target.read_bytes() == payload
        log = central.read_text()
        assert "multicast of file=" in log
        assert f"bytes={len(payload)} status=ok" in log
