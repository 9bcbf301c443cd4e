"""The in-process benchmarks run: their transfers complete and they print
their figures (smoke tests; no timing is asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_perack_completes_each_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert load("perack").main(["--size-mib", "1", "--repeat", "1", "512x1", "1428x16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    cases = [line.split("|")[1:3] for line in lines if line[:3] in ("| 5", "| 1")]
    assert [[cell.strip() for cell in case] for case in cases] == [["512", "1"], ["1428", "16"]]


def test_perrequest_serves_its_storm(capsys: pytest.CaptureFixture[str]) -> None:
    assert load("perrequest").main(["--names", "20", "--size", "1500", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "20 files of 1500 bytes, blksize 512, log_dir on, file_log on" in out
    [figure] = [line for line in out.splitlines() if line.startswith("us per transfer: ")]
    assert float(figure.split(": ")[1]) > 0
