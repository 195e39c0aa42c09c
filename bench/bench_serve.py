"""Load figures for serve.py: requests/s and p50/p95 latency at 1, 4 and 16 concurrent clients.

    python bench/bench_serve.py --load_path results/model.pt
    python bench/bench_serve.py --load_path results/model.pt --n 4 --ddim_steps 10 --requests 32 --seconds 60

Starts `python serve.py` on a free port of 127.0.0.1 (its queue as deep as the most clients, so that
no request is refused), then for each sampler (DDIM with --ddim_steps, and the full ancestral sampler
over all T steps) and each number of clients sends POST /api/generate for a grid of --n images, each
client one request at a time with its own seeds. A cell stops after --requests answers or
--seconds, whichever comes first; a request already sent is waited for. Prints a Markdown table.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import utils  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(load_path: str, queue_size: int, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    process = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--load_path", load_path, "--port", str(port),
                                "--queue_size", str(queue_size)], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serve.py exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("serve.py did not start within 120 s")


def run_cell(url: str, body: dict, clients: int, requests: int, seconds: float) -> dict:
    """`clients` threads send `body` (new seed each time) until `requests` answers or `seconds` pass."""
    latencies: list[float] = []
    refused = []
    lock = threading.Lock()
    sent = [0]
    deadline = time.monotonic() + seconds

    def client(k: int) -> None:
        with httpx.Client(timeout=600) as http:
            while True:
                with lock:
                    if sent[0] >= requests or time.monotonic() > deadline:
                        return
                    sent[0] += 1
                    seed = 1000 * k + sent[0]
                start = time.perf_counter()
                reply = http.post(f"{url}/api/generate", json={**body, "seed": seed})
                elapsed = time.perf_counter() - start
                with lock:
                    (latencies if reply.status_code == 200 else refused).append(elapsed)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()

    def quantile(q: float) -> float:
        return latencies[min(len(latencies) - 1, round(q * (len(latencies) - 1)))] if latencies else float("nan")

    return {"ok": len(latencies), "refused": len(refused), "rps": len(latencies) / wall, "p50": quantile(0.5),
            "p95": quantile(0.95), "mean": statistics.fmean(latencies) if latencies else float("nan")}


def main() -> None:
    p = utils.CommandLineParser(prog="bench/bench_serve.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--load_path", required=True, help="a model.pt written by main.py")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrent clients per cell")
    p.add_argument("--n", type=int, default=4, help="images per request (one small grid)")
    p.add_argument("--ddim_steps", type=int, default=10, help="DDIM's sampling steps")
    p.add_argument("--requests", type=int, default=32, help="answers per cell, at most")
    p.add_argument("--seconds", type=float, default=60, help="time per cell, at most (requests in flight finish)")
    p.add_argument("--threads", type=int, default=1, help="the server's torch threads (OMP_NUM_THREADS)")
    args = p.parse_args()
    process, url = start_server(args.load_path, queue_size=max(args.clients), threads=args.threads)
    try:
        model = httpx.get(f"{url}/api/models", timeout=10).json()[0]
        T = model["timesteps"]
        print(f"model {model['name']} ({model['kind']}, {model['image_size']}px, T = {T}, trained {model['train_steps']} "
              f"steps); grid of {args.n}; server on {url} with OMP_NUM_THREADS={args.threads}; "
              f"cells bounded by {args.requests} requests or {args.seconds:.0f} s\n")
        print("| sampler | clients | requests | req/s | p50 latency (s) | p95 latency (s) | refused (503) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        samplers = [(f"DDIM, {args.ddim_steps} steps", {"sampler": "ddim", "steps": args.ddim_steps}),
                    (f"ancestral, {T} steps", {"sampler": "ancestral"})]
        for label, options in samplers:
            body = {"model": model["name"], "n": args.n, **options}
            httpx.post(f"{url}/api/generate", json={**body, "seed": 0}, timeout=600)  # warm-up
            for clients in args.clients:
                r = run_cell(url, body, clients, args.requests, args.seconds)
                print(f"| {label} | {clients} | {r['ok']} | {r['rps']:.2f} | {r['p50']:.3f} | {r['p95']:.3f} | "
                      f"{r['refused']} |", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(utils.run_command_line(main))
