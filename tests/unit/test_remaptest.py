"""Tests for ctftp-remap-test (ctftp.remaptest.main), in-process: stdin replaced,
output captured, no subprocess."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from ctftp.remaptest import main

RULES = r"""
# test rules
rg  \\          /
a   \.pvt$      private:\ \0
aP  ^ro/
r4  ^v4$        from-\i
r6  ^v6$        from-\i-\x
rE  ^(.*)\.bin$ images/\1.bin
s   ^loop$
"""


def runMain(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    stdin: str | bytes = "",
) -> tuple[int, str, str]:
    """Run main(argv) with ``stdin`` as its input; (status, stdout, stderr)."""
    if isinstance(stdin, bytes):
        stream: io.TextIOBase = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    else:
        stream = io.StringIO(stdin)
    monkeypatch.setattr(sys, "stdin", stream)
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def rulesFile(tmp_path: Path) -> str:
    path = tmp_path / "remap.rules"
    path.write_text(RULES)
    return str(path)


def test_names_in_results_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], rulesFile: str
) -> None:
    status, out, err = runMain(
        monkeypatch, capsys, [rulesFile], "a\\b.txt\nkeys.pvt\nloop\n\nro/x\n"
    )
    assert status == 0
    assert err == ""
    assert out.splitlines() == [
        "a\\b.txt -> a/b.txt",
        "keys.pvt -> denied: private: .pvt",
        "loop -> failed: Remap table failure",
        "ro/x -> ro/x",
    ]


def test_op_put(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], rulesFile: str
) -> None:
    _, out, _ = runMain(monkeypatch, capsys, [rulesFile, "--op", "put"], "ro/x\n")
    assert out == "ro/x -> denied: Access violation\n"


def test_client(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], rulesFile: str
) -> None:
    _, out, _ = runMain(monkeypatch, capsys, [rulesFile], "v4\nv6\n")
    assert out.splitlines() == ["v4 -> from-127.0.0.1", "v6 -> v6"]
    _, out, _ = runMain(monkeypatch, capsys, [rulesFile, "--client", "2001:db8::1"], "v4\nv6\r\n")
    assert out.splitlines() == [
        "v4 -> v4",
        "v6 -> from-2001:db8::1-20010DB8000000000000000000000001",
    ]


def test_every_name_exists_without_root(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], rulesFile: str
) -> None:
    _, out, _ = runMain(monkeypatch, capsys, [rulesFile], "k.bin\n")
    assert out == "k.bin -> images/k.bin\n"


def test_root_answers_E(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    rulesFile: str,
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    (root / "images" / "folder.bin").mkdir(parents=True)
    (root / "images" / "k.bin").write_bytes(b"x")
    _, out, _ = runMain(
        monkeypatch, capsys, [rulesFile, "--root", str(root)], "k.bin\nj.bin\nfolder.bin\n"
    )
    assert out.splitlines() == [
        "k.bin -> images/k.bin",
        "j.bin -> j.bin",
        "folder.bin -> folder.bin",  # a folder cannot be served
    ]


def test_pcre(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "atftpd.pcre"
    path.write_text("# phones\n^(SEP.*)\\.cnf\\.xml$ phones/$1.xml\n")
    status, out, _ = runMain(monkeypatch, capsys, ["--pcre", str(path)], "SEPAB.cnf.xml\nother\n")
    assert status == 0
    assert out.splitlines() == ["SEPAB.cnf.xml -> phones/SEPAB.xml", "other -> other (no match)"]


@pytest.mark.parametrize("pcre", [False, True])
def test_a_runaway_regex_says_which_rule(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    pcre: bool,
) -> None:
    monkeypatch.setattr("ctftp.remap.TIME_LIMIT", 0.01)
    path = tmp_path / "slow"
    regex = r"^([a-z0-9]+[-_.]?)+\.cfg$"
    path.write_text(f"{regex} x\n" if pcre else f"r {regex} x\n")
    argv = ["--pcre", str(path)] if pcre else [str(path)]
    status, out, _ = runMain(monkeypatch, capsys, argv, "a1" * 12 + "!\nb.cfg\n")
    assert status == 0
    assert out.splitlines() == [
        "a1" * 12 + "! -> failed: Remap table failure "
        f"({path}:1: the regex took more than 10 ms on this name and was stopped)",
        "b.cfg -> x",
    ]


def test_bad_rule_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.rules"
    path.write_text("r a b\nr [z x\n")
    status, out, err = runMain(monkeypatch, capsys, [str(path)], "a\n")
    assert status == 1
    assert out == ""
    assert err == f'{path}:2: bad regex "[z": unmatched [\n'


def test_bad_pcre_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.pcre"
    path.write_text("^a b\n^(c $1\n")
    status, _, err = runMain(monkeypatch, capsys, ["--pcre", str(path)])
    assert status == 1
    assert err.startswith(f'{path}:2: bad regex "^(c": ')
    assert err.count("\n") == 1


def test_missing_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "absent.rules"
    status, _, err = runMain(monkeypatch, capsys, [str(missing)])
    assert status == 1
    assert err == f"{missing}: No such file or directory\n"


@pytest.mark.parametrize(
    "argv",
    [[], ["a.rules", "--pcre", "b.pcre"], ["a.rules", "--client", "host"], ["a", "--op", "x"]],
)
def test_usage_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        runMain(monkeypatch, capsys, argv)
    assert info.value.code == 2
    assert "usage: ctftp-remap-test" in capsys.readouterr().err


def test_undecodable_names_round_trip(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], rulesFile: str
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9\\x\n")))
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", out)
    assert main([rulesFile]) == 0
    out.flush()
    assert out.buffer.getvalue() == b"caf\xe9\\x -> caf\xe9/x\n"
