"""The U-Net alone: our unet.py against lucidrains' Unet (and optionally another unet.py), on the CPU.

    python bench/bench_unet.py                                     # ours vs lucidrains'
    python bench/bench_unet.py --baseline_unet /tmp/unet_before.py # also an older unet.py (e.g. from git)
    python bench/bench_unet.py --profile                           # where our training step spends its time

For each network, in the default (NCHW) layout and in channels_last, at batch 32 on 32x32 images:

  train ms    forward + backward + Adam step on a fixed batch (no data pipeline, no EMA);
  sample ms   one inference forward pass, i.e. one of the T steps of Algorithm 2.

The networks take turns, round after round, so that a change in the machine's load hits all of them
alike; each figure is the best round. bench/bench.py measures whole training steps and samples.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import utils  # noqa: E402
from unet import Unet, count_parameters  # noqa: E402


def load_unet_class(path: Path):
    spec = importlib.util.spec_from_file_location("baseline_unet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Unet


def networks(args) -> dict[str, torch.nn.Module]:
    mults = tuple(args.dim_mults)
    nets = {"ours": Unet(dim=args.dim, dim_mults=mults, channels=3)}
    if args.baseline_unet:
        nets["baseline"] = load_unet_class(args.baseline_unet)(dim=args.dim, dim_mults=mults, channels=3)
    try:
        from denoising_diffusion_pytorch import Unet as TheirUnet

        nets["lucidrains"] = TheirUnet(dim=args.dim, dim_mults=mults, channels=3)
    except ImportError:
        print("lucidrains' denoising-diffusion-pytorch is not installed: pip install -r requirements-dev.txt")
    return nets


def main() -> None:
    p = utils.CommandLineParser(prog=f"bench/{Path(__file__).name}", description=__doc__.split("\n")[0])
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--dim_mults", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--rounds", type=int, default=5, help="turns each network takes; the best counts")
    p.add_argument("--calls", type=int, default=3, help="timed calls per turn")
    p.add_argument("--baseline_unet", type=Path, help="another unet.py to compare (its Unet class)")
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top operators for ours")
    args = p.parse_args()
    if min(args.batch_size, args.dim, args.rounds, args.calls, *args.dim_mults) < 1:
        p.error("--batch_size, --dim, --dim_mults, --rounds and --calls must be at least 1")
    if args.image_size % 2 ** (len(args.dim_mults) - 1):
        p.error(f"--image_size {args.image_size} must be a multiple of {2 ** (len(args.dim_mults) - 1)} "
                f"for {len(args.dim_mults)} levels of --dim_mults")
    if args.baseline_unet and not args.baseline_unet.is_file():
        p.error(f"--baseline_unet {args.baseline_unet} does not exist")

    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    t = torch.randint(0, 50, (args.batch_size,))
    setups = {}
    for name, net in networks(args).items():
        for layout in ("NCHW", "channels_last"):
            model = net if layout == "NCHW" else _copy_channels_last(net)
            inp = x if layout == "NCHW" else x.contiguous(memory_format=torch.channels_last)
            setups[(name, layout)] = (model, inp, torch.optim.Adam(model.parameters(), lr=1e-4))

    def train_step(model, inp, optimizer):
        loss = (model(inp, t) - inp).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    best = {key: [float("inf"), float("inf")] for key in setups}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for key, (model, inp, optimizer) in setups.items():
            start = time.perf_counter()
            for _ in range(args.calls):
                train_step(model, inp, optimizer)
            train_ms = 1e3 * (time.perf_counter() - start) / args.calls
            with torch.inference_mode():
                start = time.perf_counter()
                for _ in range(args.calls):
                    model(inp, t)
                sample_ms = 1e3 * (time.perf_counter() - start) / args.calls
            if round_:
                best[key] = [min(best[key][0], train_ms), min(best[key][1], sample_ms)]

    print(f"U-Net alone, CPU ({torch.get_num_threads()} threads), batch {args.batch_size}, "
          f"{args.image_size}x{args.image_size}, dim {args.dim}, dim_mults {' '.join(map(str, args.dim_mults))}; "
          f"best of {args.rounds} rounds of {args.calls} calls")
    reference = best.get(("lucidrains", "NCHW"))
    print("| network | layout | parameters | train ms | sample ms | train x lucidrains | sample x lucidrains |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (name, layout), (train_ms, sample_ms) in best.items():
        ratios = [f"{reference[i] / v:.2f}" if reference else "-" for i, v in enumerate((train_ms, sample_ms))]
        params = count_parameters(setups[(name, layout)][0]) / 1e6
        print(f"| {name} | {layout} | {params:.2f}M | {train_ms:.1f} | {sample_ms:.1f} | {ratios[0]} | {ratios[1]} |")
    print("(x lucidrains: lucidrains' NCHW time / this time; higher is faster)")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        model, inp, optimizer = setups[("ours", "channels_last")]
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(args.calls):
                train_step(model, inp, optimizer)
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=20,
                                                                 max_name_column_width=32, max_shapes_column_width=60))


def _copy_channels_last(net: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(net).to(memory_format=torch.channels_last)


if __name__ == "__main__":
    sys.exit(utils.run_command_line(main))
