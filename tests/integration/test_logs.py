"""The central log ``log_dir/ctftp.log`` and the per-file sidecar ``<file>.log``."""

from __future__ import annotations

import json
import re
import signal
from datetime import datetime
from pathlib import Path

import pytest

from ._support import (
    OP_DATA,
    RawClient,
    Server,
    TftpError,
    ack,
    error,
    fetch,
    rrq,
    wait_for,
)
from .conftest import ServerFactory

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ctftp_only")]

LOG_WAIT = 5.0


def log_text(server: Server) -> str:
    path = server.central_log
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for_log(server: Server, pattern: str) -> re.Match[str]:
    regex = re.compile(pattern, re.MULTILINE)
    found: list[re.Match[str]] = []

    def check() -> bool:
        match = regex.search(log_text(server))
        if match:
            found.append(match)
        return match is not None

    assert wait_for(check, LOG_WAIT), (
        f"no line matching {pattern!r} in {server.central_log}:\n{log_text(server)[-3000:]}"
    )
    return found[0]


def sidecar_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_central_log_and_sidecar_after_a_transfer(
    server_factory: ServerFactory, payloads: dict[str, bytes]
) -> None:
    server = server_factory(file_log="true")
    with RawClient(server.host, server.port) as client:
        assert client.fetch("b513.bin") == payloads["b513.bin"]
        port = client.port
    stamp = r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^\]]*\] \[INFO\] "
    wait_for_log(server, stamp + rf'RRQ from 127\.0\.0\.1:{port} file="b513\.bin" mode="octet"$')
    wait_for_log(
        server,
        rf'EVENT type=0 client=127\.0\.0\.1:{port} file="b513\.bin" bytes=0 '
        r"status=start msg=RRQ received$",
    )
    wait_for_log(
        server,
        stamp + rf'EVENT type=1 client=127\.0\.0\.1:{port} file="b513\.bin" bytes=513 '
        r"status=ok msg=transfer_complete$",
    )

    sidecar = server.root / "b513.bin.log"
    assert wait_for(lambda: sidecar_lines(sidecar), LOG_WAIT), f"no sidecar {sidecar}"
    lines = sidecar_lines(sidecar)
    assert len(lines) == 1, lines
    start, end, ip, client_port, size, status, message = lines[0].split(";")
    assert (ip, client_port, size, status, message) == (
        "127.0.0.1",
        str(port),
        "513",
        "ok",
        "transfer_complete",
    )
    assert lines[0].endswith(";ok;transfer_complete")
    assert datetime.fromisoformat(start) <= datetime.fromisoformat(end)


def test_each_transfer_appends_one_sidecar_line(
    server_factory: ServerFactory, payloads: dict[str, bytes]
) -> None:
    server = server_factory(file_log="true")
    for _ in range(3):
        assert fetch(server.host, server.port, "b512.bin") == payloads["b512.bin"]
    sidecar = server.root / "b512.bin.log"
    assert wait_for(lambda: len(sidecar_lines(sidecar)) == 3, LOG_WAIT), sidecar_lines(sidecar)
    assert all(line.endswith(";512;ok;transfer_complete") for line in sidecar_lines(sidecar))


def test_client_abort_is_an_error_event_and_sidecar_line(server_factory: ServerFactory) -> None:
    server = server_factory(file_log="true")
    with RawClient(server.host, server.port) as client:
        client.send(rrq("mib1.bin"))
        packet, tid = client.recv()
        assert packet.opcode == OP_DATA
        client.send(ack(1), tid)
        client.recv()
        client.send(error(0, "user abort"), tid)
        port = client.port
    wait_for_log(
        server,
        rf'EVENT type=2 client=127\.0\.0\.1:{port} file="mib1\.bin" bytes=\d+ '
        r"status=error msg=client_error$",
    )
    sidecar = server.root / "mib1.bin.log"
    assert wait_for(lambda: sidecar_lines(sidecar), LOG_WAIT), f"no sidecar {sidecar}"
    (line,) = sidecar_lines(sidecar)
    assert line.split(";")[2:4] == ["127.0.0.1", str(port)]
    assert line.endswith(";error;client_error"), line


def test_missing_file_is_logged_without_sidecar(server_factory: ServerFactory) -> None:
    server = server_factory(file_log="true")
    with RawClient(server.host, server.port) as client:
        with pytest.raises(TftpError):
            client.fetch("absent.bin")
        port = client.port
    wait_for_log(
        server,
        rf'EVENT type=2 client=127\.0\.0\.1:{port} file="absent\.bin" bytes=0 '
        r"status=error msg=file_not_found$",
    )
    assert not (server.root / "absent.bin.log").exists()


def test_sidecars_are_never_served(server_factory: ServerFactory) -> None:
    server = server_factory(file_log="true")
    fetch(server.host, server.port, "b511.bin")
    sidecar = server.root / "b511.bin.log"
    assert wait_for(sidecar.exists, LOG_WAIT)
    with pytest.raises(TftpError) as caught:
        fetch(server.host, server.port, "b511.bin.log")
    assert caught.value.code == 2
    assert not (server.root / "b511.bin.log.log").exists()


def test_file_log_off_writes_no_sidecar(
    server_factory: ServerFactory, payloads: dict[str, bytes]
) -> None:
    server = server_factory(file_log="false")
    with RawClient(server.host, server.port) as client:
        assert client.fetch("b511.bin") == payloads["b511.bin"]
        port = client.port
    wait_for_log(server, rf"EVENT type=1 client=127\.0\.0\.1:{port} ")
    assert not (server.root / "b511.bin.log").exists()


def test_json_log_format(server_factory: ServerFactory, payloads: dict[str, bytes]) -> None:
    server = server_factory(log_format="json")
    assert fetch(server.host, server.port, "b511.bin") == payloads["b511.bin"]
    wait_for_log(server, "transfer_complete")
    records = [json.loads(line) for line in log_text(server).splitlines() if line.strip()]
    assert records
    for record in records:
        assert {"time", "level", "message"} <= record.keys(), record
    assert any("transfer_complete" in json.dumps(record) for record in records)


def test_log_file_reopened_on_sighup(
    server_factory: ServerFactory, payloads: dict[str, bytes]
) -> None:
    """What logrotate does: rename the log, SIGHUP, and the next lines go to a new file."""
    server = server_factory()
    fetch(server.host, server.port, "b511.bin")
    wait_for_log(server, 'file="b511.bin".*transfer_complete')
    rotated = server.central_log.with_name("ctftp.log.1")
    server.central_log.rename(rotated)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    # The reopen happens in the reactor thread soon after the signal: retry the transfer
    # until a line shows up in the new file (bounded).
    for _ in range(20):
        assert fetch(server.host, server.port, "b512.bin") == payloads["b512.bin"]
        if wait_for(lambda: "b512.bin" in log_text(server), 0.25):
            break
    wait_for_log(server, 'file="b512.bin".*transfer_complete')
    assert 'file="b511.bin"' in rotated.read_text()
    assert server.proc.poll() is None, "SIGHUP stopped the server"
