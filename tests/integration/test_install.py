"""A real ``pip install .`` into a fresh venv finds the twistd plugin and serves.

The editable install the other tests run from puts ``src/`` on ``sys.path``,
which hides packaging mistakes (a missing ``twisted.plugins`` package, an
``__init__.py`` in ``twisted/plugins``, a missing module). This test installs a
copy of the working tree the way a user does and runs it from that venv only.
Dependencies come from the running environment through a ``.pth`` line, so
only the build itself may need the package index (for setuptools, as any
``pip install .`` does).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from ._support import (
    REPO_ROOT,
    ClientResult,
    fetch,
    free_udp_port,
    probe,
    run_client,
    stop_process,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("ctftp_only")]

IGNORED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "dropin.cache",
    "tests",
    "benchmarks",
    "*.pid",
    "twistd.log",
)


def checked(argv: list[str], timeout: float, cwd: Path | None = None) -> ClientResult:
    result = run_client(argv, timeout=timeout, cwd=cwd)
    assert result.returncode == 0, result.describe()
    return result


@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    shutil.copytree(REPO_ROOT, source, ignore=IGNORED, symlinks=True)
    venv = base / "venv"
    checked([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        run_client(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            timeout=30,
        ).stdout.strip()
    )
    # The running environment's dependencies (Twisted, treq, ...), appended after the
    # fresh venv's own site-packages; its .pth files (the editable ctftp) are not read.
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_test_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(paths)))
    install = run_client(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-input", str(source)],
        timeout=300,
    )
    if install.returncode != 0 and "No matching distribution found for" in install.stderr:
        # Only the isolated build's own requirements (setuptools, wheel) come from the
        # index; without one, this is an environment without packages, not a bug.
        pytest.skip("pip cannot reach a package index for the build requirements")
    assert install.returncode == 0, install.describe()
    twistd = venv / "bin" / "twistd"
    if not twistd.exists():
        # Twisted came in through the .pth line, not pip: write the console script
        # pip would have made for its ``twistd`` entry point.
        twistd.write_text(
            f"#!{python}\nimport sys\nfrom twisted.scripts.twistd import run\nsys.exit(run())\n"
        )
        twistd.chmod(0o755)
    return venv


def test_plugin_found_through_getplugins(installed_venv: Path) -> None:
    python = installed_venv / "bin" / "python"
    script = textwrap.dedent(
        """
        from twisted.application.service import IServiceMaker
        from twisted.plugin import getPlugins
        from twisted import plugins
        import ctftp, ctftp.tap
        names = sorted(p.tapname for p in getPlugins(IServiceMaker, plugins))
        print("tapnames", " ".join(names))
        print("ctftp", ctftp.__file__)
        print("tap", ctftp.tap.__file__)
        """
    )
    result = checked([str(python), "-c", script], timeout=60, cwd=installed_venv)
    fields = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert "ctftp" in fields["tapnames"].split(), result.describe()
    assert fields["ctftp"].startswith(str(installed_venv)), "ctftp not imported from the venv"
    assert fields["tap"].startswith(str(installed_venv)), result.describe()
    plugin_dir = next(installed_venv.glob("lib/python*/site-packages/twisted/plugins"))
    assert (plugin_dir / "ctftp_plugin.py").exists()
    assert not (plugin_dir / "__init__.py").exists(), "twisted/plugins must stay a namespace"


def test_twistd_ctftp_help(installed_venv: Path) -> None:
    result = checked(
        [str(installed_venv / "bin" / "twistd"), "ctftp", "--help"], timeout=60, cwd=installed_venv
    )
    for option in ("--config", "--root-dir", "--listeners", "--timeout-sec"):
        assert option in result.stdout, result.describe()


def test_console_script_help(installed_venv: Path) -> None:
    result = checked([str(installed_venv / "bin" / "ctftp"), "--help"], timeout=60)
    assert "ctftp" in result.stdout


def test_example_config_serves_the_samples(installed_venv: Path) -> None:
    """``twistd -n ctftp --config ctftp.conf.example`` from the installed package.

    The listener is moved to a free port by the command line (which wins over the
    file), so a busy 6969 cannot fail the test.
    """
    example = REPO_ROOT / "ctftp.conf.example"
    samples = REPO_ROOT / "samples"
    if not example.exists():
        pytest.fail("ctftp.conf.example is missing from the repository root")
    sample = next((p for p in sorted(samples.iterdir()) if p.is_file()), None)
    assert sample is not None, "samples/ has no file"
    port = free_udp_port()
    workdir = installed_venv.parent / "run-example"
    workdir.mkdir(exist_ok=True)
    argv = [
        str(installed_venv / "bin" / "twistd"),
        "-n",
        "--pidfile",
        str(workdir / "twistd.pid"),
        "ctftp",
        "--config",
        str(example),
        "--listeners",
        f"127.0.0.1:{port}",
        "--file-log",
        "false",
    ]
    output = workdir / "out.txt"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        ready = wait_for(lambda: proc.poll() is not None or probe("127.0.0.1", port), 10)
        assert ready and proc.poll() is None, output.read_text(errors="replace")[-3000:]
        assert fetch("127.0.0.1", port, sample.name) == sample.read_bytes()
    finally:
        stop_process(proc)
