"""A whole server in memory: a MemoryUDPReactor clock, real files in tmp_path."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ctftp.config import ServerConfig
from ctftp.events import TransferRecord
from ctftp.packets import OP_RRQ, Ack, Data, Error, OptionAck, decode, encodeAck, encodeRequest
from ctftp.service import CtftpService, makeService
from ctftp.testing import MemoryDatagramPort, MemoryUDPReactor

CLIENT = ("10.0.0.5", 40000)
LISTEN = ("127.0.0.1", 6969)


class Recorder:
    """An ITransferObserver that keeps every record it is told about."""

    def __init__(self) -> None:
        self.started: list[TransferRecord] = []
        self.ended: list[TransferRecord] = []

    def transferStarted(self, record: TransferRecord) -> None:
        self.started.append(dataclasses.replace(record))

    def transferEnded(self, record: TransferRecord) -> None:
        self.ended.append(dataclasses.replace(record))


class Harness:
    def __init__(self, root: Path, **overrides: Any) -> None:
        self.root = root
        self.reactor = MemoryUDPReactor()
        self.recorder = Recorder()
        settings: dict[str, Any] = {
            "root_dir": (str(root),),
            "listeners": (LISTEN,),
            "timeout_sec": 1.0,
            "max_retries": 3,
            "file_log": False,
        }
        settings.update(overrides)
        self.config = ServerConfig(**settings)
        self.service: CtftpService = makeService(
            self.config, reactor=self.reactor, observers=[self.recorder]
        )
        self.service.startService()
        self.server = self.service.server
        self.listener = self.reactor.portAt(*LISTEN)

    def write(self, name: str, data: bytes) -> bytes:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def request(
        self,
        name: str,
        mode: str = "octet",
        options: tuple[tuple[str, str], ...] = (),
        client: tuple[str, int] = CLIENT,
    ) -> None:
        self.listener.deliver(encodeRequest(OP_RRQ, name, mode, options), client)

    def transferPort(self) -> MemoryDatagramPort:
        port = self.reactor.newestPort()
        assert port is not self.listener, "no transfer port was opened"
        return port

    def run(
        self,
        port: MemoryDatagramPort,
        client: tuple[str, int] = CLIENT,
        ack: Callable[[int], bool] = lambda block: True,
        limit: int = 1_000_000,
    ) -> bytes:
        """Play a well-behaved lock-step client; ``ack(block)`` False drops an ACK."""
        received = bytearray()
        expected = 1
        for _ in range(limit):
            out = port.take()
            if not out:
                if not port.listening:
                    return bytes(received)
                self.reactor.advance(self.config.timeout_sec)
                continue
            for datagram, addr in out:
                assert addr == client
                packet = decode(datagram)
                if isinstance(packet, OptionAck):
                    port.deliver(encodeAck(0), client)
                    continue
                assert isinstance(packet, Data), packet
                if packet.block == expected & 0xFFFF:
                    received += packet.payload
                    expected += 1
                    last = len(packet.payload) < self.blksize
                    if ack(packet.block):
                        port.deliver(encodeAck(packet.block), client)
                    if last and not port.listening:
                        return bytes(received)
                elif ack(packet.block):
                    port.deliver(encodeAck((expected - 1) & 0xFFFF), client)
        raise AssertionError("transfer did not end")

    blksize = 512

    def listenerReplies(self) -> list[Any]:
        return [decode(d) for d, _ in self.listener.take()]


@pytest.fixture
def harness(tmp_path: Path) -> Callable[..., Harness]:
    made: list[Harness] = []

    def make(**overrides: Any) -> Harness:
        h = Harness(tmp_path, **overrides)
        made.append(h)
        return h

    yield make  # type: ignore[misc]
    for h in made:
        h.service.stopService()


__all__ = ["Ack", "Data", "Error", "OptionAck", "Harness", "CLIENT", "LISTEN"]
