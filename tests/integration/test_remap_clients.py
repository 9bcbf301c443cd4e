"""Remap rules seen by real clients: a rewrite and a deny, and the
``ctftp-remap-test`` command as installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ServerFactory

pytestmark = pytest.mark.integration

RULES = """\
# PXE ROMs: backslashes and a drive letter
rg \\\\ /
ri ^[a-z]:/?(.*) \\1
a ^private/ Private\\ files\\ are\\ not\\ served
"""


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "remap.rules"
    path.write_text(RULES)
    return path


def test_real_clients_see_rewrites_and_denials(
    server_factory: ServerFactory,
    payloads: dict[str, bytes],
    rules: Path,
    tmp_path: Path,
    ctftp_only: None,
) -> None:
    if shutil.which("busybox") is None or shutil.which("curl") is None:
        pytest.skip("busybox or curl missing")
    server = server_factory(remap_file=str(rules))
    (Path(server.root) / "private").mkdir()
    (Path(server.root) / "private" / "key.pem").write_bytes(b"secret")
    out = tmp_path / "pxe.bin"
    done = subprocess.run(
        ["busybox", "tftp", "-g", "-r", "C:\\b513.bin", "-l", str(out),
         server.host, str(server.port)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.read_bytes() == payloads["b513.bin"], done.stderr + done.stdout
    denied = subprocess.run(
        ["curl", "-sS", "--max-time", "20", f"tftp://{server.host}:{server.port}/private/key.pem",
         "-o", str(tmp_path / "key.pem")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert denied.returncode == 69  # CURLE_TFTP_PERM: the server said access violation
    shown = subprocess.run(
        ["busybox", "tftp", "-g", "-r", "private/key.pem", "-l", str(tmp_path / "k2"),
         server.host, str(server.port)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert shown.returncode != 0
    assert "Private files are not served" in shown.stderr
    log = server.central_log.read_text()
    assert 'file="C:\\\\b513.bin" remapped to "b513.bin"' in log
    assert "msg=access_denied" in log


def test_ctftp_remap_test_command(rules: Path) -> None:
    script = Path(sys.executable).parent / "ctftp-remap-test"
    if not script.exists():
        pytest.skip("ctftp-remap-test is not installed beside this Python")
    done = subprocess.run(
        [str(script), str(rules), "--client", "10.1.2.3"],
        input="C:\\boot\\pxelinux.0\nprivate/x\n",
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "C:\\boot\\pxelinux.0 -> boot/pxelinux.0",
        "private/x -> denied: Private files are not served",
    ]
    broken = rules.parent / "broken.rules"
    broken.write_text("r ok fine\nr ([ nope\n")
    done = subprocess.run(
        [str(script), str(broken)], input="", capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert done.stderr.strip().startswith(f"{broken}:2:")
