"""Classifier-free guidance: one network call on a batch of 2B, or two calls on B?

    python bench/bench_guidance.py                         # the CPU, batches 8, 32 and 128, the default U-Net
    python bench/bench_guidance.py --device cuda           # the same on a GPU
    python bench/bench_guidance.py --batch_sizes 4 --rounds 2 --dim 8    # a quick check

A guided sampling step needs eps(x_t, t, y) and eps(x_t, t, null) (diffusion.py's guided_noise).
Both ways compute the same numbers; this measures one guided prediction (inference, no_grad) each way:

  one call on 2B   model(cat[x, x], cat[t, t], cat[y, null]), then split   (what guided_noise does)
  two calls on B   model(x, t, y) and model(x, t, null)

The two take turns, round after round, so a change in the machine's load hits both alike; each
figure is the best round of `--repeats` calls. Prints a markdown table and the ratio two/one
(> 1: the single 2B call is faster).
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import utils  # noqa: E402
from unet import Unet  # noqa: E402


def one_call(model, x, t, y, null):
    eps = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
    return eps.chunk(2)


def two_calls(model, x, t, y, null):
    return model(x, t, y), model(x, t, null)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Milliseconds per call, averaged over `repeats` calls."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    p = utils.CommandLineParser(prog=f"bench/{Path(__file__).name}", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[8, 32, 128], help="B, the labels per guided step")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--dim_mults", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--num_classes", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5, help="turns each way takes; the best counts")
    p.add_argument("--repeats", type=int, default=3, help="calls per turn")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise utils.UserError("--device cuda: no CUDA device here; use --device cpu")
    if min(args.batch_sizes) < 1 or args.rounds < 1 or args.repeats < 1:
        raise utils.UserError("--batch_sizes, --rounds and --repeats must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = Unet(dim=args.dim, dim_mults=tuple(args.dim_mults), num_classes=args.num_classes).to(device).eval()
    for parameter in model.parameters():  # as if trained: no layer left at its zero initialisation
        torch.nn.init.normal_(parameter, std=0.05)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"guided prediction, Unet(dim={args.dim}, dim_mults={tuple(args.dim_mults)}), "
          f"{args.image_size}x{args.image_size}, on {name}; best of {args.rounds} rounds of {args.repeats} calls")
    print("| device | B | one call on 2B (ms) | two calls on B (ms) | two / one |")
    print("|---|---|---|---|---|")
    for batch in args.batch_sizes:
        x = torch.randn(batch, 3, args.image_size, args.image_size, device=device)
        t = torch.randint(0, 50, (batch,), device=device)
        y = torch.randint(0, args.num_classes, (batch,), device=device)
        null = torch.full_like(y, args.num_classes)
        ways = {"one": functools.partial(one_call, model, x, t, y, null),
                "two": functools.partial(two_calls, model, x, t, y, null)}
        with torch.no_grad():
            a, b = ways["one"](), ways["two"]()  # warm-up; and both ways agree
            if not all(torch.allclose(u, v, atol=1e-4, rtol=1e-4) for u, v in zip(a, b)):
                raise SystemExit("bench_guidance: the two ways give different predictions")
            best = {way: float("inf") for way in ways}
            for _ in range(args.rounds):
                for way, fn in ways.items():
                    best[way] = min(best[way], timed(fn, device, args.repeats))
        print(f"| {device.type} | {batch} | {best['one']:.1f} | {best['two']:.1f} | {best['two'] / best['one']:.2f} |")


if __name__ == "__main__":
    sys.exit(utils.run_command_line(main))
