"""Config knobs and protocol policies seen from a real socket against the real server."""

from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path

import pytest

from ._support import (
    OP_DATA,
    OP_ERROR,
    OP_OACK,
    RawClient,
    Server,
    TftpError,
    ack,
    error,
    fetch,
    free_udp_port,
    rrq,
    wait_for,
)
from .conftest import ServerFactory

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ctftp_only")]


def test_silent_client_gets_one_plus_max_retries_sends_then_timeout(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(timeout_sec="0.3", max_retries="2", file_log="true")
    with RawClient(server.host, server.port) as client:
        client.send(rrq("b513.bin"))
        got = client.drain(1.0)
        port = client.port
    data = [p for p, _ in got if p.opcode == OP_DATA]
    assert [p.block for p in data] == [1, 1, 1], got  # 1 + max_retries
    assert len({source for _, source in got}) == 1
    log = server.central_log

    def logged() -> bool:
        text = log.read_text() if log.exists() else ""
        return bool(
            re.search(
                rf'EVENT type=2 client=127\.0\.0\.1:{port} file="b513\.bin" bytes=0 '
                r"status=error msg=timeout",
                text,
            )
        )

    assert wait_for(logged, 5), log.read_text() if log.exists() else "no log"
    sidecar = server.root / "b513.bin.log"
    assert wait_for(sidecar.exists, 5)
    assert sidecar.read_text().strip().endswith(";error;timeout")


def test_port_range_is_used_for_transfers(
    server_factory: ServerFactory, payloads: dict[str, bytes]
) -> None:
    low = None
    for _ in range(20):
        base = free_udp_port()
        if base < 65000:
            low = base
            break
    assert low is not None
    high = low + 9
    server = server_factory(port_range=f"{low}:{high}")
    seen = set()
    for _ in range(5):
        with RawClient(server.host, server.port) as client:
            client.send(rrq("b511.bin"))
            packet, tid = client.recv()
            assert packet.opcode == OP_DATA and packet.payload == payloads["b511.bin"]
            client.send(ack(1), tid)
            seen.add(tid[1])
    assert all(low <= port <= high for port in seen), (low, high, seen)


def test_max_connections_leaves_the_extra_request_unanswered(
    server_factory: ServerFactory, payloads: dict[str, bytes]
) -> None:
    server = server_factory(max_connections="1", timeout_sec="2")
    with RawClient(server.host, server.port) as first:
        first.send(rrq("mib1.bin"))
        packet, tid = first.recv()
        assert packet.opcode == OP_DATA
        with RawClient(server.host, server.port) as second:
            second.send(rrq("b512.bin"))
            assert second.drain(0.5) == [], "a request past max_connections was answered"
            # The first transfer ends (client error), then the retry is served.
            first.send(error(0, "done"), tid)
            assert wait_for(
                lambda: _served(server.host, server.port, "b512.bin", payloads["b512.bin"]), 5
            )


def _served(host: str, port: int, name: str, expected: bytes) -> bool:
    try:
        return fetch(host, port, name) == expected
    except (TimeoutError, TftpError):
        return False


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"blksize": "8192"}, {"blksize": "1024"}),
        ({"blksize": "600", "tsize": "0"}, {"blksize": "600"}),
    ],
)
def test_max_blksize_and_refuse_options(
    server_factory: ServerFactory,
    payloads: dict[str, bytes],
    options: dict[str, str],
    expected: dict[str, str],
) -> None:
    server = server_factory(max_blksize="1024", refuse_options="tsize")
    with RawClient(server.host, server.port) as client:
        client.send(rrq("mib1.bin", options=options))
        packet, _ = client.recv()
        assert packet.opcode == OP_OACK and packet.options == expected, packet
    got = fetch(server.host, server.port, "mib1.bin", options=options)
    assert got == payloads["mib1.bin"]


def test_options_off_means_no_oack(server_factory: ServerFactory) -> None:
    server = server_factory(options="false")
    with RawClient(server.host, server.port) as client:
        client.send(rrq("b513.bin", options={"blksize": "1428", "tsize": "0"}))
        packet, _ = client.recv()
        assert packet.opcode == OP_DATA and packet.block == 1 and len(packet.payload) == 512


@pytest.mark.parametrize(
    "options",
    [{"blksize": "4"}, {"blksize": "65465"}, {"timeout": "0"}, {"windowsize": "0"}],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_out_of_range_option_is_error_8(shared_server: Server, options: dict[str, str]) -> None:
    with RawClient(shared_server.host, shared_server.port) as client:
        client.send(rrq("b513.bin", options=options))
        packet, _ = client.recv()
    assert (packet.opcode, packet.block) == (OP_ERROR, 8), packet


def test_pxe_tsize_probe_then_real_request(
    shared_server: Server, payloads: dict[str, bytes]
) -> None:
    """PXE ROMs ask with tsize, answer the OACK with ERROR 8, then ask again.

    The second RRQ follows the ERROR at once, as ROMs send it; like them the
    client sends it again if no answer comes within half a second.
    """
    with RawClient(shared_server.host, shared_server.port) as client:
        client.send(rrq("mib1.bin", options={"tsize": "0", "blksize": "1456"}))
        packet, tid = client.recv()
        assert packet.opcode == OP_OACK and packet.options["tsize"] == str(1024 * 1024)
        client.send(error(8, "tsize probe done"), tid)
        got = client.fetch("mib1.bin", options={"blksize": "1456"}, resend_request=0.5)
    assert got == payloads["mib1.bin"]


def test_folder_is_error_2(shared_server: Server) -> None:
    (shared_server.root / "adir").mkdir(exist_ok=True)
    with pytest.raises(TftpError) as caught:
        fetch(shared_server.host, shared_server.port, "adir")
    assert caught.value.code == 2


def test_fifo_does_not_block_the_server(shared_server: Server, payloads: dict[str, bytes]) -> None:
    fifo = shared_server.root / "a.fifo"
    if not fifo.exists():
        os.mkfifo(fifo, 0o644)
    outcome: list[BaseException | None] = []

    def ask() -> None:
        try:
            fetch(shared_server.host, shared_server.port, "a.fifo")
            outcome.append(None)
        except (TftpError, TimeoutError) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    # Meanwhile everyone else is served.
    assert fetch(shared_server.host, shared_server.port, "b511.bin") == payloads["b511.bin"]
    thread.join(10)
    assert outcome and isinstance(outcome[0], TftpError) and outcome[0].code == 2, outcome


def test_require_world_readable(server_factory: ServerFactory) -> None:
    server = server_factory(require_world_readable="true")
    private = server.root / "private.bin"
    private.write_bytes(b"x" * 100)
    private.chmod(0o640)
    with pytest.raises(TftpError) as caught:
        fetch(server.host, server.port, "private.bin")
    assert caught.value.code == 2
    private.chmod(0o644)
    assert fetch(server.host, server.port, "private.bin") == b"x" * 100


def test_unknown_mode_is_error_4(shared_server: Server) -> None:
    for mode in ("mail", "bogus"):
        with RawClient(shared_server.host, shared_server.port) as client:
            client.send(rrq("b511.bin", mode=mode))
            packet, _ = client.recv()
            assert (packet.opcode, packet.block) == (OP_ERROR, 4), (mode, packet)


def test_garbage_gets_error_or_silence_and_the_server_goes_on(
    shared_server: Server, payloads: dict[str, bytes]
) -> None:
    junk = [b"", b"\x00", b"\x00\x01", b"\x00\x01name", b"\x00\x09abc\x00", b"\xff" * 600]
    with RawClient(shared_server.host, shared_server.port) as client:
        for packet in junk:
            client.send(packet)
        answers = client.drain(0.3)
    assert all(p.opcode == OP_ERROR for p, _ in answers), answers
    assert fetch(shared_server.host, shared_server.port, "b513.bin") == payloads["b513.bin"]


def test_remap_file_with_real_client_and_reload_on_sighup(
    server_factory: ServerFactory, payloads: dict[str, bytes], tmp_path: Path
) -> None:
    """Phones ask for SEP<MAC>.cnf.xml; a tftp-hpa rule serves one default file."""
    rules = tmp_path / "remap.rules"
    rules.write_text("# phones share one config\nri ^SEP[0-9a-f]{12}\\.cnf\\.xml$ b513.bin\n")
    server = server_factory(remap_file=str(rules))
    name = "SEP001122AABBCC.cnf.xml"
    assert fetch(server.host, server.port, name) == payloads["b513.bin"]
    assert fetch(server.host, server.port, name.lower()) == payloads["b513.bin"]
    # A new rule set takes effect on SIGHUP; a broken one is refused and the old stays.
    rules.write_text("r ^SEP[0-9A-F]{12}\\.cnf\\.xml$ b511.bin\n")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: _served(server.host, server.port, name, payloads["b511.bin"]), 5)
    rules.write_text("r (unclosed b512.bin\n")
    server.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: f"{rules}:1" in server.central_log.read_text(), 5), (
        "no log line naming the broken rule file"
    )
    assert fetch(server.host, server.port, name) == payloads["b511.bin"]
    assert server.proc.poll() is None
