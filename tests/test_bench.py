"""bench/bench.py --tiny runs end to end and prints the whole table (so the benchmark cannot rot).

Speed itself is never asserted here (see the GUIDE): only that every row is there and measured.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test runs a benchmark script in its own process

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "bench.py"

OURS_MEASURED = ["ours: all levers off", "ours: + channels_last", "ours: + data_on_device",
                 "ours: + fused_optimizer", "ours: all levers on", "ours: main.py defaults"]
LUCIDRAINS = ["lucidrains: Trainer (as shipped)", "lucidrains: Unet + GaussianDiffusion, plain loop"]
SAMPLED = ["ours: all levers off", "ours: + channels_last", "ours: all levers on", "ours: main.py defaults",
           "lucidrains: Unet + GaussianDiffusion, plain loop"]


@pytest.fixture(scope="module")
def tiny_run():
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--device", "cpu"], cwd=ROOT,
                          capture_output=True, text=True, timeout=280)
    return proc


def table_rows(stdout: str) -> dict[str, list[str]]:
    """setting -> the row's cells after the setting, from the markdown table."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("| cpu |"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[1]] = cells[2:]
    return rows


def row(rows: dict, prefix: str) -> list[str]:
    matches = [cells for name, cells in rows.items() if name.startswith(prefix)]
    assert len(matches) == 1, f"expected one row starting with {prefix!r}, got {list(rows)}"
    return matches[0]


def positive(cell: str) -> bool:
    try:
        return float(cell) > 0
    except ValueError:
        return False


def test_tiny_benchmark_exits_cleanly(tiny_run):
    assert tiny_run.returncode == 0, tiny_run.stdout[-2000:] + tiny_run.stderr[-2000:]


def test_every_measured_row_has_positive_numbers(tiny_run):
    rows = table_rows(tiny_run.stdout)
    have_lucidrains = importlib.util.find_spec("denoising_diffusion_pytorch") is not None
    for name in OURS_MEASURED + (LUCIDRAINS if have_lucidrains else []):
        steps_per_s, ms_per_step, _, data_ms, sample, _, peak_mib, first_step = row(rows, name)
        assert all(positive(c) for c in (steps_per_s, ms_per_step, data_ms, peak_mib, first_step)), (name, rows)
        assert positive(sample) == (name in SAMPLED), (name, sample)


def test_ratios_against_lucidrains(tiny_run):
    if importlib.util.find_spec("denoising_diffusion_pytorch") is None:
        assert "not installed" in " ".join(row(table_rows(tiny_run.stdout), LUCIDRAINS[0]))
        return
    rows = table_rows(tiny_run.stdout)
    assert float(row(rows, LUCIDRAINS[0])[2]) == 1.0  # the Trainer is the training reference
    assert float(row(rows, LUCIDRAINS[1])[5]) == 1.0  # its sampler is the sampling reference
    steps_per_s, _, ratio, *_ = row(rows, "ours: main.py defaults")
    reference = float(row(rows, LUCIDRAINS[0])[0])
    assert float(ratio) == pytest.approx(float(steps_per_s) / reference, rel=0.03)  # 3 significant digits each
    assert "parameters: ours" in tiny_run.stdout


def test_levers_that_cannot_run_say_why(tiny_run):
    rows = table_rows(tiny_run.stdout)
    assert row(rows, "ours: + amp")[0].startswith("n/a")  # AMP is CUDA-only
    assert row(rows, "ours: + compile")[0].startswith("skipped")  # too slow to compile for CI


def test_bad_data_folder_is_one_clear_line(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--data", str(tmp_path / "missing")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "--data" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("script, flags, named", [
    ("bench_unet.py", ["--dim", "0"], "--dim"),
    ("bench_unet.py", ["--image_size", "36"], "--image_size 36"),
    ("compare_quality.py", ["--data", "no/such/folder"], "--data no/such/folder"),
    ("compare_quality.py", ["--data", ".", "--only", "baseline"], "--baseline_unet"),
])
def test_other_bench_scripts_reject_bad_flags_in_one_line(script, flags, named):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], proc.stderr
