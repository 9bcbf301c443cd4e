"""workers=1 against workers=2 on the small-file storm.

The storm of docs/performance.md's scenario a: 2,000 transfers of a 4 KiB file
over 2,000 names, 100 at once, blksize 512, driven by the C load generator
``tftpload`` (``make -C ../shared/bench``); without it the benchmark says so
and exits 0, since Python clients would measure themselves, not the server.

Each mode runs a fresh server on loopback with ``log_dir`` set (every worker
writes ctftp.log) and the other keys at their defaults, a warm-up of 200
transfers, then ``--runs`` measured storms; the medians are printed. Modes:

- ``1``: one process (what ``workers=1`` runs);
- ``2``: two workers, one SO_REUSEPORT socket each (what ``workers=2`` runs);
- ``2shared``: two workers on one shared socket (what ``systemd=true`` with
  ``workers=2`` runs, since systemd passes one socket per address).

The server is built in this script from the same pieces ``makeService``
uses (``python benchmarks/workers.py --serve CONFIG N [shared]``), so the
benchmark does not depend on how ``workers`` is wired into twistd.

    python benchmarks/workers.py [--runs 3] [--modes 1,2,2shared] [--total 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_TFTPLOAD = HERE.parent.parent / "shared" / "bench" / "tftpload"
NAME_PATTERN = "SEP%012d.cnf.xml"


def serve(config: str, count: int, shared: bool) -> None:
    """The server process of one mode: ``makeService``, its listeners replaced
    by a ``WorkerSupervisor`` when ``count`` > 1."""
    from twisted.internet import reactor

    from ctftp.config import ServerConfig
    from ctftp.service import ListenerService, makeService
    from ctftp.workers import WorkerSupervisor

    parsed = ServerConfig.fromFile(config)
    service = makeService(parsed, reactor=reactor, installSignalHandlers=True)
    if count > 1:
        for child in list(service):
            if isinstance(child, ListenerService):
                child.disownServiceParent()
        WorkerSupervisor(parsed, reactor, count, sharedSockets=shared).setServiceParent(service)
    service.privilegedStartService()
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def freePort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int) -> bool:
    """True once the server answers an RRQ for a missing file with an ERROR."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.sendto(b"\x00\x01no-such-file\x00octet\x00", ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(1024)
        except OSError:
            return False
        return data[:2] == b"\x00\x05"


def cpuSeconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its children (the workers), Linux."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, IndexError, ValueError):
            continue
        pending.extend(int(child) for child in children)
    return total


def load(tftpload: Path, port: int, sample: Path, total: int, names: int) -> dict[str, Any]:
    result = subprocess.run(
        [
            str(tftpload),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--file",
            NAME_PATTERN,
            "--name-count",
            str(names),
            "--total",
            str(total),
            "--concurrency",
            "100",
            "--blksize",
            "512",
            "--verify",
            str(sample),
            "--duration-limit",
            "120",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"tftpload printed nothing: {result.stderr}")
    return dict(json.loads(lines[-1]))


class ModeServer:
    """A server of one mode, started once and measured between the others'
    runs: interleaving the modes gives each the same share of whatever else
    the machine is doing."""

    def __init__(self, mode: str, workdir: Path) -> None:
        self.mode = mode
        count = int(mode.removesuffix("shared"))
        self.port = freePort()
        config = workdir / f"ctftp-{mode}.conf"
        config.write_text(
            f"root_dir={workdir / 'root'}\nlog_dir={workdir / f'logs-{mode}'}\n"
            f"listeners=127.0.0.1:{self.port}\n"
        )
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve", str(config), str(count)]
        if mode.endswith("shared"):
            argv.append("shared")
        self.out = (workdir / f"server-{mode}.out").open("wb")
        self.proc = subprocess.Popen(
            argv, stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self.results: list[dict[str, Any]] = []

    def waitReady(self) -> None:
        deadline = time.monotonic() + 30
        while not answers(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"server for mode {self.mode} did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.out.close()

    def row(self) -> dict[str, Any]:
        rates = [r["transfers_per_s"] for r in self.results]
        return {
            "mode": self.mode,
            "median": statistics.median(rates),
            "best": max(rates),
            "p50_ms": statistics.median(r["lat_ms"]["p50"] for r in self.results),
            "p99_ms": statistics.median(r["lat_ms"]["p99"] for r in self.results),
            "failures": sum(r["failed"] for r in self.results),
            "cpu_ms": statistics.median(r["cpu_s"] * 1000 / r["total"] for r in self.results),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--total", type=int, default=2000)
    parser.add_argument("--names", type=int, default=2000)
    parser.add_argument("--modes", default="1,2,2shared")
    parser.add_argument(
        "--tftpload", type=Path, default=Path(os.environ.get("TFTPLOAD", DEFAULT_TFTPLOAD))
    )
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.serve[2:] == ["shared"])
        return 0
    if not (args.tftpload.exists() and os.access(args.tftpload, os.X_OK)):
        print(
            f"skipped: {args.tftpload} is not built (make -C ../shared/bench); "
            "this benchmark measures the server only with the C load generator"
        )
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="ctftp-workers-bench-"))
    try:
        root = workdir / "root"
        root.mkdir()
        payload = os.urandom(4096)
        for index in range(args.names):
            (root / (NAME_PATTERN % index)).write_bytes(payload)
        print(
            f"small-file storm: {args.total} x 4 KiB over {args.names} names, 100 at once,"
            f" blksize 512; {args.runs} runs per mode, modes interleaved; {os.cpu_count()} CPUs"
        )
        servers = [ModeServer(mode.strip(), workdir) for mode in args.modes.split(",")]
        try:
            for server in servers:
                server.waitReady()
            time.sleep(1.0)  # every worker up, not only the first to answer
            sample = root / (NAME_PATTERN % 0)
            for server in servers:
                load(args.tftpload, server.port, sample, 200, args.names)  # warm-up
            for _ in range(args.runs):
                for server in servers:
                    before = cpuSeconds(server.proc.pid)
                    result = load(args.tftpload, server.port, sample, args.total, args.names)
                    result["cpu_s"] = cpuSeconds(server.proc.pid) - before
                    server.results.append(result)
        finally:
            for server in servers:
                server.stop()
        print(
            f"{'mode':<10}{'median/s':>10}{'best/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'failures':>10}"
            f"{'CPU ms/transfer':>17}"
        )
        for server in servers:
            row = server.row()
            print(
                f"{row['mode']:<10}{row['median']:>10.0f}{row['best']:>9.0f}{row['p50_ms']:>9.1f}"
                f"{row['p99_ms']:>9.1f}{row['failures']:>10}{row['cpu_ms']:>17.2f}"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
