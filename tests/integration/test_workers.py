"""``workers=N``: real worker processes sharing listeners, a storm, a killed worker.

Until ``makeService`` runs a supervisor for ``workers=2``, the server runs
from a small launcher that builds the same tree by hand (``makeService`` with
its listeners replaced by :class:`ctftp.workers.WorkerSupervisor`); once it
is wired, the same tests run ``twistd -n ctftp`` with ``workers=2``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from ctftp.config import KEYS, ServerConfig
from ctftp.workers import (
    WorkerSupervisor,
    _Worker,
    bindReusePort,
    configFromJSON,
    configToJSON,
)

from ._support import (
    fetch,
    free_udp_port,
    probe,
    stop_process,
    twistd_command,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ctftp_only")]


#: The C load generator of ../shared/bench when built; a Python client otherwise.
TFTPLOAD = Path(
    os.environ.get(
        "CTFTP_TFTPLOAD", Path(__file__).resolve().parents[2].parent / "shared/bench/tftpload"
    )
)
NAMES = 20
SIZE = 4096


# -- the configuration crosses the process boundary intact -------------------------------


def test_config_json_round_trip(tmp_path: Path) -> None:
    other = tmp_path / "second"
    other.mkdir()
    config = ServerConfig(
        root_dir=[str(tmp_path), str(other)],
        log_dir=str(tmp_path / "logs"),
        listeners="127.0.0.1:6969, [::1]:6969",
        timeout_sec=0.25,
        max_retries=2,
        log_level="debug",
        log_format="json",
        file_log=False,
        max_blksize=1428,
        refuse_options="tsize, windowsize",
        options=False,
        port_range=(40000, 40100),
        max_connections=7,
        require_world_readable=True,
    )
    text = configToJSON(config)
    assert json.loads(text)["listeners"] == [["127.0.0.1", 6969], ["::1", 6969]]
    assert configFromJSON(text) == config
    extra = {"allow_clients": "10.0.0.0/8, 2001:db8::/32", "deny_clients": "10.1.2.3"}
    extra.update({"workers": "4", "systemd": "true"})
    present = {key: value for key, value in extra.items() if key in KEYS}
    if present:  # the keys of this issue, once wired into ServerConfig
        withKeys = ServerConfig.fromStrings({"root_dir": str(tmp_path), **present})
        assert configFromJSON(configToJSON(withKeys)) == withKeys
    default = ServerConfig(root_dir=str(tmp_path))
    assert configFromJSON(configToJSON(default)) == default


def test_bind_reuse_port_ipv6_only_beside_ipv4() -> None:
    four = bindReusePort("0.0.0.0", 0, 2)
    port = four[0].getsockname()[1]
    try:
        try:
            six = bindReusePort("::", port, 2, v6only=True)
        except CannotListenError as e:
            if "Address family" in str(e) or "not supported" in str(e):
                pytest.skip("no IPv6")
            raise
        for s in six:
            assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
            s.close()
    finally:
        for s in four:
            s.close()


def test_bind_reuse_port_group() -> None:
    sockets = bindReusePort("127.0.0.1", 0, 3)
    try:
        ports = {s.getsockname()[1] for s in sockets}
        assert len(sockets) == 3 and len(ports) == 1
        assert all(not s.getblocking() for s in sockets)
    finally:
        for s in sockets:
            s.close()


def test_worker_log_file_falls_back_to_the_supervisors_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ctftp.workers import _WorkerLogFile

    inherited = os.open(tmp_path / "held.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    monkeypatch.setattr(_WorkerLogFile, "inherited", inherited)
    try:
        byPath = _WorkerLogFile(str(tmp_path / "ctftp.log"))
        byPath.write("by path\n")
        byPath.close()
        assert (tmp_path / "ctftp.log").read_text() == "by path\n"
        (tmp_path / "blocked").mkdir()  # opening it for writing fails, as EACCES would
        fallback = _WorkerLogFile(str(tmp_path / "blocked"))
        fallback.write("through the descriptor\n")
        fallback.reopen()  # SIGHUP: still failing by path, still writing
        fallback.write("after reopen\n")
        fallback.close()
        assert (tmp_path / "held.log").read_text() == "through the descriptor\nafter reopen\n"
    finally:
        os.close(inherited)
    monkeypatch.setattr(_WorkerLogFile, "inherited", None)
    with pytest.raises(OSError):
        _WorkerLogFile(str(tmp_path / "blocked"))


# -- the supervisor's process handling, with stand-in workers ------------------------------


@pytest.fixture
def quietSupervisor(tmp_path: Path) -> Iterator[list[WorkerSupervisor]]:
    made: list[WorkerSupervisor] = []
    yield made
    for supervisor in made:
        for worker in supervisor.workers:
            if worker.pid is not None:
                os.kill(worker.pid, signal.SIGKILL)


def _config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(root_dir=str(tmp_path), listeners=f"127.0.0.1:{free_udp_port()}")


def _logged(events: list[dict[str, Any]], start: str) -> list[dict[str, Any]]:
    return [e for e in events if str(e.get("log_format", "")).startswith(start)]


@pytest.fixture
def supervisorEvents() -> Iterator[list[dict[str, Any]]]:
    from ctftp import logs

    seen: list[dict[str, Any]] = []
    logs.publisher.addObserver(seen.append)
    yield seen
    logs.publisher.removeObserver(seen.append)


def test_relayed_worker_lines_keep_their_level(tmp_path: Path) -> None:
    """``[LEVEL] message`` from a worker's stderr is logged at that level as
    ``worker K: message``; a traceback's lines keep the level before them."""
    supervisor = WorkerSupervisor(_config(tmp_path), reactor, 1)
    worker = _Worker(supervisor, 2, [])
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        for line in (
            '[INFO] RRQ from 127.0.0.1:1 file="a" mode="octet"\r',
            "[ERROR] Unhandled error",
            "Traceback (most recent call last):",
            "",
            "[WARN] cannot write sidecar",
            "no level at all",
        ):
            supervisor._relay(worker, line)
    finally:
        globalLogPublisher.removeObserver(seen.append)
    relayed = [
        (e["log_level"], formatEvent(e)) for e in seen if e.get("log_namespace") == "ctftp.workers"
    ]
    assert relayed == [
        (LogLevel.info, 'worker 2: RRQ from 127.0.0.1:1 file="a" mode="octet"'),
        (LogLevel.error, "worker 2: Unhandled error"),
        (LogLevel.error, "worker 2: Traceback (most recent call last):"),
        (LogLevel.warn, "worker 2: cannot write sidecar"),
        (LogLevel.warn, "worker 2: no level at all"),
    ]


@pytest_twisted.inlineCallbacks
def test_crash_loop_backs_off(
    tmp_path: Path, quietSupervisor: list[WorkerSupervisor], supervisorEvents: list[dict[str, Any]]
) -> Any:
    supervisor = WorkerSupervisor(_config(tmp_path), reactor, 2, python=shutil.which("false"))
    supervisor.restartDelay = 0.1
    quietSupervisor.append(supervisor)
    supervisor.privilegedStartService()
    supervisor.startService()
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline and len(_logged(supervisorEvents, "worker {number} (pid")) < 8
    ):
        yield _sleep(0.05)
    yield supervisor.stopService()
    died = _logged(supervisorEvents, "worker {number} (pid {pid}) died")
    assert len(died) >= 8
    assert all(e["status"] == "exit status 1" for e in died)
    delays = [e["delay"] for e in died if e["number"] == 1]
    assert delays[:3] == [0.1, 0.2, 0.4]  # doubling while it keeps dying at once
    assert supervisor.workers == []  # all ended, sockets closed


@pytest_twisted.inlineCallbacks
def test_stop_kills_a_worker_that_ignores_sigterm(
    tmp_path: Path, quietSupervisor: list[WorkerSupervisor], supervisorEvents: list[dict[str, Any]]
) -> Any:
    stubborn = tmp_path / "stubborn"
    stubborn.write_text("#!/bin/sh\ntrap '' TERM\nexec sleep 60\n")
    stubborn.chmod(0o755)
    supervisor = WorkerSupervisor(_config(tmp_path), reactor, 1, python=str(stubborn))
    supervisor.stopTimeout = 0.5
    quietSupervisor.append(supervisor)
    supervisor.privilegedStartService()
    supervisor.startService()
    yield _sleep(0.3)
    pid = supervisor.workers[0].pid
    assert pid is not None
    started = time.monotonic()
    yield supervisor.stopService()
    assert time.monotonic() - started < 5
    assert _logged(supervisorEvents, "worker {number} (pid {pid}) ignored SIGTERM")
    ended = _logged(supervisorEvents, "worker {number} (pid {pid}) ended")
    assert ended and ended[0]["status"] == "killed by signal 9 (SIGKILL)"


def _sleep(seconds: float) -> Any:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


# -- the real thing: two worker processes under a storm --------------------------------------


class Running:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, logDir: Path, out: Path) -> None:
        self.proc = proc
        self.port = port
        self.logDir = logDir
        self.out = out

    def events(self) -> list[dict[str, Any]]:
        path = self.logDir / "ctftp.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def servingPids(self) -> dict[int, int]:
        """worker number -> pid of its latest ``worker K serving`` line."""
        pids: dict[int, int] = {}
        for event in self.events():
            if event["message"].startswith("worker ") and " serving (pid " in event["message"]:
                pids[event["worker"]] = event["pid"]
        return pids

    def endedPerWorker(self) -> collections.Counter[int]:
        """Transfers of the storm files that ended, per worker.

        Ended, not only ``ok``: a client that reuses its port for the next
        request right after its final ACK (tftpload does) may have that RRQ
        read before the ACK, and the server then ends the finished transfer
        as ``aborted`` though the client has every byte; the client's own
        count of failures is what says the storm succeeded.
        """
        return collections.Counter(
            e["worker"]
            for e in self.events()
            if e["message"].startswith(("EVENT type=1 ", "EVENT type=2 "))
            and 'file="SEP' in e["message"]
        )


@pytest.fixture
def workersServer(tmp_path: Path) -> Iterator[Running]:
    root = tmp_path / "root"
    root.mkdir()
    for i in range(NAMES):
        (root / f"SEP{i:012d}.cnf.xml").write_bytes(bytes([i]) * SIZE)
    logDir = tmp_path / "logs"
    port = free_udp_port()
    config = {
        "root_dir": str(root),
        "log_dir": str(logDir),
        "listeners": f"127.0.0.1:{port}",
        "log_format": "json",
        "timeout_sec": "1",
        "workers": "2",
    }
    path = write_config(tmp_path / "ctftp.conf", config)
    cmd = [*twistd_command(), "-n", "--pidfile", str(tmp_path / "twistd.pid"), "ctftp"]
    cmd += ["--config", str(path)]
    out = tmp_path / "server.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT)
    running = Running(proc, port, logDir, out)
    try:
        ready = wait_for(lambda: len(running.servingPids()) == 2, timeout=20)
        assert ready, f"workers did not start:\n{out.read_text()[-3000:]}"
        assert wait_for(lambda: probe("127.0.0.1", port), timeout=10)
        yield running
    finally:
        pids = list(running.servingPids().values())
        stop_process(proc)
        for pid in pids:  # nothing may outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def storm(port: int, total: int) -> dict[str, Any]:
    """``total`` transfers, 50 at a time: tftpload when built, else Python clients."""
    if TFTPLOAD.exists() and os.access(TFTPLOAD, os.X_OK):
        result = subprocess.run(
            [
                str(TFTPLOAD),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--file",
                "SEP%012d.cnf.xml",
                "--name-count",
                str(NAMES),
                "--total",
                str(total),
                "--concurrency",
                "50",
                "--duration-limit",
                "60",
            ],
            capture_output=True,
            timeout=90,
            check=False,
        )
        report = json.loads(result.stdout.decode().strip().splitlines()[-1])
        return {"ok": report["ok"], "failed": report["failed"], "reasons": report["fail_reasons"]}

    def one(index: int) -> bool:
        i = index % NAMES
        return fetch("127.0.0.1", port, f"SEP{i:012d}.cnf.xml") == bytes([i]) * SIZE

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(total), timeout=90))
    return {"ok": sum(results), "failed": total - sum(results), "reasons": {}}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except OSError:
        return False


def test_storm_spreads_over_both_workers_and_survives_a_killed_worker(
    workersServer: Running, tmp_path: Path
) -> None:
    server = workersServer
    result = storm(server.port, 200)
    assert result == {"ok": 200, "failed": 0, "reasons": {}}
    assert wait_for(lambda: sum(server.endedPerWorker().values()) == 200, timeout=10)
    perWorker = server.endedPerWorker()
    assert set(perWorker) == {1, 2}, perWorker  # both processes served
    assert all(count >= 20 for count in perWorker.values()), perWorker

    # Every log line is whole (each parsed as JSON above); every sidecar line too.
    sidecarLines = []
    for sidecar in (tmp_path / "root").glob("*.log"):
        sidecarLines += sidecar.read_text().splitlines()
    assert len(sidecarLines) == 200
    assert all(len(line.split(";")) == 7 for line in sidecarLines)
    assert all(line.split(";")[4] == str(SIZE) for line in sidecarLines)  # every byte acked

    # Kill worker 1: service goes on, and it is restarted.
    before = server.servingPids()
    victim = before[1]
    os.kill(victim, signal.SIGKILL)
    assert fetch("127.0.0.1", server.port, "SEP000000000003.cnf.xml") == bytes([3]) * SIZE
    assert wait_for(lambda: server.servingPids().get(1, victim) != victim, timeout=15)
    died = [e for e in server.events() if " died: " in e["message"]]
    assert len(died) == 1
    assert died[0]["number"] == 1 and died[0]["pid"] == victim
    assert died[0]["status"] == "killed by signal 9 (SIGKILL)"
    assert "worker 1 (pid" in died[0]["message"] and died[0]["level"] == "ERROR"

    result = storm(server.port, 100)
    assert result == {"ok": 100, "failed": 0, "reasons": {}}
    assert wait_for(lambda: sum(server.endedPerWorker().values()) == 301, timeout=10)

    # SIGHUP reaches every worker (each reopens its log).
    os.kill(server.proc.pid, signal.SIGHUP)
    assert wait_for(
        lambda: (
            {
                e.get("worker")
                for e in server.events()
                if e["message"] == "SIGHUP: log files reopened"
            }
            >= {1, 2}
        ),
        timeout=10,
    )

    # SIGTERM stops everything, cleanly.
    after = server.servingPids()
    # twistd ends itself with the signal it stopped on; the launcher exits 0.
    assert stop_process(server.proc) in (0, -signal.SIGTERM)
    assert wait_for(lambda: not any(_alive(pid) for pid in after.values()), timeout=10)
    stopped = [e for e in server.events() if " stopping (pid " in e["message"]]
    assert {e["worker"] for e in stopped} == {1, 2}
    assert sum(e["ok"] for e in stopped) >= 100  # the restarted worker's share and worker 2's
