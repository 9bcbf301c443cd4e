"""twistd as users run it: daemon mode with a pidfile, and config mistakes."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._support import (
    fetch,
    free_udp_port,
    probe,
    stop_process,
    twistd_command,
    wait_for,
    write_config,
)
from .conftest import populate

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ctftp_only")]

RUN_TIMEOUT = 30


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/status").read_text()
        if "\nState:\tZ" in status:
            return False
    return True


@contextlib.contextmanager
def reaped(pidfile: Path) -> Iterator[None]:
    """Make sure a daemon left behind by a failing test does not outlive it."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_daemon_mode_pidfile_serve_and_sigterm(tmp_path: Path, payloads: dict[str, bytes]) -> None:
    root = tmp_path / "root"
    populate(root, payloads)
    port = free_udp_port()
    config = write_config(
        tmp_path / "ctftp.conf",
        {"root_dir": str(root), "listeners": f"127.0.0.1:{port}", "log_dir": str(tmp_path)},
    )
    pidfile = tmp_path / "ctftp.pid"
    logfile = tmp_path / "twistd.log"
    argv = [
        *twistd_command(),
        "--pidfile",
        str(pidfile),
        "--logfile",
        str(logfile),
        "ctftp",
        "--config",
        str(config),
    ]
    with reaped(pidfile):
        launched = subprocess.run(
            argv,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        details = (
            f"$ {' '.join(argv)}\nexit {launched.returncode}\n{launched.stdout!r}\n"
            f"{launched.stderr!r}"
        )
        assert launched.returncode == 0, details
        assert wait_for(pidfile.exists, 10), details
        assert wait_for(lambda: pidfile.read_text().strip().isdigit(), 5)
        pid = int(pidfile.read_text().strip())
        assert pid_alive(pid)

        def log() -> str:
            return logfile.read_text(errors="replace") if logfile.exists() else ""

        assert wait_for(lambda: probe("127.0.0.1", port), 10), log()[-3000:]
        assert fetch("127.0.0.1", port, "mib1.bin") == payloads["mib1.bin"]

        os.kill(pid, signal.SIGTERM)
        assert wait_for(lambda: not pid_alive(pid), 10), "the daemon ignored SIGTERM"
        assert not pidfile.exists(), "the pidfile stayed after SIGTERM"
        assert "Traceback" not in log(), log()[-3000:]


def run_twistd_foreground(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*twistd_command(), "-n", "ctftp", "--config", str(config)],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def lines_naming(output: str, *words: str) -> list[str]:
    return [line for line in output.splitlines() if all(word in line for word in words)]


def test_unknown_key_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    config = tmp_path / "bad.conf"
    config.write_text(
        "# a config with a mistake\n"
        "root_dir=root\n"
        f"listeners=127.0.0.1:{free_udp_port()}\n"
        "frobnicate_level=7\n"
    )
    result = run_twistd_foreground(config, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert len(lines_naming(output, "bad.conf:4", "frobnicate_level")) == 1, output


def test_typo_suggests_the_known_key(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    config = tmp_path / "typo.conf"
    config.write_text(f"root_dri=root\nlisteners=127.0.0.1:{free_udp_port()}\n")
    result = run_twistd_foreground(config, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert len(lines_naming(output, "typo.conf:1", "root_dri", "root_dir")) == 1, output


def test_bad_value_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    config = tmp_path / "value.conf"
    config.write_text(f"root_dir=root\nlisteners=127.0.0.1:{free_udp_port()}\ntimeout_sec=soon\n")
    result = run_twistd_foreground(config, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert len(lines_naming(output, "value.conf:3", "timeout_sec")) == 1, output


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    result = run_twistd_foreground(tmp_path / "nowhere.conf", tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert lines_naming(output, "nowhere.conf"), output


@pytest.mark.parametrize("daemon", [False, True], ids=["foreground", "daemon"])
def test_port_in_use_is_one_line_and_twistd_returns(tmp_path: Path, daemon: bool) -> None:
    """In daemon mode too: the command that started twistd must come back
    with an error, not wait for ever for a daemon that has already gone."""
    (tmp_path / "root").mkdir()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        pidfile = tmp_path / "ctftp.pid"
        mode = ["--pidfile", str(pidfile), "--logfile", str(tmp_path / "twistd.log")]
        command = [*twistd_command(), *(mode if daemon else ["-n"]), "ctftp"]
        with reaped(pidfile):
            result = subprocess.run(
                [*command, "--root-dir", "root", "--listeners", f"127.0.0.1:{port}"],
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                check=False,
            )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    assert lines_naming(output, f"cannot listen on 127.0.0.1:{port}: Address already in use")
    if daemon:
        assert not pidfile.exists()
        log = (tmp_path / "twistd.log").read_text()
        assert lines_naming(log, f"cannot listen on 127.0.0.1:{port}: Address already in use")


@pytest.mark.parametrize("logDir", ["a.txt/sub", "taken"], ids=["under-a-file", "log-is-a-folder"])
def test_unusable_log_dir_is_one_line(tmp_path: Path, logDir: str) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "taken" / "ctftp.log").mkdir(parents=True)
    config = tmp_path / "logs.conf"
    config.write_text(f"root_dir=root\nlisteners=127.0.0.1:{free_udp_port()}\nlog_dir={logDir}\n")
    result = run_twistd_foreground(config, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert len(lines_naming(output, "logs.conf:3: log_dir: cannot use")) == 1, output


def free_privileged_port() -> int | None:
    for port in range(600, 1000):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return None


def unprivileged_ids() -> tuple[str, str]:
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to switch to")
    return user.pw_name, grp.getgrgid(user.pw_gid).gr_name


def test_privileged_port_then_unprivileged_user(payloads: dict[str, bytes]) -> None:
    """``twistd --uid/--gid``: the port below 1024 is bound as root, then it serves as nobody."""
    if os.geteuid() != 0:
        pytest.skip("needs root to bind a port below 1024 and switch user")
    user, group = unprivileged_ids()
    port = free_privileged_port()
    if port is None:
        pytest.skip("no free UDP port in 600..999")
    # Not under pytest's tmp_path: its folders are 0700, so nobody could not read them.
    base = Path(tempfile.mkdtemp(prefix="ctftp-it-priv-"))
    try:
        base.chmod(0o755)
        root = base / "root"
        root.mkdir(mode=0o755)
        (root / "b513.bin").write_bytes(payloads["b513.bin"])
        (root / "b513.bin").chmod(0o644)
        config = write_config(
            base / "ctftp.conf",
            {"root_dir": str(root), "listeners": f"127.0.0.1:{port}", "file_log": "false"},
        )
        argv = [*twistd_command(), "--uid", user, "--gid", group, "-n"]
        argv += ["--pidfile", "", "ctftp", "--config", str(config)]
        output = base / "out.txt"
        with output.open("wb") as out:
            proc = subprocess.Popen(
                argv, cwd=base, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            ready = wait_for(lambda: proc.poll() is not None or probe("127.0.0.1", port), 10)
            assert ready and proc.poll() is None, output.read_text(errors="replace")[-3000:]
            status = Path(f"/proc/{proc.pid}/status").read_text()
            uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
            assert set(uids.split()[1:]) == {str(pwd.getpwnam(user).pw_uid)}, uids
            assert fetch("127.0.0.1", port, "b513.bin") == payloads["b513.bin"]
        finally:
            stop_process(proc)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def serve_and_fetch(argv: list[str], cwd: Path, port: int, name: str, expected: bytes) -> str:
    """Start ``argv``, fetch ``name``, stop it; return what it wrote to its output."""
    output = cwd / "out.txt"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        ready = wait_for(lambda: proc.poll() is not None or probe("127.0.0.1", port), 10)
        assert ready and proc.poll() is None, output.read_text(errors="replace")[-3000:]
        assert fetch("127.0.0.1", port, name) == expected
    finally:
        stop_process(proc)
    return output.read_text(errors="replace")


def test_command_line_only_with_short_forms(tmp_path: Path, payloads: dict[str, bytes]) -> None:
    """``twistd -n ctftp --root DIR --listen HOST:PORT``: no config file at all."""
    root = tmp_path / "root"
    populate(root, payloads)
    port = free_udp_port()
    argv = [*twistd_command(), "-n", "--pidfile", "", "ctftp", "--root", str(root)]
    argv += ["--listen", f"127.0.0.1:{port}", "--file-log", "false"]
    output = serve_and_fetch(argv, tmp_path, port, "b512.bin", payloads["b512.bin"])
    # No log_dir: twistd's log (standard output) is the central log, in ctftp's lines.
    stamp = r"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\] \[INFO\] "
    lines = output.splitlines()
    assert lines and all(re.match(stamp, line) for line in lines), output
    assert any(
        re.fullmatch(stamp + r'RRQ from 127\.0\.0\.1:\d+ file="b512\.bin" mode="octet"', line)
        for line in lines
    ), output
    assert any(
        re.fullmatch(
            stamp + r'EVENT type=1 client=127\.0\.0\.1:\d+ file="b512\.bin" bytes=512 '
            r"status=ok msg=transfer_complete",
            line,
        )
        for line in lines
    ), output


def test_ctftp_console_script_with_a_config(tmp_path: Path, payloads: dict[str, bytes]) -> None:
    """``ctftp CONFIG`` is ``twistd -n ctftp --config CONFIG``; the command line still wins."""
    script = Path(sys.executable).with_name("ctftp")
    if not script.exists():
        pytest.skip(f"no ctftp script beside {sys.executable} (package not installed?)")
    root = tmp_path / "root"
    populate(root, payloads)
    port = free_udp_port()
    (tmp_path / "etc").mkdir()
    (tmp_path / "elsewhere").mkdir()
    # root_dir is relative to the config file's folder, not to the current one.
    config = write_config(
        tmp_path / "etc" / "ctftp.conf",
        {
            "root_dir": "../root",
            "listeners": "127.0.0.1:9",
            "file_log": "false",
            "log_format": "json",
        },
    )
    argv = [str(script), str(config), "--listeners", f"127.0.0.1:{port}"]
    output = serve_and_fetch(argv, tmp_path / "elsewhere", port, "b513.bin", payloads["b513.bin"])
    # No log_dir: standard output is the central log, one JSON object a line.
    objects = [json.loads(line) for line in output.splitlines()]
    [ended] = [o["event"] for o in objects if o.get("event", {}).get("type") == 1]
    assert (ended["filename"], ended["bytes"], ended["status"]) == ("b513.bin", 513, "ok")
    assert {o["level"] for o in objects} <= {"INFO", "WARN", "ERROR", "DEBUG"}
