"""Two gloo processes on the CPU through torchrun: sharded data, averaged gradients, rank 0 alone
writes, and checkpoints that move between single-process and multi-process runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import main

REPO = Path(__file__).resolve().parent.parent

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
TINY = ["--unet_dim", "8", "--unet_dim_mults", "1", "2", "--time_steps", "3", "--batch_size", "8",
        "--demo_images", "64", "--num_samples", "4", "--log_every", "1", "--device", "cpu"]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_PROJECT", None)
    result = subprocess.run([*TORCHRUN, *args], cwd=REPO, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # each test starts processes


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_checkpoints_move_between_single_and_two_process_runs(tmp_path, capsys):
    flags = [*TINY, "--save_folder", str(tmp_path), "--save_and_sample_every", "2"]
    assert main.main([*flags, "--train_steps", "2"]) == 0  # one process
    assert load(tmp_path / "model.pt")["world_size"] == 1

    result = torchrun("main.py", *flags, "--train_steps", "4", "--load_path", str(tmp_path / "model.pt"))
    assert result.stdout.count("resuming from step 2") == 1  # rank 0 speaks for both
    checkpoint = load(tmp_path / "model.pt")
    assert checkpoint["step"] == 4 and checkpoint["world_size"] == 2
    assert (tmp_path / "sample-4.png").is_file()
    steps = [row.split(",")[0] for row in (tmp_path / "log.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2", "3", "4"]  # one row per step: only rank 0 logs

    capsys.readouterr()
    assert main.main([*flags, "--train_steps", "5", "--load_path", str(tmp_path / "model.pt")]) == 0
    assert "resuming from step 4" in capsys.readouterr().out
    assert load(tmp_path / "model.pt")["step"] == 5


CHECK_RANKS = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import torch, torch.distributed as dist
    import main

    trainer = main.build_trainer(main.parse_args(sys.argv[2:]))
    assert dist.get_world_size() == 2 and trainer.world_size == 2
    batch = trainer.next_batch()
    assert batch.shape[0] == 4, batch.shape  # --batch_size 8 counts both processes
    batches = [torch.empty_like(batch) for _ in range(2)]
    dist.all_gather(batches, batch)
    assert not torch.equal(batches[0], batches[1])  # each rank draws from its own shard
    shard = trainer.batches.images
    shards = [torch.empty_like(shard) for _ in range(2)]
    dist.all_gather(shards, shard)
    assert not torch.equal(shards[0], shards[1]) and len(shard) == 32

    for _ in range(3):
        loss = trainer.train_step()
    # Different data on each rank, yet the same weights: the gradients were averaged.
    weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    gathered = [torch.empty_like(weights) for _ in range(2)]
    dist.all_gather(gathered, weights)
    assert torch.equal(gathered[0], gathered[1])
    ema = torch.cat([p.detach().flatten() for p in trainer.ema.module.parameters()])
    assert not torch.equal(ema, weights)
    print(f"rank {trainer.rank} ok")
    trainer.close()
""")


def test_two_ranks_train_on_their_own_shards_with_averaged_gradients(tmp_path):
    script = tmp_path / "check_ranks.py"
    script.write_text(CHECK_RANKS)
    result = torchrun(str(script), str(REPO), *TINY, "--save_folder", str(tmp_path))
    assert "rank 0 ok" in result.stdout and "rank 1 ok" in result.stdout


SLOW_SAVE = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    import main, trainer

    real = trainer.Trainer.save_and_sample

    def slow_on_rank_0(self, *args, **kwargs):  # rank 0 busy sampling while rank 1 waits in a collective
        if self.is_main and self.step >= 4:
            print("rank 0 is sampling", flush=True)
            time.sleep(120)
        return real(self, *args, **kwargs)

    trainer.Trainer.save_and_sample = slow_on_rank_0
    code = main.main(sys.argv[2:])
    print(f"rank {os.environ['RANK']} exits with {code}", flush=True)
    sys.exit(code)
""")


def test_ctrl_c_under_torchrun_stops_every_rank_and_saves_once(tmp_path):
    """Ctrl-C in a terminal signals torchrun and both ranks while rank 0 samples and rank 1 waits for it."""
    script = tmp_path / "slow_save.py"
    script.write_text(SLOW_SAVE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WANDB_PROJECT", None)
    process = subprocess.Popen([*TORCHRUN, str(script), str(REPO), *TINY, "--save_folder", str(tmp_path),
                                "--train_steps", "1000", "--save_and_sample_every", "2"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "rank 0 is sampling" in line:
                break
        time.sleep(2)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    out = "".join(lines) + out
    assert "rank 0 exits with 130" in out and "rank 1 exits with 130" in out, out
    assert out.count("interrupted at step 4; saved") == 1 and "torchrun --nproc_per_node=2 main.py" in out
    for error in ["KeyboardInterrupt", "RuntimeError", "DistBackendError", "timed out"]:
        assert error not in out, out  # (torchrun's own SignalException is the launcher's, not a rank's)
    assert load(tmp_path / "model.pt")["step"] == 4
