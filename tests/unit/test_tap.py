"""ctftp.tap: the twistd options, the plugin, and the ``ctftp`` console script."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IServiceMaker
from twisted.logger import LogLevel
from twisted.plugin import getPlugins

from ctftp import tap
from ctftp.config import KEYS, ServerConfig


@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "srv"
    served.mkdir()
    return served


def parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def oneLineFailure(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Parse ``argv``, expecting exit status 2 and exactly one line on stderr."""
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1
    assert err.startswith("ctftp: ")
    return err.rstrip("\n")


def test_every_key_is_an_option(root: Path) -> None:
    options = tap.Options()
    longs = {param[0] for param in options.optParameters}
    for name in KEYS:
        assert name.replace("_", "-") in longs
    assert {"config", "root", "listen"} <= longs


def test_command_line_only(root: Path) -> None:
    options = parse("--root-dir", str(root), "--listeners", "127.0.0.1:6969,[::1]:0")
    assert options.config == ServerConfig(
        root_dir=(str(root),), listeners=(("127.0.0.1", 6969), ("::1", 0))
    )


def test_every_option_reaches_the_config(root: Path, tmp_path: Path) -> None:
    options = parse(
        "--root-dir", str(root),
        "--log-dir", str(tmp_path / "logs"),
        "--listeners", "127.0.0.1:1",
        "--timeout-sec", "0.5",
        "--max-retries", "0",
        "--log-level", "debug",
        "--log-format", "json",
        "--file-log", "no",
        "--max-blksize", "1428",
        "--refuse-options", "tsize",
        "--options", "off",
        "--port-range", "5000:5010",
        "--max-connections", "7",
        "--require-world-readable", "yes",
    )  # fmt: skip
    assert options.config == ServerConfig(
        root_dir=(str(root),),
        log_dir=str(tmp_path / "logs"),
        listeners=(("127.0.0.1", 1),),
        timeout_sec=0.5,
        max_retries=0,
        log_level="debug",
        log_format="json",
        file_log=False,
        max_blksize=1428,
        refuse_options=frozenset({"tsize"}),
        options=False,
        port_range=(5000, 5010),
        max_connections=7,
        require_world_readable=True,
    )


def test_short_forms(root: Path) -> None:
    options = parse("--root", str(root), "--listen", "[::1]:6969")
    assert options.config.root_dir == (str(root),)
    assert options.config.listeners == (("::1", 6969),)


def test_short_and_long_form_agreeing(root: Path) -> None:
    options = parse("--root", str(root), "--root-dir", str(root))
    assert options.config.root_dir == (str(root),)


def test_short_and_long_form_conflicting(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = oneLineFailure(capsys, "--root", str(root), "--root-dir", str(tmp_path))
    assert line == "ctftp: command line: --root: conflicts with --root-dir; give one"


def test_config_file_and_overrides(root: Path, tmp_path: Path) -> None:
    conf = tmp_path / "ctftp.conf"
    conf.write_text("root_dir=srv\nlisteners=127.0.0.1:69\ntimeout_sec=9\nmax_retries=2\n")
    options = parse("--config", str(conf), "--timeout-sec", "1", "--listen", "127.0.0.1:6969")
    config = options.config
    assert config.root_dir == (str(root),)  # from the file, relative to it
    assert config.timeout_sec == 1.0  # the command line wins
    assert config.listeners == (("127.0.0.1", 6969),)
    assert config.max_retries == 2  # not given on the command line: the file's
    assert config.source == str(conf)


def test_short_config_flag(root: Path, tmp_path: Path) -> None:
    conf = tmp_path / "ctftp.conf"
    conf.write_text("root_dir=srv\n")
    assert parse("-c", str(conf)).config.root_dir == (str(root),)


def test_bad_value_is_one_line_and_status_2(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = oneLineFailure(capsys, "--root-dir", str(root), "--timeout-sec", "abc")
    assert line == (
        "ctftp: command line: --timeout-sec: expected a number of seconds greater than 0, got 'abc'"
    )


def test_bad_file_value_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "ctftp.conf"
    conf.write_text("root_dir=missing\n")
    line = oneLineFailure(capsys, "--config", str(conf))
    assert line == (
        f"ctftp: {conf}:1: root_dir: expected an existing folder (relative to {tmp_path}),"
        " got 'missing'"
    )


def test_missing_root(capsys: pytest.CaptureFixture[str]) -> None:
    line = oneLineFailure(capsys, "--listeners", "127.0.0.1:6969")
    assert (
        line
        == "ctftp: command line: --root-dir: required option is missing (or give --config FILE)"
    )


def test_unknown_option_suggests(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = oneLineFailure(capsys, "--root", str(root), "--timeout-secs", "3")
    assert line == (
        "ctftp: command line: unknown option '--timeout-secs' (did you mean '--timeout-sec'?)"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--root-d", "R"], "unknown option '--root-d' (did you mean '--root-dir'?)"),
        (
            ["--root", "R", "--allow_write", "true"],
            "unknown option '--allow_write' (did you mean '--allow-write'?)",
        ),
        (["--root=R", "--time=3"], "unknown option '--time' (did you mean '--timeout-sec'?)"),
        (["--root", "R", "--zzzz", "1"], "unknown option '--zzzz'"),
        (
            ["--root", "R", "--allow-write", "--listen", "127.0.0.1:6969"],
            "option --allow-write requires a value, got the option '--listen'",
        ),
        (
            ["--root", "R", "--allow-write", "--systemd=false"],
            "option --allow-write requires a value, got the option '--systemd=false'",
        ),
    ],
)
def test_option_names_must_be_exact(
    root: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    """getopt would take a unique prefix, hint nothing for underscores, and
    take the next option as a missing value."""
    args = [str(root) if a == "R" else a.replace("=R", f"={root}") for a in argv]
    assert oneLineFailure(capsys, *args) == f"ctftp: command line: {expected}"


def test_values_that_look_like_options_are_still_values(root: Path) -> None:
    """Only a value naming one of ctftp's options is taken for a missing one."""
    conf = root.parent / "short.conf"
    conf.write_text(f"root_dir={root}\n")
    options = parse("-c", str(conf), "--refuse-options", "-x")
    assert options.config.refuse_options == frozenset({"-x"})


def test_mtftp_file_option_missing(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = oneLineFailure(capsys, "--root", str(root), "--mtftp-file", "/no/mtftp.conf")
    assert line == (
        "ctftp: command line: --mtftp-file: expected an existing file, got '/no/mtftp.conf'"
    )


def test_option_without_value(capsys: pytest.CaptureFixture[str]) -> None:
    line = oneLineFailure(capsys, "--root-dir")
    assert line == "ctftp: command line: option --root-dir requires argument"


def test_plugin_is_found() -> None:
    makers = [maker for maker in getPlugins(IServiceMaker) if maker.tapname == "ctftp"]
    assert len(makers) == 1
    assert makers[0].options is tap.Options


def test_make_service_passes_the_config(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    calls: list[tuple[object, dict[str, object]]] = []
    sentinel = object()

    def fakeMakeService(config: object, **kwargs: object) -> object:
        calls.append((config, kwargs))
        return sentinel

    fake = types.ModuleType("ctftp.service")
    fake.makeService = fakeMakeService  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ctftp.service", fake)
    monkeypatch.setattr("ctftp.service", fake, raising=False)
    frozen: list[bool] = []
    monkeypatch.setattr(tap, "freezeStartupObjects", lambda: frozen.append(True))
    options = parse("--root", str(root))
    assert tap.makeService(options) is sentinel
    assert calls == [
        (options.config, {"installSignalHandlers": True, "reloadConfig": options.readConfig})
    ]
    assert frozen == [True], "the twistd plugin's process freezes what start-up loaded"


def test_freezing_start_up_objects_collects_garbage_first() -> None:
    import gc
    import weakref

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    alive = weakref.ref(a)
    del a, b
    try:
        tap.freezeStartupObjects()
        assert gc.get_freeze_count() > 0
        assert alive() is None, "garbage was collected, not frozen"
    finally:
        gc.unfreeze()


_LOADED = """
import sys
from ctftp import tap
options = tap.Options()
options.parseOptions(sys.argv[1:])
tap.makeService(options)
heavy = ("twisted.internet.reactor", "OpenSSL", "treq", "twisted.web.server")
print(" ".join(name for name in heavy if name in sys.modules))
"""


def loadedByTwistdPlugin(*argv: str) -> set[str]:
    """Which heavy modules the twistd plugin's start-up loads, in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", _LOADED, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_twistd_plugin_loads_no_tls_nor_http_client(root: Path) -> None:
    """TLS, treq and twisted.web's server are 12+ MB: loaded only when used."""
    assert loadedByTwistdPlugin("--root", str(root), "--listen", "127.0.0.1:0") == {
        "twisted.internet.reactor"
    }


def test_metrics_listen_loads_the_web_server_only(root: Path) -> None:
    loaded = loadedByTwistdPlugin(
        "--root", str(root), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"
    )
    assert loaded == {"twisted.internet.reactor", "twisted.web.server"}


def test_event_http_url_loads_the_http_client(root: Path) -> None:
    loaded = loadedByTwistdPlugin(
        "--root", str(root), "--listen", "127.0.0.1:0", "--event-http-url", "http://127.0.0.1:9/"
    )
    assert {"OpenSSL", "treq"} <= loaded


def test_twistd_help_subprocess() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twisted", "ctftp", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--root-dir" in result.stdout
    assert "--config" in result.stdout


def test_twistd_bad_option_subprocess(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twisted", "ctftp", "--root-dir", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"ctftp: command line: --root-dir: expected an existing folder, got '{tmp_path}/nope'\n"
    )
    assert "Traceback" not in result.stdout


# --- the ctftp console script ------------------------------------------------


def test_main_without_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        tap.main([])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("usage: ctftp CONFIG")


def test_main_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        tap.main(["--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: ctftp CONFIG")


def test_twistd_argv() -> None:
    assert tap.twistdArgv(["x.conf"]) == [
        "twistd",
        "-n",
        "--pidfile=",
        "ctftp",
        "--config",
        "x.conf",
    ]
    assert tap.twistdArgv(["x.conf", "--log-level", "debug"]) == [
        "twistd", "-n", "--pidfile=", "ctftp", "--config", "x.conf", "--log-level", "debug",
    ]  # fmt: skip
    assert tap.twistdArgv(["--root", "srv"]) == [
        "twistd",
        "-n",
        "--pidfile=",
        "ctftp",
        "--root",
        "srv",
    ]


def test_main_runs_twistd(monkeypatch: pytest.MonkeyPatch) -> None:
    import twisted.scripts.twistd

    seen: list[list[str]] = []
    monkeypatch.setattr(twisted.scripts.twistd, "run", lambda: seen.append(list(sys.argv)))
    monkeypatch.setattr(sys, "argv", ["ctftp"])
    tap.main(["site.conf"])
    assert seen == [["twistd", "-n", "--pidfile=", "ctftp", "--config", "site.conf"]]


def test_main_script_bad_config_subprocess(tmp_path: Path) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("root_dir=.\nmax_retries=-1\n")
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from ctftp.tap import main; main(sys.argv[1:])",
         str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        f"ctftp: {conf}:2: max_retries: expected a whole number 0 or greater, got '-1'\n"
    )


# -- twistd's log as the central log (no log_dir) ------------------------------------------


def parseTwistd(*argv: str) -> Any:
    """twistd's own options with ``ctftp`` as the subcommand, as twistd parses them."""
    from twisted.scripts.twistd import ServerOptions

    options = ServerOptions()
    options.parseOptions(list(argv))
    return options


@pytest.fixture
def restoredUSR1() -> Iterator[None]:
    """The test process's SIGUSR1 handler, put back after a test that lets a
    twistd log file install its rotation."""
    previous = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, previous)


def rrqEvent() -> dict[str, Any]:
    return {
        "log_format": 'RRQ from {client} file="{file}" mode="octet"',
        "log_level": LogLevel.info,
        "log_namespace": "ctftp.server",
        "log_time": 1764670561.0,
        "client": "192.168.10.50:40000",
        "file": "test.txt",
    }


def test_twistd_log_without_log_dir_gets_ctftp_lines(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = parseTwistd("-n", "ctftp", "--root-dir", str(root))
    assert options["logger"] is tap.twistdLogObserver
    observer = options["logger"]()
    observer(rrqEvent())
    observer({**rrqEvent(), "file": "caf\udce9"})  # a name that is not UTF-8
    out, _ = capsys.readouterr()
    first, second = out.splitlines()
    assert re.fullmatch(
        r"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\] \[INFO\] RRQ from 192\.168\.10\.50:40000 "
        r'file="test\.txt" mode="octet"',
        first,
    )
    assert second.endswith('file="caf\\udce9" mode="octet"')


def test_twistd_log_without_log_dir_in_json(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    options = parseTwistd("-n", "ctftp", "--root-dir", str(root), "--log-format", "json")
    options["logger"]()(rrqEvent())
    out, _ = capsys.readouterr()
    line = json.loads(out)
    assert (line["level"], line["message"], line["file"]) == (
        "INFO",
        'RRQ from 192.168.10.50:40000 file="test.txt" mode="octet"',
        "test.txt",
    )


def test_twistd_logfile_without_log_dir_gets_ctftp_lines(
    root: Path, tmp_path: Path, restoredUSR1: None
) -> None:
    logfile = tmp_path / "twistd.log"
    options = parseTwistd("--logfile", str(logfile), "ctftp", "--root-dir", str(root))
    observer = options["logger"]()
    observer(rrqEvent())
    assert re.fullmatch(
        r"\[[-0-9T:]{19}\] \[INFO\] RRQ from \S+ file=\"test\.txt\" mode=\"octet\"\n",
        logfile.read_text(),
    )
    assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None)  # rotation, as twistd


@pytest.mark.parametrize(
    "argv",
    [
        ("-n", "ctftp", "--log-dir", "LOGS"),  # ctftp.log is the central log
        ("-n", "--logger", "twisted.logger.textFileLogObserver", "ctftp"),  # the operator's
        ("-n", "--syslog", "ctftp"),
        ("--logfile", "-", "ctftp"),  # twistd refuses a daemon on stdout itself
    ],
)
def test_twistd_log_left_alone(root: Path, tmp_path: Path, argv: tuple[str, ...]) -> None:
    argv = tuple(str(tmp_path / "logs") if arg == "LOGS" else arg for arg in argv)
    options = parseTwistd(*argv, "--root-dir", str(root))
    assert options["logger"] is not tap.twistdLogObserver


def test_twistd_log_observer_outside_twistd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tap, "_twistdLog", None)
    with pytest.raises(RuntimeError):
        tap.twistdLogObserver()
