"""Serve trained models over HTTP: a JSON API and a web page.

    python main.py --train_steps 300                      # writes results/model.pt
    python serve.py --load_path results/model.pt          # then open http://127.0.0.1:8000
    python serve.py --load_path a/model.pt --load_path b/model.pt --device cuda --port 8080

Endpoints (http://127.0.0.1:8000/docs describes every field):
    GET  /               the web page (web/index.html)
    GET  /api/models     the models served: kind, image size, classes, training steps, sampling options
    POST /api/generate   {"model", "n", "seed", "label", "guidance", "threshold", "sampler", "steps", "eta",
                          "format"} -> a PNG grid ("png", the default) or base64 PNGs ("json")
    POST /api/denoise    the same fields -> the reverse process x_T ... x_0 as a GIF ("gif") or PNG frames ("json")
    GET  /healthz        liveness, queue length and request counters

One worker thread samples, one request at a time; at most --queue_size requests wait or run, and a
full queue answers 503 with Retry-After. A client that disconnects stops its request at the next
sampling step. The same seed and fields give the same bytes. Checkpoints are read with
torch.load(weights_only=True), so a downloaded file cannot run code.

One program in one file, in sections: the request fields; the models, one small adapter per kind
(Part 1's diffusion, Part 2's conditional one, Part 3's energy-based model); the work queue; images;
the app; the command line.
"""

from __future__ import annotations

import asyncio
import base64
import io
import math
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from torchvision.utils import make_grid

import grids
import utils
from ddim import ddim_sample_loop
from devices import pick_device
from diffusion import GaussianDiffusion
from unet import Unet

WEB_PAGE = Path(__file__).resolve().parent / "web" / "index.html"
MAX_GUIDANCE = 20.0
MAX_SEED = 2**63 - 1


class FieldError(Exception):
    """A request field out of range: answered 422 with `field: message`."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")


class Cancelled(Exception):
    """The client went away: the sampling loop stops at its next step."""


# ---------------------------------------------------------------------------------------- requests

class GenerateRequest(BaseModel):
    """The fields of /api/generate and /api/denoise; every one may be left out."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="a name from /api/models; optional when one model is served")
    n: int = Field(16, description="number of images (1..--max_images; 1..8 for /api/denoise)")
    seed: int = Field(0, description=f"random seed, 0..{MAX_SEED}: the same seed and fields give the same bytes")
    label: int | str | None = Field(None, description="conditional models: a class index or name; "
                                                      "left out, the images cycle through the classes")
    guidance: float | None = Field(None, description=f"conditional models: guidance weight w, 0..{MAX_GUIDANCE}")
    threshold: str | None = Field(None, description="x0-hat thresholding: none, static or dynamic (conditional); "
                                                    "static (unconditional)")
    sampler: str | None = Field(None, description="diffusion: ddim (default) or ancestral (Algorithm 2)")
    steps: int | None = Field(None, description="sampling steps: ddim 1..T (default T), ancestral exactly T; "
                                                "ebm: Langevin steps")
    eta: float = Field(0.0, description="ddim: 0 deterministic .. 1 the ancestral sampler's noise")
    format: str | None = Field(None, description="generate: png (default) or json; denoise: gif (default) or json")


@dataclass
class Params:
    """A checked request: everything a model needs to sample."""

    n: int
    seed: int
    labels: list[int] | None
    guidance: float
    threshold: str
    sampler: str
    steps: int
    eta: float


def check_range(field: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise FieldError(field, f"must be between {low} and {high}, got {value}")


def seeded_noise(seed: int) -> Callable[[tuple, torch.device], torch.Tensor]:
    """noise_like from a generator of its own: drawn on the CPU, so a seed gives the same images on any device."""
    generator = torch.Generator().manual_seed(seed)
    return lambda shape, device: torch.randn(tuple(shape), generator=generator).to(device)


# ---------------------------------------------------------------------------------------- models

class DiffusionModel:
    """Part 1's unconditional GaussianDiffusion; the subclasses below change only what differs."""

    kind = "diffusion"

    def __init__(self, name: str, diffusion: GaussianDiffusion, train_steps: int):
        self.name, self.diffusion, self.train_steps = name, diffusion.eval(), train_steps
        self.classes: list[str] | None = None
        self.thresholds = ["static"]

    def describe(self) -> dict:
        T = self.diffusion.num_timesteps
        return {"name": self.name, "kind": self.kind, "image_size": self.diffusion.image_size,
                "channels": self.diffusion.channels, "classes": self.classes, "train_steps": self.train_steps,
                "timesteps": T, "samplers": {"ddim": {"steps": [1, T], "eta": [0.0, 1.0]}, "ancestral": {"steps": [T, T]}},
                "default_sampler": "ddim", "default_steps": T, "thresholds": self.thresholds,
                "guidance": [0.0, MAX_GUIDANCE] if self.classes else None}

    def check(self, request: GenerateRequest, max_images: int) -> Params:
        T = self.diffusion.num_timesteps
        check_range("n", request.n, 1, max_images)
        check_range("seed", request.seed, 0, MAX_SEED)
        sampler = request.sampler or "ddim"
        if sampler not in ("ddim", "ancestral"):
            raise FieldError("sampler", f"must be ddim or ancestral for model {self.name!r}, got {sampler!r}")
        steps = T if request.steps is None else request.steps
        if sampler == "ancestral" and steps != T:
            raise FieldError("steps", f"the ancestral sampler runs all T = {T} steps, got {steps}; use sampler ddim for fewer")
        check_range("steps", steps, 1, T)
        check_range("eta", request.eta, 0.0, 1.0)
        threshold = request.threshold or "static"
        if threshold not in self.thresholds:
            raise FieldError("threshold", f"must be one of {', '.join(self.thresholds)} for model {self.name!r}, "
                                          f"got {threshold!r}")
        labels, guidance = self.check_labels(request)
        return Params(request.n, request.seed, labels, guidance, threshold, sampler, steps, request.eta)

    def check_labels(self, request: GenerateRequest) -> tuple[list[int] | None, float]:
        for field in ("label", "guidance"):
            if getattr(request, field) is not None:
                raise FieldError(field, f"model {self.name!r} is unconditional: leave {field} out")
        return None, 0.0

    @torch.no_grad()
    def sample(self, p: Params, on_step: Callable[[torch.Tensor], None]) -> torch.Tensor:
        """Images [n, C, H, W] in [0, 1]; on_step(x) sees x_T and every x after a step (in [-1, 1])."""
        d = self.diffusion
        noise = seeded_noise(p.seed)
        x = noise((p.n, d.channels, d.image_size, d.image_size), d.device)
        on_step(x)
        y = None if p.labels is None else torch.tensor(p.labels, device=d.device)
        if p.sampler == "ddim":
            x = ddim_sample_loop(d, x, p.steps, p.eta, y, p.guidance, p.threshold, noise, lambda i, x: on_step(x))
        else:  # Algorithm 2 with the model's own p_sample, its noise drawn from this request's seed
            d.noise_like = noise  # one worker thread samples, so no other request sees this
            try:
                for t_index in reversed(range(d.num_timesteps)):
                    t = torch.full((p.n,), t_index, device=d.device, dtype=torch.long)
                    x = d.p_sample(x, t, t_index) if y is None else d.p_sample(x, t, t_index, y, p.guidance, p.threshold)
                    on_step(x)
            finally:
                del d.noise_like  # back to the class's method
        return ((x.clamp(-1, 1) + 1) / 2).float().cpu()


class ConditionalModel(DiffusionModel):
    """Part 2's ConditionalGaussianDiffusion: a class label, guidance weight and thresholding."""

    kind = "conditional-diffusion"

    def __init__(self, name: str, diffusion: GaussianDiffusion, train_steps: int, classes: list[str]):
        super().__init__(name, diffusion, train_steps)
        self.classes, self.thresholds = list(classes), ["none", "static", "dynamic"]

    def check_labels(self, request: GenerateRequest) -> tuple[list[int] | None, float]:
        K, label = len(self.classes), request.label
        if isinstance(label, str) and label not in self.classes:
            raise FieldError("label", f"unknown class {label!r}; model {self.name!r} knows {', '.join(self.classes)} "
                                      f"(or their indices 0..{K - 1})")
        if isinstance(label, str):
            label = self.classes.index(label)
        if label is not None:
            check_range("label", label, 0, K - 1)
        guidance = 0.0 if request.guidance is None else request.guidance
        check_range("guidance", guidance, 0.0, MAX_GUIDANCE)
        labels = [label] * request.n if label is not None else [i % K for i in range(request.n)]
        return labels, guidance


class EnergyModelServed:
    """Part 3's EnergyModel: Langevin chains from uniform noise (energy.py), `steps` Langevin steps."""

    kind = "ebm"
    max_steps = 1000

    def __init__(self, name: str, ebm, train_steps: int):
        self.name, self.ebm, self.train_steps, self.classes = name, ebm.eval(), train_steps, None

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "image_size": self.ebm.image_size, "channels": self.ebm.channels,
                "classes": None, "train_steps": self.train_steps, "timesteps": None,
                "samplers": {"langevin": {"steps": [1, self.max_steps]}}, "default_sampler": "langevin",
                "default_steps": self.ebm.sample_steps, "thresholds": [], "guidance": None}

    def check(self, request: GenerateRequest, max_images: int) -> Params:
        check_range("n", request.n, 1, max_images)
        check_range("seed", request.seed, 0, MAX_SEED)
        if (request.sampler or "langevin") != "langevin":
            raise FieldError("sampler", f"model {self.name!r} is an energy-based model: its sampler is langevin, "
                                        f"got {request.sampler!r}")
        steps = self.ebm.sample_steps if request.steps is None else request.steps
        check_range("steps", steps, 1, self.max_steps)
        for field in ("label", "guidance", "threshold"):
            if getattr(request, field) is not None:
                raise FieldError(field, f"model {self.name!r} is an energy-based model: leave {field} out")
        if request.eta != 0:
            raise FieldError("eta", f"model {self.name!r} is an energy-based model: leave eta out")
        return Params(request.n, request.seed, None, 0.0, "none", "langevin", steps, 0.0)

    def sample(self, p: Params, on_step: Callable[[torch.Tensor], None]) -> torch.Tensor:
        """Images [n, C, H, W] in [0, 1]; on_step(x) sees the uniform start and every Langevin step."""
        m = self.ebm
        generator = torch.Generator().manual_seed(p.seed)
        x = (torch.rand((p.n, m.channels, m.image_size, m.image_size), generator=generator) * 2 - 1).to(m.device)
        on_step(x)
        m.noise_like = lambda shape, device: torch.randn(tuple(shape), generator=generator).to(device)
        try:
            for _ in range(p.steps):
                x = m.langevin_step(x)  # takes grad_x E(x) itself, with the weights frozen (requires_grad off)
                on_step(x)
        finally:
            del m.noise_like
        return ((x.clamp(-1, 1) + 1) / 2).float().cpu()


def load_energy_model(args: dict, ema: dict, step: int, path: str, name: str, device: torch.device):
    try:  # imported here: a handout without Part 3 has no energy.py
        from energy import EnergyModel, EnergyNet
    except ImportError:
        raise utils.UserError(f"--load_path {path} holds Part 3's energy-based model, but energy.py is not here") from None
    ebm = EnergyModel(EnergyNet(channels=3, dim=args["energy_dim"]), image_size=args["image_size"], channels=3,
                      step_size=args["step_size"], noise_scale=args["noise_scale"], langevin_steps=args["langevin_steps"],
                      alpha=args["alpha"], buffer_size=args["buffer_size"], sample_steps=args["sample_steps"])
    load_weights(ebm, ema, path)
    ebm.requires_grad_(False)  # Langevin needs grad_x only
    return EnergyModelServed(name, ebm.to(device), step)


def load_weights(module: torch.nn.Module, ema: dict, path: str) -> None:
    """The EMA weights (AveragedModel's keys start with "module.")."""
    weights = {key.removeprefix("module."): value for key, value in ema.items() if key.startswith("module.")}
    try:
        module.load_state_dict(weights)
    except RuntimeError as error:
        raise utils.UserError(f"--load_path {path} does not fit the network its flags describe ({str(error)[:200]})") from None


def load_model(path: str, name: str, device: torch.device) -> DiffusionModel | EnergyModelServed:
    """Read a main.py checkpoint safely and wrap it in the adapter for its kind (EMA weights)."""
    if not Path(path).is_file():
        raise utils.UserError(f"--load_path {path} does not exist: pass a model.pt that main.py wrote")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        args, ema = checkpoint["args"], checkpoint["ema"]
    except Exception as error:  # noqa: BLE001 (unpickling raises many types)
        raise utils.UserError(f"--load_path {path} is not a checkpoint written by main.py ({type(error).__name__}): "
                              "pass a model.pt that main.py wrote") from None
    step = int(checkpoint.get("step", 0))
    if args.get("model", "diffusion") == "ebm":
        return load_energy_model(args, ema, step, path, name, device)
    classes = checkpoint.get("class_names") if args.get("class_cond") else None
    unet_options = {"num_classes": len(classes)} if classes else {}
    unet = Unet(dim=args["unet_dim"], dim_mults=tuple(args["unet_dim_mults"]), channels=3, **unet_options)
    if classes:
        from diffusion import ConditionalGaussianDiffusion

        diffusion = ConditionalGaussianDiffusion(unet, image_size=args["image_size"], num_classes=len(classes),
                                                 channels=3, timesteps=args["time_steps"])
    else:
        diffusion = GaussianDiffusion(unet, image_size=args["image_size"], channels=3, timesteps=args["time_steps"])
    load_weights(diffusion, ema, path)
    diffusion.to(device)
    return ConditionalModel(name, diffusion, step, classes) if classes else DiffusionModel(name, diffusion, step)


def model_names(paths: list[str]) -> list[str]:
    """results/model.pt -> "results"; repeated names get -2, -3, ..."""
    names: list[str] = []
    for path in paths:
        base = Path(path).resolve().parent.name or Path(path).stem
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


# ---------------------------------------------------------------------------------------- work queue

class Busy(Exception):
    def __init__(self, retry_after: int):
        self.retry_after = retry_after


class Worker:
    """One thread runs the sampling jobs in order; at most `capacity` jobs wait or run at once."""

    def __init__(self, capacity: int):
        self.capacity, self.pending, self.counts = capacity, 0, Counter()
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sampler")
        self.seconds_per_job = 1.0  # a running average, for Retry-After
        self.cancels: set[threading.Event] = set()

    def submit(self, job: Callable[[Callable[[], None]], object]) -> tuple[Future, threading.Event]:
        """Queue job(check); check() raises Cancelled once the returned event is set. Raises Busy when full."""
        with self.lock:
            if self.pending >= self.capacity:
                raise Busy(max(1, math.ceil(self.seconds_per_job * self.pending)))
            self.pending += 1
            cancel = threading.Event()
            self.cancels.add(cancel)
        return self.pool.submit(self._run, job, cancel), cancel

    def _run(self, job, cancel: threading.Event):
        def check() -> None:
            if cancel.is_set():
                raise Cancelled()

        start, outcome = time.perf_counter(), "failed"
        try:
            check()
            result = job(check)
            outcome = "completed"
            return result
        except Cancelled:
            outcome = "cancelled"
            raise
        finally:
            with self.lock:
                self.pending -= 1
                self.counts[outcome] += 1
                self.cancels.discard(cancel)
                self.seconds_per_job = 0.8 * self.seconds_per_job + 0.2 * (time.perf_counter() - start)

    def close(self) -> None:
        for cancel in list(self.cancels):
            cancel.set()
        self.pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------- images

def png_bytes(images: torch.Tensor, nrow: int) -> bytes:
    """[N, C, H, W] in [0, 1] -> one PNG grid, nrow images per row."""
    grid = make_grid(images, nrow=nrow, padding=2)
    buffer = io.BytesIO()
    Image.fromarray(grids.to_uint8(grid).permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def gif_bytes(frames: list[torch.Tensor]) -> bytes:
    """Frames [N, C, H, W] in [0, 1], x_T first -> an animated GIF that loops, holding x_0 for 1.5 s."""
    pictures = [Image.fromarray(grids.to_uint8(make_grid(f, nrow=f.shape[0], padding=2)).permute(1, 2, 0).numpy())
                for f in frames]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:],
                     duration=[80] * (len(pictures) - 1) + [1500], loop=0)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------------------------------- the app

def create_app(models: list[DiffusionModel | EnergyModelServed], queue_size: int = 4, max_images: int = 64) -> FastAPI:
    """The FastAPI app serving `models` (tests build it directly; `main` runs it with uvicorn)."""
    by_name = {m.name: m for m in models}
    worker = Worker(queue_size)
    app = FastAPI(title="DDPM homework models", description=__doc__.split("\n\n")[0])
    app.state.worker = worker
    app.router.on_shutdown.append(worker.close)
    fields = ", ".join(GenerateRequest.model_fields)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = exc.errors()[0]
        if error["type"] == "json_invalid":
            return JSONResponse({"detail": f"malformed JSON: {error.get('ctx', {}).get('error', 'cannot parse')}; "
                                           f"send one JSON object with the fields {fields}"}, status_code=400)
        field = ".".join(str(part) for part in error["loc"] if part != "body") or "body"
        if field == "body":
            message = f"body: send one JSON object (Content-Type: application/json) with the fields {fields}"
        elif error["type"] == "extra_forbidden":
            message = f"{field}: unknown field; the fields are {fields}"
        else:
            message = f"{field}: {error['msg']}, got {error.get('input')!r}"
        return JSONResponse({"detail": message}, status_code=422)

    @app.exception_handler(FieldError)
    async def bad_field(request: Request, exc: FieldError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    def pick(request: GenerateRequest, max_n: int) -> tuple[DiffusionModel, Params]:
        if request.model is None and len(models) > 1:
            raise FieldError("model", f"several models are served: choose one of {', '.join(by_name)}")
        model = models[0] if request.model is None else by_name.get(request.model)
        if model is None:
            raise FieldError("model", f"unknown model {request.model!r}; served: {', '.join(by_name)}")
        return model, model.check(request, max_n)

    async def run(request: Request, job: Callable[[Callable[[], None]], object]):
        """Queue the job, wait for it, cancel it if the client disconnects first."""
        try:
            future, cancel = worker.submit(job)
        except Busy as busy:
            raise HTTPException(503, f"busy: {worker.pending} requests are queued (--queue_size {queue_size}); "
                                     f"retry after {busy.retry_after} s",
                                headers={"Retry-After": str(busy.retry_after)}) from None
        waiting = asyncio.wrap_future(future)
        waiting.add_done_callback(lambda f: f.cancelled() or f.exception())  # a cancelled job's error is expected
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=0.1)
                if done:
                    try:
                        return waiting.result()
                    except Exception as error:  # noqa: BLE001 (a broken model answers 500; the server stays up)
                        message = str(error).splitlines()[0] if str(error) else ""
                        raise HTTPException(500, f"sampling failed: {type(error).__name__}: {message}") from None
                if await request.is_disconnected():
                    cancel.set()
                    return Response(status_code=499)  # nobody reads it: the client is gone
        finally:
            if not waiting.done():
                cancel.set()

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB_PAGE, media_type="text/html")

    @app.get("/healthz")
    def healthz() -> dict:
        with worker.lock:
            return {"status": "ok", "models": len(models), "pending": worker.pending, "queue_size": queue_size,
                    **{k: worker.counts[k] for k in ("completed", "cancelled", "failed")}}

    @app.get("/api/models")
    def list_models() -> list[dict]:
        return [{**m.describe(), "max_images": max_images} for m in models]

    @app.post("/api/generate")
    async def generate(request: Request, body: GenerateRequest | None = None) -> Response:
        body = body or GenerateRequest()
        fmt = body.format or "png"
        if fmt not in ("png", "json"):
            raise FieldError("format", f"must be png or json, got {fmt!r}")
        model, p = pick(body, max_images)
        nrow = len(model.classes) if p.labels and body.label is None and p.n >= len(model.classes) else math.ceil(p.n**0.5)

        def job(check):
            images = model.sample(p, lambda x: check())
            if fmt == "png":
                return Response(png_bytes(images, nrow), media_type="image/png")
            return JSONResponse({"model": model.name, "seed": p.seed, "labels": p.labels, "sampler": p.sampler,
                                 "steps": p.steps, "images": [b64(png_bytes(image[None], 1)) for image in images]})

        return await run(request, job)

    @app.post("/api/denoise")
    async def denoise(request: Request, body: GenerateRequest | None = None) -> Response:
        body = body or GenerateRequest()
        if "n" not in body.model_fields_set:
            body.n = 1  # one image's process unless asked for more
        fmt = body.format or "gif"
        if fmt not in ("gif", "json"):
            raise FieldError("format", f"must be gif or json, got {fmt!r}")
        model, p = pick(body, 8)

        def job(check):
            frames = []

            def keep(x):
                check()
                frames.append(((x.clamp(-1, 1) + 1) / 2).float().cpu())

            model.sample(p, keep)
            if fmt == "gif":
                return Response(gif_bytes(frames), media_type="image/gif")
            return JSONResponse({"model": model.name, "seed": p.seed, "frames": [b64(png_bytes(f, p.n)) for f in frames]})

        return await run(request, job)

    return app


# ---------------------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = utils.CommandLineParser(prog="serve.py", description="Serve trained models over HTTP: an API and a web page.")
    parser.add_argument("--load_path", action="append", required=True,
                        help="a model.pt written by main.py; repeat it to serve several models")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--max_images", type=int, default=64, help="the most images one request may ask for")
    parser.add_argument("--queue_size", type=int, default=4, help="requests waiting or running before 503 busy")
    args = parser.parse_args(argv)
    for flag in ("max_images", "queue_size"):
        if getattr(args, flag) < 1:
            raise utils.UserError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if not 0 <= args.port <= 65535:
        raise utils.UserError(f"--port must be between 0 and 65535, got {args.port}")
    device = pick_device(args.device)
    models = [load_model(path, name, device) for path, name in zip(args.load_path, model_names(args.load_path))]

    import uvicorn

    try:  # fail in one line now rather than in uvicorn's log
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as error:
        raise utils.UserError(f"--host {args.host} --port {args.port}: cannot listen there ({error.strerror or error}); "
                              "choose another --port") from None
    app = create_app(models, queue_size=args.queue_size, max_images=args.max_images)
    print(f"serving {', '.join(m.name for m in models)} on http://{args.host}:{args.port} (API docs at /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(utils.run_command_line(lambda: main()))
