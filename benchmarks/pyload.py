"""A TFTP read load generator in pure Python (asyncio), for where tftpload is absent.

It does what ``../shared/bench/tftpload`` does, more slowly: each transfer on a
fresh UDP port, RFC 2347 options (blksize, windowsize, tsize), RFC 7440 windows,
block-number rollover, retransmission on timeout, byte verification. It prints
(or returns) the same fields as tftpload's JSON line, so ``run.py`` reads both
alike. Being Python, it saturates a core sooner than a C server does: compare
servers measured with the same generator only.

    python benchmarks/pyload.py --host 127.0.0.1 --port 6969 \\
        --file 'SEP%012d.cnf.xml' --name-count 2000 --total 2000 --concurrency 100 \\
        --blksize 512 --verify sample-4k.bin
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import socket
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

OP_RRQ, OP_DATA, OP_ACK, OP_ERROR, OP_OACK = 1, 3, 4, 5, 6


@dataclass
class LoadSpec:
    host: str
    port: int
    file: str
    total: int = 1
    concurrency: int = 1
    name_count: int = 0
    blksize: int = 0
    windowsize: int = 0
    tsize: bool = False
    timeout_ms: int = 1000
    retries: int = 5
    verify: bytes | None = None
    duration_limit: float = 300.0

    def name(self, index: int) -> str:
        if "%" not in self.file:
            names = self.file.split(",")
            return names[index % len(names)]
        if self.name_count:
            index %= self.name_count
        return self.file % index


@dataclass
class Totals:
    ok: int = 0
    failed: int = 0
    fail_reasons: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    latencies: list[float] = field(default_factory=list)
    retransmits: int = 0


class Transfer(asyncio.DatagramProtocol):
    """One read transfer, driven by datagrams and one retransmit timer."""

    def __init__(self, spec: LoadSpec, name: str, totals: Totals) -> None:
        self.spec = spec
        self.name = name
        self.totals = totals
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.transport: asyncio.DatagramTransport | None = None
        self.tid: tuple[str, int] | None = None
        self.blksize = 512
        self.window = 1
        self.expected = 1  # next block number wanted (not wrapped)
        self.in_window = 0
        self.received = bytearray()
        self.last_sent = b""
        self.sends_left = spec.retries
        self.timer: asyncio.TimerHandle | None = None
        self.started = time.perf_counter()

    # -- sending -------------------------------------------------------------

    def request(self) -> bytes:
        packet = struct.pack("!H", OP_RRQ) + self.name.encode() + b"\0octet\0"
        if self.spec.blksize:
            packet += b"blksize\0%d\0" % self.spec.blksize
        if self.spec.windowsize:
            packet += b"windowsize\0%d\0" % self.spec.windowsize
        if self.spec.tsize:
            packet += b"tsize\0" + b"0\0"
        return packet

    def send(self, packet: bytes) -> None:
        assert self.transport is not None
        self.last_sent = packet
        self.transport.sendto(packet, self.tid or (self.spec.host, self.spec.port))
        self.arm()

    def arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(self.spec.timeout_ms / 1000, self.expire)

    def expire(self) -> None:
        if self.done.done():
            return
        if self.sends_left <= 0:
            self.finish("timeout")
            return
        self.sends_left -= 1
        self.totals.retransmits += 1
        self.send(self.last_sent)

    def ack(self, block: int) -> None:
        self.send(struct.pack("!HH", OP_ACK, block & 0xFFFF))

    # -- receiving -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.send(self.request())

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.done.done() or len(data) < 4:
            return
        if self.tid is None:
            self.tid = (addr[0], addr[1])
        elif (addr[0], addr[1]) != self.tid:
            return
        opcode, number = struct.unpack("!HH", data[:4])
        if opcode == OP_DATA:
            self.on_data(number, data[4:])
        elif opcode == OP_OACK and self.expected == 1 and not self.received:
            parts = data[2:].split(b"\0")
            options = {
                parts[i].decode().lower(): parts[i + 1].decode()
                for i in range(0, len(parts) - 1, 2)
            }
            self.blksize = int(options.get("blksize", self.blksize))
            self.window = int(options.get("windowsize", self.window))
            self.sends_left = self.spec.retries
            self.ack(0)
        elif opcode == OP_ERROR:
            self.finish(f"error_{number}")
        else:
            self.finish("bad_packet")

    def on_data(self, block: int, payload: bytes) -> None:
        if block != self.expected & 0xFFFF:
            if self.window > 1 and block != (self.expected - 1) & 0xFFFF:
                # A hole in the window: acknowledge what we have (RFC 7440).
                self.in_window = 0
                self.ack(self.expected - 1)
            return  # a duplicate
        self.received += payload
        self.expected += 1
        self.in_window += 1
        self.sends_left = self.spec.retries
        last = len(payload) < self.blksize
        if last or self.in_window >= self.window:
            self.in_window = 0
            self.ack(block)
        else:
            self.arm()
        if last:
            self.finish(None)

    def error_received(self, exc: Exception) -> None:
        self.finish("socket_error")

    def finish(self, reason: str | None) -> None:
        if self.done.done():
            return
        if self.timer is not None:
            self.timer.cancel()
        if reason is None and self.spec.verify is not None and self.received != self.spec.verify:
            reason = "verify_mismatch"
        if reason is None:
            self.totals.ok += 1
            self.totals.bytes += len(self.received)
            self.totals.latencies.append((time.perf_counter() - self.started) * 1000)
        else:
            self.totals.failed += 1
            self.totals.fail_reasons[reason] += 1
        self.done.set_result(None)
        if self.transport is not None:
            # Leave the socket open a moment so the final ACK goes out first.
            self.loop.call_soon(self.transport.close)


async def run_load(spec: LoadSpec) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    totals = Totals()
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    semaphore = asyncio.Semaphore(max(1, spec.concurrency))
    deadline = time.perf_counter() + spec.duration_limit

    async def one(index: int) -> None:
        async with semaphore:
            if time.perf_counter() > deadline:
                totals.failed += 1
                totals.fail_reasons["duration_limit"] += 1
                return
            local = ("::1" if family == socket.AF_INET6 else "127.0.0.1", 0)
            if not spec.host.startswith(("127.", "::1")):
                local = ("::" if family == socket.AF_INET6 else "0.0.0.0", 0)
            _, protocol = await loop.create_datagram_endpoint(
                lambda: Transfer(spec, spec.name(index), totals), local_addr=local, family=family
            )
            try:
                await asyncio.wait_for(
                    protocol.done, timeout=max(0.001, deadline - time.perf_counter())
                )
            except TimeoutError:
                protocol.finish("duration_limit")

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(spec.total)))
    wall = time.perf_counter() - started
    return summary(spec, totals, wall)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, math.ceil(fraction * len(ordered)) - 1)
    return ordered[rank]


def summary(spec: LoadSpec, totals: Totals, wall: float) -> dict[str, object]:
    lat = totals.latencies
    return {
        "tool": "pyload",
        "host": spec.host,
        "port": spec.port,
        "file": spec.file,
        "total": spec.total,
        "concurrency": spec.concurrency,
        "blksize": spec.blksize,
        "windowsize": spec.windowsize,
        "tsize": spec.tsize,
        "verify": spec.verify is not None,
        "ok": totals.ok,
        "failed": totals.failed,
        "fail_reasons": dict(totals.fail_reasons),
        "bytes": totals.bytes,
        "wall_s": round(wall, 4),
        "transfers_per_s": round(totals.ok / wall, 2) if wall else 0.0,
        "mb_per_s": round(totals.bytes / wall / 1e6, 3) if wall else 0.0,
        "lat_ms": {
            "p50": round(percentile(lat, 0.50), 3),
            "p90": round(percentile(lat, 0.90), 3),
            "p99": round(percentile(lat, 0.99), 3),
            "max": round(max(lat, default=0.0), 3),
            "mean": round(sum(lat) / len(lat), 3) if lat else 0.0,
        },
        "retransmits": totals.retransmits,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", required=True, help="name, comma list, or %%d pattern")
    parser.add_argument("--name-count", type=int, default=0)
    parser.add_argument("--total", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--blksize", type=int, default=0)
    parser.add_argument("--windowsize", type=int, default=0)
    parser.add_argument("--tsize", action="store_true")
    parser.add_argument("--timeout-ms", type=int, default=1000)
    parser.add_argument("--retries", type=int, default=5)
    parser.add_argument("--verify", type=Path)
    parser.add_argument("--duration-limit", type=float, default=300.0)
    args = parser.parse_args(argv)
    spec = LoadSpec(
        host=args.host,
        port=args.port,
        file=args.file,
        total=args.total,
        concurrency=args.concurrency,
        name_count=args.name_count,
        blksize=args.blksize,
        windowsize=args.windowsize,
        tsize=args.tsize,
        timeout_ms=args.timeout_ms,
        retries=args.retries,
        verify=args.verify.read_bytes() if args.verify else None,
        duration_limit=args.duration_limit,
    )
    result = asyncio.run(run_load(spec))
    print(json.dumps(result))
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
