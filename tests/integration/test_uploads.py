"""Uploads (WRQ) from real clients, byte-exact, and the refusals around them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ._support import (
    OP_ACK,
    OP_ERROR,
    SERVER_KIND,
    RawClient,
    Server,
    atftp_put,
    busybox_has_tftp,
    busybox_put,
    curl_put,
    data,
    error,
    hpa_put,
    need,
    run_client,
    start_server,
    wait_for,
    wrq,
)
from .conftest import SIZES, TEXT, ServerFactory

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ctftp_only")]

Put = Callable[[str, int, Path, str], list[str]]

#: client id -> (program, upload command builder)
UPLOADERS: dict[str, tuple[str, Put]] = {
    "tftp-hpa": ("tftp", lambda h, p, f, n: hpa_put(h, p, f, n)),
    "atftp": ("atftp", lambda h, p, f, n: atftp_put(h, p, f, n)),
    "atftp-options": (
        "atftp",
        lambda h, p, f, n: atftp_put(h, p, f, n, ["blksize 1428", "windowsize 4"]),
    ),
    "curl": ("curl", lambda h, p, f, n: curl_put(h, p, f, n)),
    "curl-blksize1428": ("curl", lambda h, p, f, n: curl_put(h, p, f, n, blksize=1428)),
    "busybox": ("busybox", lambda h, p, f, n: busybox_put(h, p, f, n)),
    "busybox-blksize1024": ("busybox", lambda h, p, f, n: busybox_put(h, p, f, n, blksize=1024)),
}


@pytest.fixture(scope="module")
def upload_server(
    tmp_path_factory: pytest.TempPathFactory, ctftp_only_module: None
) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("uploads")
    root = base / "root"
    root.mkdir()
    root.chmod(0o777)
    server = start_server(
        base / "run", root, {"allow_write": "true", "allow_create": "true", "file_log": "false"}
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ctftp_only_module() -> None:
    if SERVER_KIND != "ctftp":
        pytest.skip(f"uploads are tested on ctftp only, not {SERVER_KIND}")


def require_uploader(client_id: str) -> Put:
    program, command = UPLOADERS[client_id]
    need(program)
    if program == "busybox" and not busybox_has_tftp():
        pytest.skip("this busybox has no tftp applet")
    return command


def stray_parts(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".ctftp-part")]


@pytest.mark.parametrize("name", list(SIZES))
@pytest.mark.parametrize("client_id", list(UPLOADERS))
def test_client_uploads_file_byte_exact(
    upload_server: Server,
    payloads: dict[str, bytes],
    tmp_path: Path,
    client_id: str,
    name: str,
) -> None:
    command = require_uploader(client_id)
    local = tmp_path / name
    local.write_bytes(payloads[name])
    remote = f"up-{client_id}-{name}"
    argv = command(upload_server.host, upload_server.port, local, remote)
    if argv[0] == "curl" and not payloads[name]:
        # curl refuses the server's echo of "tsize 0" (see test_clients.py).
        argv.insert(1, "--tftp-no-options")
    result = run_client(argv)
    assert result.returncode == 0, result.describe()
    stored = upload_server.root / remote
    assert stored.exists(), result.describe()
    assert stored.read_bytes() == payloads[name], result.describe()
    assert not stray_parts(upload_server.root)


def test_tftp_hpa_netascii_upload(upload_server: Server, tmp_path: Path) -> None:
    need("tftp")
    local = tmp_path / "text.txt"
    local.write_bytes(TEXT.encode())
    result = run_client(
        hpa_put(upload_server.host, upload_server.port, local, "up-ascii.txt", mode="ascii")
    )
    assert result.returncode == 0, result.describe()
    assert "Error" not in result.stdout + result.stderr, result.describe()
    assert (upload_server.root / "up-ascii.txt").read_bytes() == TEXT.encode()


@pytest.mark.slow
def test_upload_40_mib_at_blksize_512(upload_server: Server, tmp_path: Path) -> None:
    """81,920 blocks: block numbers roll over past 65535 on the way in too."""
    need("curl")
    payload = os.urandom(40 * 1024 * 1024)
    local = tmp_path / "big.bin"
    local.write_bytes(payload)
    argv = curl_put(upload_server.host, upload_server.port, local, "up-big.bin", blksize=512)
    result = run_client(argv, timeout=300)
    assert result.returncode == 0, result.describe()
    assert (upload_server.root / "up-big.bin").read_bytes() == payload


def test_overwrite_keeps_old_content_until_complete(
    upload_server: Server, payloads: dict[str, bytes], tmp_path: Path
) -> None:
    need("curl")
    target = upload_server.root / "replace-me.bin"
    target.write_bytes(b"old content\n")
    local = tmp_path / "new.bin"
    local.write_bytes(payloads["mib1.bin"])
    result = run_client(curl_put(upload_server.host, upload_server.port, local, target.name))
    assert result.returncode == 0, result.describe()
    assert target.read_bytes() == payloads["mib1.bin"]


def test_aborted_upload_leaves_old_file_and_no_part(upload_server: Server) -> None:
    target = upload_server.root / "keep.bin"
    target.write_bytes(b"precious\n")
    with RawClient(upload_server.host, upload_server.port) as client:
        client.send(wrq(target.name))
        packet, tid = client.recv()
        assert (packet.opcode, packet.block) == (OP_ACK, 0), packet
        client.send(data(1, b"x" * 512), tid)
        packet, _ = client.recv()
        assert (packet.opcode, packet.block) == (OP_ACK, 1), packet
        client.send(error(0, "cancelled"), tid)
    assert wait_for(lambda: not stray_parts(upload_server.root), 5), stray_parts(upload_server.root)
    assert target.read_bytes() == b"precious\n"


def test_writes_off_by_default(shared_server: Server, payloads: dict[str, bytes]) -> None:
    with RawClient(shared_server.host, shared_server.port) as client:
        client.send(wrq("b513.bin"))
        packet, _ = client.recv()
    assert (packet.opcode, packet.block) == (OP_ERROR, 4), packet
    assert (shared_server.root / "b513.bin").read_bytes() == payloads["b513.bin"]


def test_no_create_without_allow_create(server_factory: ServerFactory, tmp_path: Path) -> None:
    need("curl")
    server = server_factory(allow_write="true", allow_create="false", file_log="false")
    server.root.chmod(0o777)
    local = tmp_path / "payload.bin"
    local.write_bytes(b"new bytes\n")
    refused = run_client(curl_put(server.host, server.port, local, "brand-new.bin"))
    assert refused.returncode != 0, refused.describe()
    assert not (server.root / "brand-new.bin").exists()
    with RawClient(server.host, server.port) as client:
        client.send(wrq("brand-new.bin"))
        packet, _ = client.recv()
    assert (packet.opcode, packet.block) == (OP_ERROR, 2), packet
    # An existing file may be overwritten.
    accepted = run_client(curl_put(server.host, server.port, local, "b511.bin"))
    assert accepted.returncode == 0, accepted.describe()
    assert (server.root / "b511.bin").read_bytes() == b"new bytes\n"


def test_upload_outside_the_root_is_refused(upload_server: Server, tmp_path: Path) -> None:
    need("curl")
    local = tmp_path / "evil.txt"
    local.write_bytes(b"evil\n")
    argv = curl_put(upload_server.host, upload_server.port, local, "../escaped.txt")
    argv.insert(1, "--path-as-is")
    result = run_client(argv)
    assert result.returncode != 0, result.describe()
    assert not (upload_server.root.parent / "escaped.txt").exists()
