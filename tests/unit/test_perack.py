"""benchmarks/perack.py runs: its transfers complete and it prints a row per case."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PERACK = Path(__file__).parents[2] / "benchmarks" / "perack.py"


def test_perack_completes_each_case(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("perack", PERACK)
    assert spec is not None and spec.loader is not None
    perack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(perack)
    assert perack.main(["--size-mib", "1", "--repeat", "1", "512x1", "1428x16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    cases = [line.split("|")[1:3] for line in lines if line[:3] in ("| 5", "| 1")]
    assert [[cell.strip() for cell in case] for case in cases] == [["512", "1"], ["1428", "16"]]
