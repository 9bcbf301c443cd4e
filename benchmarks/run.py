"""Measure ctftp against tftpd-hpa, atftpd and dnsmasq on loopback, in the same run.

Each server gets its own port on 127.0.0.1 and the same folder of files
(dnsmasq serves TFTP on port 69 only: it runs in a network namespace of its
own, with the load generator); each scenario runs against each server in turn
(interleaved, so drift hits all alike). A table of medians is printed at the
end, then ctftp's ratios to the anchors against the targets of issue 8. See
benchmarks/README.md.

    python benchmarks/run.py                      # everything found, 64 MiB bulk
    python benchmarks/run.py --bulk-mib 8 --repeat 3 --servers ctftp,atftpd

The load comes from ``../shared/bench/tftpload`` (built with ``make`` when gcc
and its source are there) or, failing that, from ``benchmarks/pyload.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import getpass
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
DEFAULT_BENCH_DIR = REPO_ROOT.parent / "shared" / "bench"

STORM_PATTERN = "SEP%012d.cnf.xml"
STORM_FILE = "sample-4k.bin"
BULK_FILE = "bulk.bin"
PARALLEL_FILE = "parallel-16m.bin"
INFLIGHT_FILE = "inflight-64k.bin"
INFLIGHT = 1000
#: The C servers ctftp is compared with (issue 8's anchors).
ANCHORS = ("tftpd-hpa", "atftpd", "dnsmasq")


# --------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    file: str
    verify: str
    total: int = 1
    concurrency: int = 1
    name_count: int = 0
    blksize: int = 0
    windowsize: int = 0
    tsize: bool = False

    def load_args(self) -> list[str]:
        args = ["--file", self.file, "--total", str(self.total)]
        args += ["--concurrency", str(self.concurrency)]
        if self.name_count:
            args += ["--name-count", str(self.name_count)]
        if self.blksize:
            args += ["--blksize", str(self.blksize)]
        if self.windowsize:
            args += ["--windowsize", str(self.windowsize)]
        if self.tsize:
            args.append("--tsize")
        return args


def scenarios(args: argparse.Namespace) -> dict[str, Scenario]:
    bulk = f"{args.bulk_mib} MiB"
    return {
        "a": Scenario(
            "a",
            f"{args.storm_total:,} x 4 KiB, {args.storm_names:,} names, "
            f"c={args.concurrency}, blksize 512",
            STORM_PATTERN,
            STORM_FILE,
            total=args.storm_total,
            concurrency=args.concurrency,
            name_count=args.storm_names,
            blksize=512,
        ),
        "c1": Scenario(
            "c1", f"{bulk}, blksize 1428", BULK_FILE, BULK_FILE, blksize=1428, tsize=True
        ),
        "c2": Scenario(
            "c2", f"{bulk}, blksize 8192", BULK_FILE, BULK_FILE, blksize=8192, tsize=True
        ),
        "c3": Scenario(
            "c3",
            f"{bulk}, blksize 1428, windowsize 16",
            BULK_FILE,
            BULK_FILE,
            blksize=1428,
            windowsize=16,
            tsize=True,
        ),
        "d": Scenario(
            "d",
            "10 x 16 MiB in parallel, blksize 1428",
            PARALLEL_FILE,
            PARALLEL_FILE,
            total=10,
            concurrency=10,
            blksize=1428,
        ),
        "inflight": Scenario(
            "inflight",
            f"{INFLIGHT:,} x 64 KiB all at once, blksize 512",
            INFLIGHT_FILE,
            INFLIGHT_FILE,
            total=INFLIGHT,
            concurrency=INFLIGHT,
            blksize=512,
        ),
    }


def make_files(root: Path, args: argparse.Namespace, wanted: Sequence[Scenario]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20251202)
    keys = {s.key for s in wanted}
    files: dict[str, int] = {}
    if "a" in keys:
        files[STORM_FILE] = 4096
    if keys & {"c1", "c2", "c3"}:
        files[BULK_FILE] = args.bulk_mib * 1024 * 1024
    if "d" in keys:
        files[PARALLEL_FILE] = 16 * 1024 * 1024
    if "inflight" in keys:
        files[INFLIGHT_FILE] = 64 * 1024
    for name, size in files.items():
        (root / name).write_bytes(rng.randbytes(size))
    if "a" in keys:
        sample = (root / STORM_FILE).read_bytes()
        for index in range(args.storm_names):
            (root / (STORM_PATTERN % index)).write_bytes(sample)
    # Servers that drop root (tftpd-hpa, atftpd run as nobody) must read everything.
    for path in [root, *root.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)


# --------------------------------------------------------------------------
# Servers


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PROBE = """
import socket, struct, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(0.25)
    request = struct.pack("!H", 1) + b"bench-probe-missing\\0octet\\0"
    s.sendto(request, ("127.0.0.1", int(sys.argv[1])))
    try:
        data, _ = s.recvfrom(2048)
    except OSError:
        sys.exit(1)
sys.exit(data[:2] != struct.pack("!H", 5))
"""


def answers(port: int, timeout: float = 0.25, netns: str | None = None) -> bool:
    """True when an RRQ for a missing name gets an ERROR back."""
    if netns is not None:
        probe = ["ip", "netns", "exec", netns, sys.executable, "-c", PROBE, str(port)]
        return subprocess.run(probe, capture_output=True, check=False).returncode == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(struct.pack("!H", 1) + b"bench-probe-missing\0octet\0", ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(2048)
        except OSError:
            return False
    return data[:2] == struct.pack("!H", 5)


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    workdir: Path
    cwd: Path
    note: str = ""
    proc: subprocess.Popen[bytes] | None = None
    clear_refs_ok: bool = True
    counts_cpu: bool = True  # False when the work happens in processes not measured
    netns: str | None = None  # a network namespace of its own (dnsmasq), created here

    @property
    def load_prefix(self) -> list[str]:
        """What the load generator's command line starts with: ``ip netns exec``."""
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def start(self) -> None:
        if self.netns:
            subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
            subprocess.run(
                ["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"],
                check=True,
                capture_output=True,
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        output = self.workdir / f"{self.name}.out"
        with output.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if answers(self.port, netns=self.netns):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not start ({' '.join(self.argv)}):\n"
            + output.read_text(errors="replace")[-2000:]
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.netns:
            subprocess.run(["ip", "netns", "del", self.netns], check=False, capture_output=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def processes(self) -> list[int]:
        """The server's process and its live descendants (ctftp's workers)."""
        found, pending = [], [self.pid]
        while pending:
            pid = pending.pop()
            found.append(pid)
            with contextlib.suppress(OSError, ValueError):
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                pending.extend(int(child) for child in children)
        return found

    def reset_peak(self) -> None:
        """Reset VmHWM so the next reading is the peak of one scenario (Linux >= 4.0)."""
        for pid in self.processes():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                self.clear_refs_ok = False

    def peak_rss_mb(self) -> float | None:
        """The highest VmHWM of the server's processes (the target is per process)."""
        peaks = []
        for pid in self.processes():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
        return max(peaks) if peaks else None

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the server's processes and their reaped children."""
        if not self.counts_cpu:
            return None
        ticks = 0
        for pid in self.processes():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                ticks += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        return ticks / os.sysconf("SC_CLK_TCK")


def find_program(explicit: str | None, names: Sequence[str], paths: Sequence[str]) -> str | None:
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return next((p for p in paths if os.access(p, os.X_OK)), None)


#: ctftp's variants on the command line: ``ctftp``, ``ctftp-w2`` (workers=2),
#: ``ctftp-p16`` (port_pool=16), ``ctftp-w2-p16``.
CTFTP_VARIANT = re.compile(r"ctftp(?:-w(\d+))?(?:-p(\d+))?")


def ctftp_server(
    args: argparse.Namespace, root: Path, workdir: Path, name: str, workers: int, pool: int
) -> Server:
    port = free_udp_port()
    config = {
        "root_dir": str(root),
        "listeners": f"127.0.0.1:{port}",
        "log_dir": str(workdir / "ctftp-logs"),
    }
    if workers > 1:
        config["workers"] = str(workers)
    if pool:
        config["port_pool"] = str(pool)
    for item in args.ctftp_set:
        key, _, value = item.partition("=")
        config[key.strip()] = value.strip()
    (workdir / "ctftp-logs").mkdir(parents=True, exist_ok=True)
    conf = workdir / "ctftp.conf"
    conf.write_text("".join(f"{k}={v}\n" for k, v in config.items()))
    twistd = args.twistd or str(Path(sys.executable).with_name("twistd"))
    compile_ctftp(twistd)
    argv = [twistd, "-n", "--pidfile", str(workdir / "ctftp.pid"), "ctftp", "--config", str(conf)]
    note = "central log in log_dir, other keys at their defaults"
    if args.ctftp_set:
        note += " except " + ", ".join(args.ctftp_set)
    if workers > 1:
        note += f"; workers={workers}: CPU summed and peak RSS the highest over its processes"
    if pool:
        note += f"; port_pool={pool}"
    return Server(name, argv, port, workdir, workdir, note=note)


def compile_ctftp(twistd: str) -> None:
    """Write ctftp's ``.pyc`` files, as ``pip install`` does.

    From a source checkout run with PYTHONDONTWRITEBYTECODE, every start
    would compile ctftp's modules again, and the compiler's few MB would
    count in the peak RSS of each scenario.
    """
    first = Path(twistd).read_bytes().split(b"\n", 1)[0]
    python = first[2:].decode().strip() if first.startswith(b"#!") else sys.executable
    code = (
        "import compileall, os, ctftp; "
        "compileall.compile_dir(os.path.dirname(ctftp.__file__), quiet=1)"
    )
    subprocess.run([python, "-c", code], check=True, timeout=120)


def hpa_server(path: str, root: Path, workdir: Path) -> Server:
    port = free_udp_port()
    argv = [path, "-L", "-a", f"127.0.0.1:{port}"]
    if os.geteuid() == 0:
        argv += ["-s", str(root)]  # chroot, then drops to nobody
        cwd = workdir
    else:
        argv += ["-u", getpass.getuser()]  # no chroot without root: names relative to cwd
        cwd = root
    note = "forks a process per transfer: peak RSS of the listener only, CPU not measured"
    return Server("tftpd-hpa", argv, port, workdir, cwd, note=note, counts_cpu=False)


def atftpd_server(path: str, root: Path, workdir: Path) -> Server:
    port = free_udp_port()
    argv = [path, "--daemon", "--no-fork", "--port", str(port), "--bind-address", "127.0.0.1"]
    argv += ["--logfile", "-", "--maxthread", "200"]
    if os.geteuid() != 0:
        argv += ["--user", getpass.getuser()]
    argv.append(str(root))
    return Server("atftpd", argv, port, workdir, workdir)


def netns_permitted(name: str) -> str | None:
    """None when ``ip netns add`` works here (it is then removed), else why not."""
    if shutil.which("ip") is None:
        return "no ip command"
    result = subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False)
    if result.returncode != 0:
        return result.stderr.decode(errors="replace").strip() or "ip netns add failed"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return None


def dnsmasq_server(path: str, root: Path, workdir: Path) -> Server:
    """dnsmasq's TFTP server answers on port 69 only: a namespace of its own,
    where the load generator runs too. DNS off, at most 2,000 transfers at
    once (its default of 50 would refuse most of a storm)."""
    netns = f"ctftp-bench-{os.getpid()}"
    argv = ["ip", "netns", "exec", netns, path, "--keep-in-foreground", "--conf-file=/dev/null"]
    argv += ["--no-resolv", "--no-hosts", "--port=0", "--enable-tftp", f"--tftp-root={root}"]
    argv += ["--tftp-max=2000", "--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file="]
    argv += [f"--log-facility={workdir / 'dnsmasq.log'}"]
    if os.geteuid() != 0:
        argv.append(f"--user={getpass.getuser()}")
    note = f"port 69 in network namespace {netns}, with the load generator"
    return Server("dnsmasq", argv, 69, workdir, workdir, note=note, netns=netns)


def servers(args: argparse.Namespace, root: Path, workdir: Path) -> list[Server]:
    chosen = [s.strip() for s in args.servers.split(",") if s.strip()]
    found: list[Server] = []
    for name in chosen:
        variant = CTFTP_VARIANT.fullmatch(name)
        if variant:
            workers, pool = int(variant.group(1) or 1), int(variant.group(2) or 0)
            found.append(ctftp_server(args, root, workdir / name, name, workers, pool))
        elif name == "tftpd-hpa":
            path = find_program(args.in_tftpd, ["in.tftpd"], ["/usr/sbin/in.tftpd"])
            if path:
                found.append(hpa_server(path, root, workdir / "tftpd-hpa"))
            else:
                print("# tftpd-hpa (in.tftpd) not found: skipped", file=sys.stderr)
        elif name == "atftpd":
            path = find_program(
                args.atftpd,
                ["atftpd"],
                ["/usr/sbin/atftpd", "/tmp/atftpd-root/usr/sbin/atftpd"],
            )
            if path:
                found.append(atftpd_server(path, root, workdir / "atftpd"))
            else:
                print("# atftpd not found (give --atftpd PATH): skipped", file=sys.stderr)
        elif name == "dnsmasq":
            path = find_program(args.dnsmasq, ["dnsmasq"], ["/usr/sbin/dnsmasq"])
            why = netns_permitted(f"ctftp-bench-probe-{os.getpid()}") if path else None
            if path is None:
                print("# dnsmasq not found: skipped", file=sys.stderr)
            elif why is not None:
                print(
                    f"# dnsmasq skipped: it needs port 69 in a network namespace ({why})",
                    file=sys.stderr,
                )
            else:
                found.append(dnsmasq_server(path, root, workdir / "dnsmasq"))
        else:
            raise SystemExit(
                f"unknown server {name!r}: ctftp[-wN][-pM], tftpd-hpa, atftpd, dnsmasq"
            )
    return found


# --------------------------------------------------------------------------
# Load generators


def build_tftpload(bench_dir: Path, cache: Path) -> Path | None:
    """``make -C bench_dir``; if that folder is read-only, compile into ``cache``."""
    source = bench_dir / "tftpload.c"
    binary = bench_dir / "tftpload"
    compiler = os.environ.get("CC", "gcc")
    if not source.exists() or shutil.which(compiler) is None:
        return binary if os.access(binary, os.X_OK) else None
    make = shutil.which("make")
    if make:
        result = subprocess.run(
            [make, "-s", "-C", str(bench_dir)], capture_output=True, timeout=300, check=False
        )
        if result.returncode == 0 and os.access(binary, os.X_OK):
            return binary
    cache.mkdir(parents=True, exist_ok=True)
    built = cache / "tftpload"
    result = subprocess.run(
        [compiler, "-O2", "-o", str(built), str(source), "-lm"],
        capture_output=True,
        timeout=300,
        check=False,
    )
    if result.returncode == 0:
        return built
    print(f"# building tftpload failed:\n{result.stderr.decode()[-1500:]}", file=sys.stderr)
    return None


def load_command(args: argparse.Namespace, workdir: Path) -> tuple[str, list[str]]:
    if args.load in ("auto", "tftpload"):
        binary = build_tftpload(args.bench_dir, workdir / "build")
        if binary is not None:
            return "tftpload", [str(binary)]
        if args.load == "tftpload":
            raise SystemExit(f"tftpload could not be built from {args.bench_dir}")
    return "pyload (Python asyncio)", [sys.executable, str(HERE / "pyload.py")]


def run_load(
    command: list[str], server: Server, scenario: Scenario, root: Path, limit: float
) -> dict[str, Any]:
    argv = [*server.load_prefix, *command, "--host", "127.0.0.1", "--port", str(server.port)]
    argv += scenario.load_args()
    argv += ["--verify", str(root / scenario.verify), "--duration-limit", str(int(limit))]
    result = subprocess.run(
        argv, capture_output=True, timeout=limit + 60, check=False, stdin=subprocess.DEVNULL
    )
    lines = [line for line in result.stdout.decode().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(
            f"no result from {' '.join(argv)} (exit {result.returncode}):\n"
            + result.stderr.decode(errors="replace")[-2000:]
        )
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


# --------------------------------------------------------------------------
# Results


@dataclass
class Cell:
    rates: list[float] = field(default_factory=list)
    mbps: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    failures: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    rss: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    cpu_per_k: list[float] = field(default_factory=list)  # CPU s per 1,000 transfers

    def add(self, result: dict[str, Any], rss: float | None, cpu: float | None) -> None:
        self.rates.append(float(result["transfers_per_s"]))
        self.mbps.append(float(result["mb_per_s"]))
        self.p99.append(float(result["lat_ms"]["p99"]))
        self.failures += int(result["failed"])
        for reason, count in dict(result.get("fail_reasons") or {}).items():
            self.reasons[reason] = self.reasons.get(reason, 0) + int(count)
        if rss is not None:
            self.rss.append(rss)
        if cpu is not None:
            self.cpu.append(cpu)
            if result.get("ok"):
                self.cpu_per_k.append(cpu * 1000 / int(result["ok"]))


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(cells: dict[tuple[str, str], Cell], order: list[tuple[str, str]]) -> str:
    header = (
        "| server | scenario | transfers/s | MB/s | p99 latency ms | failures "
        "| peak RSS MB | server CPU s |"
    )
    rows = [header, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for server, scenario in order:
        cell = cells[(server, scenario)]
        failures = str(cell.failures)
        if cell.reasons:
            failures += " (" + ", ".join(f"{k} {v}" for k, v in sorted(cell.reasons.items())) + ")"
        rss = max(cell.rss) if cell.rss else None
        rows.append(
            f"| {server} | {scenario} | {fmt(median(cell.rates))} | {fmt(median(cell.mbps), 2)} "
            f"| {fmt(median(cell.p99))} | {failures} | {fmt(rss)} | {fmt(median(cell.cpu), 2)} |"
        )
    return "\n".join(rows)


# Issue 8's targets, each a ratio of a ctftp figure to an anchor's of the same run.
RSS_LIMIT_MB = 40.0


def targets(cells: dict[tuple[str, str], Cell], names: list[str]) -> str:
    """A table of ctftp against the anchors, target by target (see issue 8)."""
    ctftps = [n for n in names if n.startswith("ctftp")]
    anchors = [n for n in names if n in ANCHORS]
    rows = [
        "| target | ctftp | ctftp value | anchor | anchor value | ratio | goal | met |",
        "|---|---|---:|---|---:|---:|---|---|",
    ]

    def value(server: str, scenario: str, metric: str) -> float | None:
        cell = cells.get((server, scenario))
        return median(getattr(cell, metric)) if cell is not None else None

    def row(
        title: str,
        server: str,
        scenario: str,
        metric: str,
        anchor: str | None,
        goal: float | None,
        higher_is_better: bool = True,
    ) -> None:
        mine = value(server, scenario, metric)
        theirs = value(anchor, scenario, metric) if anchor else None
        if mine is None or (anchor and theirs is None):
            return
        ratio = mine / theirs if theirs else None
        if goal is None:
            goal_text, met = "reported", "-"
        elif ratio is None:
            goal_text, met = "-", "-"
        elif higher_is_better:
            goal_text, met = f">= {goal:g}", "yes" if ratio >= goal else "no"
        else:
            goal_text, met = f"<= {goal:g}", "yes" if ratio <= goal else "no"
        rows.append(
            f"| {title} | {server} | {fmt(mine, 2)} | {anchor or '-'} | {fmt(theirs, 2)} "
            f"| {fmt(ratio, 2)} | {goal_text} | {met} |"
        )

    def best(scenario: str, metric: str, among: Sequence[str]) -> str | None:
        measured = [(value(a, scenario, metric), a) for a in among]
        present = [(v, a) for v, a in measured if v is not None]
        return max(present)[1] if present else None

    for server in ctftps:
        for anchor in ("atftpd", "dnsmasq"):
            if anchor in anchors:
                row("a: transfers/s", server, "a", "rates", anchor, 1)
                row("a: p99 latency ms", server, "a", "p99", anchor, 1, higher_is_better=False)
    for server in ctftps:
        if "atftpd" in anchors:
            row("c3: MB/s", server, "c3", "mbps", "atftpd", 1.5)
        for scenario in ("c2", "d"):
            row(f"{scenario}: MB/s", server, scenario, "mbps", best(scenario, "mbps", anchors), 1)
        if "dnsmasq" in anchors:
            row("a: CPU s per 1,000 transfers", server, "a", "cpu_per_k", "dnsmasq", None)
    for server in ctftps:
        for scenario in ("a", "c2", "c3", "d", "inflight"):
            cell = cells.get((server, scenario))
            if cell is None:
                continue
            failures = cell.failures
            rows.append(
                f"| {scenario}: failed transfers | {server} | {failures} | - | - | - | 0 "
                f"| {'yes' if failures == 0 else 'no'} |"
            )
        cell = cells.get((server, "a"))
        if cell is not None and cell.rss:
            rss = max(cell.rss)
            rows.append(
                f"| a: peak RSS MB per process | {server} | {fmt(rss)} | - | - | - "
                f"| <= {RSS_LIMIT_MB:g} | {'yes' if rss <= RSS_LIMIT_MB else 'no'} |"
            )
    return "\n".join(rows)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    return (
        f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs{mem}; "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}"
    )


# --------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="TFTP read benchmarks: ctftp, tftpd-hpa, atftpd and dnsmasq on loopback."
    )
    parser.add_argument(
        "--servers",
        default="ctftp,ctftp-w2,ctftp-p4,ctftp-w2-p4,tftpd-hpa,atftpd,dnsmasq",
        help="comma list of ctftp, ctftp-wN (workers=N), ctftp-pM (port_pool=M), "
        "ctftp-wN-pM, tftpd-hpa, atftpd, dnsmasq",
    )
    parser.add_argument(
        "--scenarios",
        default="a,c2,c3,d,inflight",
        help="comma list of a, c1, c2, c3, d, inflight (default a,c2,c3,d,inflight)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each; the table shows medians"
    )
    parser.add_argument("--bulk-mib", type=int, default=64, help="size of the bulk file (c1-c3)")
    parser.add_argument("--storm-total", type=int, default=2000, help="transfers in scenario a")
    parser.add_argument("--storm-names", type=int, default=2000, help="distinct names in a")
    parser.add_argument("--concurrency", type=int, default=100, help="transfers in flight in a")
    parser.add_argument(
        "--load",
        choices=["auto", "tftpload", "python"],
        default="auto",
        help="load generator: tftpload when it builds (auto), or the Python one",
    )
    parser.add_argument("--bench-dir", type=Path, default=DEFAULT_BENCH_DIR)
    parser.add_argument("--atftpd", help="path of atftpd (default: PATH, /usr/sbin)")
    parser.add_argument("--in-tftpd", help="path of tftpd-hpa's in.tftpd")
    parser.add_argument("--dnsmasq", help="path of dnsmasq (default: PATH, /usr/sbin)")
    parser.add_argument("--twistd", help="twistd that has ctftp (default: beside this Python)")
    parser.add_argument(
        "--ctftp-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra ctftp config line (repeatable), e.g. file_log=false",
    )
    parser.add_argument("--limit", type=float, default=300, help="seconds per load run")
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write every raw result to this file")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


@contextlib.contextmanager
def working_folder(args: argparse.Namespace) -> Iterator[Path]:
    if args.workdir:
        # Its parents are left alone: tftpd-hpa and atftpd (as nobody) must be able
        # to reach it, which a folder under /tmp or /srv usually is.
        args.workdir.mkdir(parents=True, exist_ok=True)
        args.workdir.chmod(0o755)
        yield args.workdir.resolve()
        return
    path = Path(tempfile.mkdtemp(prefix="ctftp-bench-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    known = scenarios(args)
    wanted = []
    for key in (k.strip() for k in args.scenarios.split(",") if k.strip()):
        if key not in known:
            raise SystemExit(f"unknown scenario {key!r}: {', '.join(known)}")
        wanted.append(known[key])

    with working_folder(args) as workdir:
        root = workdir / "root"
        make_files(root, args, wanted)
        load_name, load = load_command(args, workdir)
        running = servers(args, root, workdir)
        if not running:
            raise SystemExit("no server to measure")
        print(f"# {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
        print(f"# machine: {machine()}")
        print(f"# load generator: {load_name}")
        print(f"# command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
        cells: dict[tuple[str, str], Cell] = {}
        raw: list[dict[str, object]] = []
        try:
            for server in running:
                server.start()
                print(f"# {server.name}: {' '.join(server.argv)}")
            # Scenario by scenario: a process keeps the memory its allocator
            # took, so the peak RSS of a storm measured after a bigger
            # scenario would be that scenario's.
            for scenario in wanted:
                for run in range(args.repeat):
                    for server in running:
                        server.reset_peak()
                        cpu_before = server.cpu_seconds()
                        result = run_load(load, server, scenario, root, args.limit)
                        cpu_after = server.cpu_seconds()
                        cpu = (
                            cpu_after - cpu_before
                            if cpu_before is not None and cpu_after is not None
                            else None
                        )
                        rss = server.peak_rss_mb()
                        cell = cells.setdefault((server.name, scenario.key), Cell())
                        cell.add(result, rss, cpu)
                        raw.append(
                            {"run": run, "server": server.name, "scenario": scenario.key, **result}
                        )
                        print(
                            f"# run {run + 1}/{args.repeat} {scenario.key} {server.name}: "
                            f"{result['transfers_per_s']} transfers/s, {result['mb_per_s']} MB/s, "
                            f"failed {result['failed']}, peak RSS {fmt(rss)} MB",
                            flush=True,
                        )
        finally:
            for server in running:
                server.stop()

        print()
        for scenario in wanted:
            print(f"- {scenario.key}: {scenario.title}")
        print()
        order = [(s.name, sc.key) for sc in wanted for s in running]
        print(table(cells, order))
        notes = [f"{s.name}: {s.note}" for s in running if s.note]
        notes += [
            f"{s.name}: peak RSS since start (clear_refs refused)"
            for s in running
            if not s.clear_refs_ok
        ]
        if args.repeat > 1:
            notes.append(f"medians of {args.repeat} runs; failures summed; peak RSS the highest")
        for note in notes:
            print(f"\n_{note}_", end="")
        print()
        names = [s.name for s in running]
        if any(n.startswith("ctftp") for n in names) and any(n in ANCHORS for n in names):
            print("\nctftp against the anchors (issue 8's targets; ratio = ctftp / anchor):\n")
            print(targets(cells, names))
        if args.json:
            args.json.write_text(json.dumps(raw, indent=1) + "\n")
        failed = any(cell.failures for cell in cells.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
