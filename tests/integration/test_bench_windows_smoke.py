"""Smoke test of tests/bench/bench_windows.py on the real broker: 20,000 rides, one short run of
each variant ((a) this framework, (b) faust, (c) Quix Streams, (d) raw aiokafka). Asserts only
that every variant ran, passed the oracle check over the input it processed, and that (a) and
(c) emitted the same final windows -- never speed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.broker


@pytest.mark.timeout(240)
def test_bench_windows_smoke(kafka: str, tmp_path: Path) -> None:
    results = tmp_path / "windows.json"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "bench" / "bench_windows.py"),
         "--broker", kafka, "--count", "20000", "--repeat", "1", "--span", "5",
         "--warmup", "1", "--no-profile",
         "--results", str(results), "--chart", str(tmp_path / "windows.png"),
         "--work-dir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=230)
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert results.exists(), output
    doc = json.loads(results.read_text())
    assert doc["failures"] == {}, output
    assert sorted(doc["variants"]) == ["a", "b", "c", "d"], output
    for key, variant in doc["variants"].items():
        assert variant["runs"] == 1, (key, output)
        run = variant["runs_detail"][0]
        assert run["exit_code"] == 0, (key, run["log"], output)
        assert run["check"]["ok"], (key, run["check"], output)
    agreement = doc["agreement"]
    assert agreement["compared"] == ["a", "c"], agreement
    assert agreement["agree"] is True and agreement["differing"] == 0, agreement
    assert agreement["common_windows"] > 0, agreement
    assert proc.returncode == 0, output
    print(f"bench smoke took {time.monotonic() - started:.1f}s")
