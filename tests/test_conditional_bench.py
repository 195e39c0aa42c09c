"""bench/bench_guidance.py runs end to end and prints its table (so the benchmark cannot rot).

Speed itself is never asserted here: only that each row is there and measured.
"""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test runs a benchmark script in its own process

ROOT = Path(__file__).resolve().parent.parent


def test_bench_guidance_prints_a_row_per_batch_size():
    proc = subprocess.run([sys.executable, "bench/bench_guidance.py", "--batch_sizes", "1", "2", "--rounds", "1",
                           "--repeats", "1", "--dim", "4", "--dim_mults", "1", "2", "--image_size", "8", "--threads", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.strip("|").split("|") for line in proc.stdout.splitlines() if line.startswith("| cpu |")]
    assert [int(r[1]) for r in rows] == [1, 2]
    for row in rows:
        assert all(float(cell) > 0 for cell in row[2:]), row


def test_bench_guidance_refuses_bad_flags_in_one_line():
    proc = subprocess.run([sys.executable, "bench/bench_guidance.py", "--batch_sizes", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "must be positive" in proc.stderr
