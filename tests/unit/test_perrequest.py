"""benchmarks/perrequest.py runs: its storm completes and it prints the figure."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PERREQUEST = Path(__file__).parents[2] / "benchmarks" / "perrequest.py"


def test_perrequest_serves_its_storm(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("perrequest", PERREQUEST)
    assert spec is not None and spec.loader is not None
    perrequest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(perrequest)
    assert perrequest.main(["--names", "20", "--size", "1500", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "20 files of 1500 bytes, blksize 512, log_dir on, file_log on" in out
    [figure] = [line for line in out.splitlines() if line.startswith("us per transfer: ")]
    assert float(figure.split(": ")[1]) > 0
