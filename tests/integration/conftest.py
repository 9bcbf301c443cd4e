"""Fixtures of the integration tests: the server as a subprocess, files to serve.

``CTFTP_IT_SERVER=tftpd-hpa`` runs the same tests against tftpd-hpa (``in.tftpd``)
to check the harness and the client invocations; tests of ctftp-only features
(logs, sidecars, daemon mode, config errors, the plugin) skip under it.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from ._support import SERVER_KIND, GroupClient, Server, start_server

#: name -> size of the files every client fetches.
SIZES = {
    "empty.bin": 0,
    "b511.bin": 511,
    "b512.bin": 512,
    "b513.bin": 513,
    "mib1.bin": 1024 * 1024,
}

TEXT = (
    "# a provisioning file with LF line ends\n"
    + "".join(f"line {i:04d}: key{i}=value{i} \\ tab\there\n" for i in range(300))
    + "bare\rcarriage return and a last line without newline"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: takes more than a few seconds (still in the default run)"
    )


def deterministic_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture(scope="session")
def payloads() -> dict[str, bytes]:
    files = {
        name: deterministic_bytes(size, seed) for seed, (name, size) in enumerate(SIZES.items())
    }
    files["text.txt"] = TEXT.encode()
    return files


def populate(root: Path, payloads: Mapping[str, bytes]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in payloads.items():
        (root / name).write_bytes(data)
        (root / name).chmod(0o644)
    # A secret beside the root, for the traversal tests.
    (root.parent / "secret.txt").write_text("top secret\n")
    root.chmod(0o755)
    root.parent.chmod(0o755)


@pytest.fixture(scope="session")
def shared_server(
    tmp_path_factory: pytest.TempPathFactory, payloads: dict[str, bytes]
) -> Iterator[Server]:
    """One server for the read-only client tests (saves a start per test)."""
    base = tmp_path_factory.mktemp("shared")
    root = base / "root"
    populate(root, payloads)
    server = start_server(base / "run", root)
    try:
        yield server
    finally:
        server.stop()


ServerFactory = Callable[..., Server]


@pytest.fixture
def server_factory(tmp_path: Path, payloads: dict[str, bytes]) -> Iterator[ServerFactory]:
    """``server_factory(key=value, ...)`` starts a server of its own with those config keys."""
    started: list[Server] = []

    def start(root: Path | None = None, **overrides: str) -> Server:
        index = len(started)
        if root is None:
            root = tmp_path / f"srv{index}" / "root"
            populate(root, payloads)
        server = start_server(tmp_path / f"srv{index}" / "run", root, overrides)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def group_clients() -> Iterator[list[GroupClient]]:
    """A list to put hand-made multicast clients in; they are closed at the end."""
    made: list[GroupClient] = []
    yield made
    for client in made:
        client.close()


@pytest.fixture
def multicast_namespace() -> Iterator[str]:
    """A network namespace whose loopback carries multicast (224.0.0.0/4),
    for clients that cannot share a group's port with another socket."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make a network namespace")
    name = f"ctftp-mc-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", name)
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"cannot make a network namespace here: {e}")
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "set", "lo", "multicast", "on")
        _ip("-n", name, "route", "add", "224.0.0.0/4", "dev", "lo")
        yield name
    finally:
        _ip("netns", "del", name)


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


@pytest.fixture
def ctftp_only() -> None:
    if SERVER_KIND != "ctftp":
        pytest.skip(f"tests a ctftp feature; the server under test is {SERVER_KIND}")


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    os.chmod(path, 0o777)
    return path
