"""benchmarks/floor.py's two servers send a file whole, with and without an OACK."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

FLOOR = Path(__file__).parents[2] / "benchmarks" / "floor.py"


def freePort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(port: int, name: str, options: bytes) -> bytes:
    """A lock-step read with a blocking socket; the RRQ is repeated until the
    server, just started, answers (bounded)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        request = b"\0\1" + name.encode() + b"\0octet\0" + options
        for _ in range(20):
            s.sendto(request, ("127.0.0.1", port))
            try:
                packet, peer = s.recvfrom(65536)
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("no answer from the server")
        received = bytearray()
        for _ in range(1000):
            opcode, block = struct.unpack_from("!HH", packet)
            if opcode == 6:
                s.sendto(b"\0\4\0\0", peer)
            else:
                assert opcode == 3
                received += packet[4:]
                s.sendto(struct.pack("!HH", 4, block), peer)
                if len(packet) - 4 < 512:
                    return bytes(received)
            packet, _ = s.recvfrom(65536)
        raise AssertionError("the transfer did not end")


@pytest.fixture(params=["bare", "twisted"])
def floorServer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    data = os.urandom(3000)
    (tmp_path / "f.bin").write_bytes(data)
    port = freePort()
    server = subprocess.Popen(
        [sys.executable, str(FLOOR), request.param, "--port", str(port), "--root", str(tmp_path)]
    )
    try:
        yield port, data
    finally:
        server.kill()
        server.wait(10)


@pytest.mark.parametrize("options", [b"", b"blksize\0512\0tsize\0000\0"])
def test_floor_server_sends_the_file(floorServer: tuple[int, bytes], options: bytes) -> None:
    port, data = floorServer
    assert fetch(port, "f.bin", options) == data
