"""Speed of our trainer against lucidrains' denoising-diffusion-pytorch, side by side, in one table.

    python bench/bench.py                    # CPU, and CUDA when there is one (several minutes on a CPU)
    python bench/bench.py --tiny             # a few steps of everything, for CI (well under a minute)
    python bench/bench.py --device cuda --data ../shared/data/cifar10-cat/train/cat

At the homework's settings (batch 32, 32x32 RGB, --unet_dim 16, --unet_dim_mults 1 2 4 8, T = 50) it
measures, for our trainer (main.build_trainer: the Trainer main.py builds from these flags):

  train steps/s   whole optimizer steps: data, forward, backward, gradient clipping, Adam, EMA.
                  All speed levers off, each lever on its own, all of them, and main.py's defaults.
  data ms/batch   the data pipeline alone (`next_batch`: draw, flip, scale), per batch.
  sample img/s    a full T-step Algorithm 2 with the EMA weights, --sample_batch images at once.
  peak MiB        CPU: the peak resident memory of the process while training (torch itself is a few
                  hundred MiB of it); CUDA: torch.cuda.max_memory_allocated while training.

and the same for lucidrains' package at the same settings (its Unet, and its GaussianDiffusion with
objective="pred_noise", beta_schedule="cosine", T = 50): its Trainer as shipped (accelerate, a
DataLoader that decodes the image folder with one worker per CPU, EMA every 10 steps, fp32 unless
amp=True), and a plain loop over its model (batches from memory) that shows the network's own cost.
"x lucidrains" divides our figure by its Trainer's (training) or its sampler's (sampling) on the same
device. The benchmark reports; the speed goals (README, "Performance") are judged by reading it.

Every figure is the best of --repeats timed blocks of --steps steps, after --warmup steps (the first
step, which includes torch.compile's compilation, is shown apart), with the device synchronised
before every clock read. Each case runs in a fresh Python process so that memory, compiled code and
thread pools of one case cannot leak into the next (--tiny runs one process per implementation).
Other programs on the machine slow it down: the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import training_data  # noqa: E402
import utils  # noqa: E402

# The homework's settings: both implementations are measured at exactly these.
BATCH_SIZE, IMAGE_SIZE, UNET_DIM, UNET_DIM_MULTS, TIME_STEPS = 32, 32, 16, (1, 2, 4, 8), 50
LEVERS = ["channels_last", "data_on_device", "fused_optimizer", "amp", "compile"]
# lucidrains' package and what it needs: dev-only, so a student's install may lack them.
OPTIONAL_PACKAGES = {"denoising_diffusion_pytorch", "ema_pytorch", "accelerate", "einops"}


# ---------------------------------------------------------------------------------------------
# Measuring (runs inside the worker processes)
# ---------------------------------------------------------------------------------------------

def synchronize(device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def reset_peak_memory(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:  # Linux: writing 5 resets the process's peak resident memory (VmHWM) to its current size
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass  # elsewhere the figure is the peak since the process started


def peak_memory_mib(device) -> float | None:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows: no figure
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def best_seconds(run, device, calls: int, repeats: int) -> float:
    """Seconds per call of run(): the best of `repeats` timed blocks of `calls` calls."""
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            run()
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def measure(case: dict, device, train_steps, next_batch, sample) -> dict:
    """Warm up, then time training, peak memory, the data pipeline and sampling for one case.

    train_steps(n) runs n optimizer steps; next_batch() and sample(n) are None where not measured.
    """
    out = {}
    synchronize(device)
    start = time.perf_counter()
    train_steps(1)
    synchronize(device)
    out["first_step_s"] = time.perf_counter() - start
    if case["warmup"] > 1:
        train_steps(case["warmup"] - 1)
    reset_peak_memory(device)
    steps = case["steps"]
    out["steps_per_s"] = steps / best_seconds(lambda: train_steps(steps), device, 1, case["repeats"])
    out["peak_mib"] = peak_memory_mib(device)
    if next_batch is not None:
        out["data_ms"] = 1e3 * best_seconds(next_batch, device, steps, case["repeats"])
    if sample is not None and case["sample"]:
        n = case["sample_batch"]
        out["sample_img_s"] = n / best_seconds(lambda: sample(n), device, 1, case["repeats"])
    return out


def loop(step):
    """train_steps(n) for a function that does one step."""
    def train_steps(n: int) -> None:
        for _ in range(n):
            step()
    return train_steps


def run_ours(case: dict) -> dict:
    import main
    from unet import count_parameters

    folder = Path(case["data"])
    flags = ["--device", case["device"], "--data_path", str(folder.parent), "--data_class", folder.name,
             "--save_folder", case["tmp"], "--sample_batch_size", str(case["sample_batch"]), "--seed", "0",
             *case["flags"]]
    trainer = main.build_trainer(main.parse_args(flags))
    try:
        out = measure(case, trainer.device, loop(trainer.train_step), trainer.next_batch, trainer.sample)
        out["params"] = count_parameters(trainer.model.model)
        return out
    finally:
        trainer.close()


def lucidrains_diffusion(device):
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet

    model = Unet(dim=UNET_DIM, dim_mults=UNET_DIM_MULTS, channels=3)
    # Our homework's DDPM: predict the noise, cosine schedule (its defaults are pred_v and sigmoid).
    return GaussianDiffusion(model, image_size=IMAGE_SIZE, timesteps=TIME_STEPS, objective="pred_noise",
                             beta_schedule="cosine").to(device)


def run_lucidrains_loop(case: dict) -> dict:
    """Its Unet + GaussianDiffusion + Adam + EMA in a plain loop, batches drawn from memory like ours."""
    import torch
    from ema_pytorch import EMA

    device = torch.device(case["device"])
    torch.manual_seed(0)
    diffusion = lucidrains_diffusion(device)
    images = training_data.load_image_folder(case["data"], IMAGE_SIZE).to(device)
    # Its Trainer's settings: Adam(lr 1e-4, betas 0.9, 0.99), clip at 1, EMA(0.995) every 10 steps.
    optimizer = torch.optim.Adam(diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))
    ema = EMA(diffusion, beta=0.995, update_every=10).to(device)

    def next_batch():  # [B, 3, S, S] in [0, 1]: its GaussianDiffusion scales to [-1, 1] itself
        batch = images[torch.randint(0, len(images), (BATCH_SIZE,), device=device)]
        flip = torch.rand(BATCH_SIZE, 1, 1, 1, device=device) < 0.5
        return torch.where(flip, batch.flip(-1), batch).float() / 255

    def train_step():
        loss = diffusion(next_batch())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        optimizer.step()
        ema.update()

    out = measure(case, device, loop(train_step), next_batch, lambda n: ema.ema_model.sample(batch_size=n))
    out["params"] = sum(p.numel() for p in diffusion.model.parameters())
    return out


def run_lucidrains_trainer(case: dict) -> dict:
    """Its Trainer as shipped; a step is one iteration of Trainer.train()'s loop."""
    import torch
    from denoising_diffusion_pytorch import Trainer

    torch.manual_seed(0)
    trainer = Trainer(lucidrains_diffusion("cpu"), case["data"], train_batch_size=BATCH_SIZE, train_num_steps=0,
                      save_and_sample_every=10**9, results_folder=case["tmp"], calculate_fid=False,
                      amp=case["amp"], mixed_precision_type="fp16")

    def train_steps(n: int) -> None:  # train() runs until train_num_steps and resumes from trainer.step
        trainer.train_num_steps = trainer.step + n
        trainer.train()

    # A block of steps is one train() call, so that its per-call set-up (a progress bar) is shared out.
    out = measure(case, trainer.device, train_steps, lambda: next(trainer.dl), None)
    out["params"] = sum(p.numel() for p in trainer.model.model.parameters())
    return out


def worker(cases: list[dict], out_path: str) -> None:
    import torch

    results = []
    for case in cases:
        try:
            run = {"ours": run_ours, "lucidrains_loop": run_lucidrains_loop,
                   "lucidrains_trainer": run_lucidrains_trainer}[case["impl"]]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = run(case)
            # Our levers warn "--flag: ..." when they fall back; the row must say it measured the fallback.
            fallbacks = [str(w.message) for w in caught if str(w.message).startswith("--")]
            if fallbacks:
                result["warning"] = fallbacks[0][:100]
            result["threads"] = torch.get_num_threads()
            results.append(result)
        except Exception as error:  # noqa: BLE001 (one failing case must not hide the others)
            if isinstance(error, ImportError) and case["impl"] != "ours" and error.name in OPTIONAL_PACKAGES:
                results.append({"note": f"not installed ({error.name}): pip install -r requirements-dev.txt"})
            else:
                message = str(error).splitlines()[0][:120] if str(error) else ""
                results.append({"error": f"{type(error).__name__}: {message}"})
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    Path(out_path).write_text(json.dumps(results))


# ---------------------------------------------------------------------------------------------
# Planning, running the workers and printing the table (the parent process)
# ---------------------------------------------------------------------------------------------

def ours_cases(device: str, tiny: bool) -> list[dict]:
    off = ["--amp", "off", "--no-channels_last", "--no-compile", "--no-data_on_device", "--no-fused_optimizer"]
    on = {"channels_last": ["--channels_last"], "data_on_device": ["--data_on_device"],
          "fused_optimizer": ["--fused_optimizer"], "amp": ["--amp", "auto"], "compile": ["--compile"]}
    skip = {}
    if device == "cpu":
        skip["amp"] = "n/a: --amp is CUDA-only"
    if tiny:
        skip["compile"] = "skipped: --tiny"
    cases = [dict(name="ours: all levers off", flags=off, sample=True)]
    for lever in LEVERS:
        flags = off + on[lever]
        # Sampling only changes with the levers that touch the model's arithmetic or layout.
        cases.append(dict(name=f"ours: + {lever}", flags=flags, sample=lever in ("channels_last", "amp"),
                          skip=skip.get(lever)))
    all_on = [flag for lever in LEVERS if lever not in skip for flag in on[lever]]
    note = f" (without {', '.join(skip)})" if skip else ""
    cases.append(dict(name=f"ours: all levers on{note}", flags=off + all_on, sample=True))
    cases.append(dict(name="ours: main.py defaults", flags=[], sample=True))
    return [dict(c, impl="ours") for c in cases]


def lucidrains_cases(device: str) -> list[dict]:
    cases = [dict(impl="lucidrains_trainer", name="lucidrains: Trainer (as shipped)", amp=False, sample=False),
             dict(impl="lucidrains_loop", name="lucidrains: Unet + GaussianDiffusion, plain loop", sample=True)]
    if device == "cuda":
        cases.insert(1, dict(impl="lucidrains_trainer", name="lucidrains: Trainer, amp=True (fp16)", amp=True,
                             sample=False))
    return cases


def make_image_folder(root: Path, count: int) -> Path:
    """`count` made-up JPEGs (the demo set's shapes), so both trainers read a real image folder."""
    from torchvision.io import write_jpeg

    folder = root / "images"
    folder.mkdir()
    for i, image in enumerate(training_data.make_demo_dataset(count, IMAGE_SIZE, seed=0)):
        write_jpeg(image, str(folder / f"{i:05d}.jpg"), quality=95)
    return folder


def run_group(cases: list[dict], out_path: Path, env: dict) -> list[dict]:
    """One worker process for these cases; returns one result per case."""
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cases), "--worker_out", str(out_path)],
                          env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode == 0 and out_path.exists():
        return json.loads(out_path.read_text())
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]
    return [{"error": f"worker failed (exit {proc.returncode}): {last}"}] * len(cases)


def run_workers(groups: list[list[dict]], tmp: Path, device: str, tiny: bool, threads: int | None) -> list[dict]:
    """Run each group of cases in its own worker process; returns one result per case, in order."""
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # so that accelerate (lucidrains' Trainer) stays on the CPU too
    if tiny:  # the groups run at the same time, one thread each: a loaded machine cannot stall them
        threads = 1
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    todo = [[c for c in group if not c.get("skip")] for group in groups]
    # Timings need the machine to themselves: one worker at a time, except for --tiny.
    with ThreadPoolExecutor(max_workers=len(groups) if tiny else 1) as pool:
        futures = [pool.submit(run_group, cases, tmp / f"result-{device}-{i}.json", env)
                   for i, cases in enumerate(todo) if cases]
        for cases in todo:
            if cases:
                print(f"  {device}: {', '.join(c['name'] for c in cases)}", file=sys.stderr, flush=True)
        measured = iter([result for future in futures for result in future.result()])
    return [dict(case, **({"note": case["skip"]} if case.get("skip") else next(measured)))
            for group in groups for case in group]


def fmt(value: float | None) -> str:
    """3 significant digits, without exponents."""
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:#.3g}"


def print_table(rows: list[dict]) -> None:
    header = ["device", "setting", "train steps/s", "ms/step", "x lucidrains", "data ms/batch", "sample img/s",
              "x lucidrains", "peak MiB", "first step s"]
    print("| " + " | ".join(header) + " |")
    print("|---|---|" + "---:|" * (len(header) - 2))
    for device in dict.fromkeys(r["device"] for r in rows):
        on_device = [r for r in rows if r["device"] == device]
        trainer_ref = next((r.get("steps_per_s") for r in on_device if r["impl"] == "lucidrains_trainer"), None)
        sample_ref = next((r.get("sample_img_s") for r in on_device if r["impl"] == "lucidrains_loop"), None)
        for r in on_device:
            if "error" in r or "note" in r:
                print(f"| {device} | {r['name']} | {r.get('error') or r['note']} |" + " |" * (len(header) - 3))
                continue
            sps, img_s = r.get("steps_per_s"), r.get("sample_img_s")
            name = r["name"] + (f" (warning: {r['warning']})" if r.get("warning") else "")
            cells = [device, name, fmt(sps), fmt(1e3 / sps if sps else None),
                     fmt(sps / trainer_ref if sps and trainer_ref else None), fmt(r.get("data_ms")), fmt(img_s),
                     fmt(img_s / sample_ref if img_s and sample_ref else None), fmt(r.get("peak_mib")),
                     fmt(r.get("first_step_s"))]
            print("| " + " | ".join(cells) + " |")


def machine_line(devices: list[str], rows: list[dict]) -> str:
    import torch

    threads = next((r["threads"] for r in rows if "threads" in r), "?")
    parts = [f"torch {torch.__version__}", f"{platform.processor() or platform.machine()}",
             f"{os.cpu_count()} CPU cores, torch using {threads} thread(s)"]
    if "cuda" in devices:
        parts.append(torch.cuda.get_device_name(0))
    return ", ".join(parts)


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main() -> int:
    p = utils.CommandLineParser(prog="bench/bench.py", description="Benchmark our trainer against lucidrains' denoising-diffusion-pytorch.")
    p.add_argument("--device", choices=["all", "cpu", "cuda"], default="all", help="all: the CPU, and CUDA when present")
    p.add_argument("--steps", type=int, help="timed steps per block (default 20 on CPU, 200 on CUDA)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 5 on CPU, 20 on CUDA)")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per figure; the best one counts")
    p.add_argument("--sample_batch", type=int, help="images per sample call (default 32 on CPU, 250 on CUDA)")
    p.add_argument("--data", type=Path, help="a folder of images to train on (default: 2,048 made-up JPEGs)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice, one per core); "
                   "1 gives steadier figures on a machine that other programs share")
    p.add_argument("--tiny", "--smoke", action="store_true", help="2 steps of everything, no torch.compile (for CI)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker_out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(json.loads(args.worker), args.worker_out)
        return 0
    for name in ("steps", "warmup", "repeats", "sample_batch", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.data is not None:
        if not args.data.is_dir() or not training_data.list_images(args.data):
            p.error(f"--data {args.data} is not a folder of jpg/png images: pass one, e.g. "
                    "--data ../shared/data/cifar10-cat/train/cat, or leave it out for made-up images")

    import torch

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if not torch.cuda.is_available():
        if args.device == "cuda":
            p.error("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
        devices = ["cpu"]
    rows = []
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="ddpm-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data = args.data or make_image_folder(tmp, 128 if args.tiny else 2048)
        for device in devices:
            gpu = device == "cuda"
            settings = dict(device=device, data=str(data), tmp=str(tmp / "results"),
                            steps=2 if args.tiny else args.steps or (200 if gpu else 20),
                            warmup=1 if args.tiny else args.warmup or (20 if gpu else 5),
                            repeats=1 if args.tiny else args.repeats,
                            sample_batch=2 if args.tiny else args.sample_batch or (250 if gpu else 32))
            cases = [dict(c, **settings) for c in ours_cases(device, args.tiny) + lucidrains_cases(device)]
            if args.tiny:  # one process per implementation: fewer imports, less isolation
                groups = [[c for c in cases if c["impl"] == "ours"], [c for c in cases if c["impl"] != "ours"]]
            else:
                groups = [[c] for c in cases]
            rows += run_workers(groups, tmp, device, args.tiny, args.threads)
    timing = "; ".join(f"{r['device']}: {r['steps']} steps x {r['repeats']} blocks after {r['warmup']} warm-up, "
                       f"sampling {r['sample_batch']} images at once" for r in {r["device"]: r for r in rows}.values())
    print(f"\nDDPM training and sampling speed: batch {BATCH_SIZE}, {IMAGE_SIZE}x{IMAGE_SIZE}, --unet_dim {UNET_DIM}, "
          f"--unet_dim_mults {' '.join(map(str, UNET_DIM_MULTS))}, T = {TIME_STEPS}\n{timing}")
    print(f"data: {args.data or 'made-up JPEGs'}; {machine_line(devices, rows)}; load average {load_before} before, "
          f"{load_average()} after")
    ours = next((r.get("params") for r in rows if r["impl"] == "ours" and r.get("params")), None)
    theirs = next((r.get("params") for r in rows if r["impl"] != "ours" and r.get("params")), None)
    if ours and theirs:
        print(f"parameters: ours {ours / 1e6:.2f}M, lucidrains' {theirs / 1e6:.2f}M (ours / theirs = {ours / theirs:.2f})")
    print()
    print_table(rows)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(utils.run_command_line(main))
