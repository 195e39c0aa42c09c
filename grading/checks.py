"""Verdicts that several parts share, on what a spy test observed: how forward draws t and noise, how a
sampling loop steps, how sample maps its result to [0, 1], and whether code runs on a GPU."""

from __future__ import annotations

import torch

from grading import close, dtype_name, fail, times, type_name
from grading.stand_ins import chain


def forward_result(seen: dict, call: str) -> list[dict]:
    """forward called p_losses once per call and returned its loss unchanged; the recorded p_losses calls."""
    calls = seen["p_losses_calls"]
    if len(calls) != len(seen["got"]):
        fail(f"forward called p_losses {times(len(calls))} in {times(len(seen['got']))} of its calls; it should call "
             f"{call} exactly once and return its loss")
    for got, call_seen in zip(seen["got"], calls):
        if not (isinstance(got, torch.Tensor) and got.shape == () and torch.equal(got, call_seen["out"])):
            fail("forward must return the loss that p_losses returned (a scalar tensor), unchanged")
    return calls


def noise_drawn_for(seen: dict, x_0: torch.Tensor, used, call: str) -> None:
    """forward drew its noise with self.noise_like(x_0.shape, x_0.device) and passed it on (`used`)."""
    if not seen["noise_like"]:
        fail(f"{call} never called self.noise_like: draw the noise with self.noise_like(x_0.shape, x_0.device), "
             "not torch.randn / randn_like (noise_like is the one seam the grader and trainer use)")
    shape, device = seen["noise_like"][-1]
    if tuple(shape) != tuple(x_0.shape):
        fail(f"forward asked noise_like for shape {list(shape)}; the noise must have x_0's shape {list(x_0.shape)}")
    if device not in ("None", str(x_0.device)):
        fail(f"forward asked noise_like for noise on {device}; it belongs on x_0's device {x_0.device}")
    if not any(isinstance(used, torch.Tensor) and torch.equal(used, z) for z in seen["noise_like_returned"]):
        fail("forward did not pass the noise drawn by noise_like to p_losses")


def time_steps(t, again, x_0: torch.Tensor, timesteps: int) -> None:
    """t: a [B] long tensor on x_0's device, one uniform draw from 0..T-1 per example, new at every call."""
    batch = x_0.shape[0]
    if not isinstance(t, torch.Tensor):
        fail(f"forward passed t = {t!r} to p_losses; t must be a [B] long tensor, one step per example")
    if t.dtype != torch.long:
        fail(f"forward drew t with dtype {dtype_name(t)}; time steps are indexes: use torch.randint(..., dtype=torch.long)")
    if tuple(t.shape) != (batch,):
        fail(f"forward drew t of shape {list(t.shape)}; it needs shape [B] = [{batch}], one step per example")
    if t.device != x_0.device:
        fail(f"forward drew t on {t.device} while x_0 is on {x_0.device}; create t on (or move it to) x_0's device")
    low, high = int(t.min()), int(t.max())
    if low == high:
        fail(f"forward gave every example the same t = {low}; draw one t per example (shape [B]) so a batch mixes steps")
    if low < 0 or high > timesteps - 1:
        hint = " (the slides' 1-indexed t; in code t = 0..T-1)" if low >= 1 and high == timesteps else ""
        fail(f"forward drew t in {low}..{high}, outside 0..T-1 = 0..{timesteps - 1}{hint}: use torch.randint(0, T, (B,))")
    counts = torch.bincount(t.cpu(), minlength=timesteps)
    if counts[timesteps - 1] == 0:
        fail(f"forward: in {batch} draws t never took the value T-1 = {timesteps - 1}: torch.randint's upper bound is "
             "exclusive, so draw with torch.randint(0, T, (B,)), T = self.num_timesteps")
    if counts[0] == 0:
        fail(f"forward: in {batch} draws t never took the value 0: t runs over 0..T-1 = 0..{timesteps - 1}")
    expected = batch / timesteps  # a fair draw stays far inside [expected / 4, expected * 2.5] (odds below 1e-9)
    uneven = [k for k in range(timesteps) if not expected / 4 <= counts[k] <= expected * 2.5]
    if uneven:
        fail(f"forward's t is far from uniform on 0..{timesteps - 1}: value {uneven[0]} came up {int(counts[uneven[0]])} "
             f"times in {batch} draws (about {expected:.0f} expected); draw t ~ Uniform{{0, ..., T-1}}")
    if isinstance(again, torch.Tensor) and again.shape == t.shape and torch.equal(again, t):
        fail("forward drew exactly the same t on two calls: it must draw new steps every time "
             "(do not seed or keep t on self)")


def reverse_steps(steps: list[dict], img: torch.Tensor, got, timesteps: int, call: str) -> None:
    """p_sample_loop called p_sample for t_index = T-1, ..., 0, each step on the last one's output, and
    returned the last output. `call` shows the right call of p_sample."""
    batch = img.shape[0]
    order = [s["t_index"] for s in steps]
    if order != list(range(timesteps - 1, -1, -1)):
        named = {
            tuple(range(timesteps)): "time runs forwards; Algorithm 2 goes from t_index = T-1 down to 0",
            tuple(range(timesteps - 1, 0, -1)): "the last step (t_index 0) is skipped: range(T-1, -1, -1) includes 0",
            tuple(range(timesteps - 2, -1, -1)): "the first step (t_index T-1) is skipped",
            tuple(range(timesteps, 0, -1)): "t_index runs T..1 (the slides' 1-indexed time); in code it runs T-1..0",
        }.get(tuple(order), "")
        shown = order if len(order) <= 8 else order[:4] + ["..."] + order[-3:]
        fail(f"p_sample_loop called p_sample with t_index = {shown}; expected T-1, ..., 0 = "
             f"{timesteps - 1}, ..., 0 ({timesteps} steps)" + (f": {named}" if named else ""))
    for k, step in enumerate(steps):
        t, t_index = step["t"], step["t_index"]
        if not isinstance(t_index, int):
            fail(f"p_sample_loop passed t_index as {type_name(t_index)}; pass an int (the loop counter)")
        if not isinstance(t, torch.Tensor) or t.dtype != torch.long or tuple(t.shape) != (batch,) or t.device != img.device:
            described = f"{dtype_name(t)} {list(t.shape)} on {t.device}" if isinstance(t, torch.Tensor) else repr(t)
            fail(f"p_sample_loop passed t = {described} at t_index {t_index}; t must be a [B] = [{batch}] long tensor "
                 f"on the image's device, every entry equal to t_index")
        if not bool((t == t_index).all()):
            hint = " (t built once before the loop?)" if bool((t == steps[0]["t_index"]).all()) else ""
            fail(f"p_sample_loop passed t = {t.tolist()[:4]}... with t_index = {t_index}; every entry of t must equal "
                 f"t_index{hint}")
        previous = img if k == 0 else steps[k - 1]["out"]
        if step["x"].shape != previous.shape or not torch.equal(step["x"], previous):
            source = "img (x_T)" if k == 0 else "the previous step's output"
            fail(f"p_sample_loop: the step at t_index {t_index} did not start from {source}; "
                 f"each step continues from the last: x = {call}")
    last = steps[-1]["out"]
    if not isinstance(got, torch.Tensor) or got.shape != last.shape:
        fail(f"p_sample_loop returned {type_name(got) if not isinstance(got, torch.Tensor) else list(got.shape)}; "
             "it must return the last step's output, shaped like img")
    if not torch.allclose(got, last, rtol=0, atol=1e-6):
        if torch.allclose(got, (last + 1) / 2, rtol=0, atol=1e-6):
            fail("p_sample_loop returned x_0 mapped to [0, 1]; keep x_0 in [-1, 1] here (sample does the mapping)")
        fail("p_sample_loop must return the output of the last step (t_index 0), unchanged")


def mapped(got, x: torch.Tensor, shape: tuple[int, ...], name: str, call: str) -> None:
    """sample returned (x + 1) / 2 for the samples x in [-1, 1] that `call` gave it."""
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(shape):
        fail(f"sample returned {list(got.shape) if isinstance(got, torch.Tensor) else type_name(got)}; "
             f"expected shape {list(shape)}")
    if close(got, (x + 1) / 2):
        return
    if torch.allclose(got, x, rtol=0, atol=1e-6):
        fail(f"sample returned results in [-1, 1] instead of [0, 1]: map {name} with ({name} + 1) / 2")
    if torch.allclose(got, x.clamp(0, 1), rtol=0, atol=1e-6):
        fail(f"sample clamped {name} to [0, 1] instead of mapping it: use ({name} + 1) / 2, which keeps the "
             "negative half")
    fail(f"sample must return ({call} + 1) / 2: images in [0, 1]")


def on_gpu(function: str, seen: dict) -> None:
    """What observe_on_gpu saw: everything created on the inputs' device, and the result there too."""
    gpu = seen["gpu"]
    if seen["inconclusive"]:
        return  # the code reads tensor values, which the stand-in GPU cannot do: its other tests cover it
    how = "; this passes on a CPU but crashes on a GPU (the test runs your code on a stand-in GPU)"
    fix = seen.get("fix") or f"create it with device={seen['inputs']}.device"
    for name, device in seen["created"].items():
        if device != gpu:
            fail(f"{function}: {name} was created on {device} while {seen['inputs']} is on the GPU; {fix}{how}")
    if seen["out"] not in (gpu, "not a tensor"):
        fail(f"{function} returned a tensor on {seen['out']} while its inputs are on the GPU{how}")


def sample_calls(seen: dict, shape: tuple[int, ...], timesteps: int, call: str, each_call=None) -> None:
    """sample drew x_T = self.noise_like(shape, self.device), ran the reverse process on it (self.p_sample_loop
    once, or its own loop over self.p_sample: both give the same x_0 from the spies) and mapped x_0 to [0, 1].
    each_call(recorded call, callee) checks what else each call was given."""
    if not seen["noise_like"]:
        fail("sample never called self.noise_like: draw x_T with self.noise_like((B, C, H, W), self.device), "
             "not torch.randn (noise_like is the seam the grader uses)")
    asked, device = seen["noise_like"][0]
    if tuple(asked) != tuple(shape):
        fail(f"sample asked noise_like for shape {list(asked)}; x_T needs (B, C, H, W) = {list(shape)} "
             "(one image per example, C = self.channels, H = W = self.image_size)")
    if device not in ("None", seen["buffers_device"]):
        fail(f"sample asked noise_like for noise on {device}; sample on the buffers' device, self.device")
    calls, steps, x_T = seen["loop_calls"], seen["steps"], seen["noise_like_returned"][0]
    if len(calls) > 1 or (not calls and not steps):
        fail(f"sample called p_sample_loop {times(len(calls))}; call it once, on x_T")
    for call_seen in calls or steps:
        if each_call:
            each_call(call_seen, "p_sample_loop" if calls else "p_sample")
    if not torch.equal(calls[0]["img"] if calls else steps[0]["x"], x_T):
        fail("sample did not pass the x_T drawn by noise_like to p_sample_loop")
    if not calls and [s["t_index"] for s in steps] != list(range(timesteps - 1, -1, -1)):
        fail("sample's own loop must call p_sample for t_index = T-1, ..., 0, each step on the last one's output; "
             f"or call self.{call}")
    mapped(seen["got"], chain(x_T, timesteps), shape, "x_0", call)


def same_tensor(a, b) -> bool:
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)


def describe(value) -> str:
    """A returned value in words: "a float32 tensor of shape [2, 3]", "NoneType (a missing `return`?)"."""
    if isinstance(value, torch.Tensor):
        return f"a {dtype_name(value)} tensor of shape {list(value.shape)}"
    return type_name(value) + (" (a missing `return`?)" if value is None else "")


def langevin_chain(seen: dict, function: str, wanted_steps: int, setting: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Part 3: (start, samples) of the Langevin chain that `function` ran, through self.langevin_sample once or
    its own loop over self.langevin_step (stand_ins.spy_langevin); fails naming what is wrong with it."""
    chains, steps = seen["langevin_sample"], seen["langevin_step"]
    if len(chains) > 1 or (not chains and not steps):
        fail(f"{function} called langevin_sample {times(len(chains))}; call it once: "
             f"self.langevin_sample(x, self.{setting})")
    if chains:
        if chains[0]["steps"] != wanted_steps:
            fail(f"{function} ran langevin_sample with steps = {chains[0]['steps']!r}; use self.{setting} = {wanted_steps}")
        return chains[0]["x"], chains[0]["out"]
    if len(steps) != wanted_steps:
        fail(f"{function} ran langevin_step {times(len(steps))}; run self.{setting} = {wanted_steps} steps "
             f"(self.langevin_sample(x, self.{setting}) does)")
    for previous, step in zip(steps, steps[1:]):
        if not same_tensor(step["x"], previous["out"]):
            fail(f"{function}: a Langevin step did not start from the previous step's output: x = self.langevin_step(x)")
    return steps[0]["x"], steps[-1]["out"]
