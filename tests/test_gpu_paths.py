"""Ready for the GPU, checked on a CPU: the check of the model before training, --eval_only, the GPU
architecture check, FID's packages, a sync-free EMA update, retried writes, and CPU stand-ins of
the GPU paths (fp16 autocast with a gradient scaler, torch.compile). The meta device stands in for
the GPU where a tensor's device matters. The CUDA-only check at the end runs only where a GPU is
present (and says so when skipped)."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.optim.swa_utils import AveragedModel
from torch.utils._python_dispatch import TorchDispatchMode

import devices
import diffusion
import fid
import main
import trainer as trainer_module
import utils
from trainer import Trainer
from utils import UserError

REPO = Path(__file__).resolve().parent.parent

TINY = ["--unet_dim", "8", "--unet_dim_mults", "1", "2", "--time_steps", "5", "--batch_size", "8",
        "--demo_images", "64", "--num_samples", "4", "--sample_batch_size", "8", "--log_every", "1"]
# The arch list of this venv's torch 2.14 CUDA 13 wheel (no sm_60: no P100). Wheels that list sm_60 run it.
SMALL = [*TINY, "--image_size", "16", "--device", "cpu"]  # the stand-ins: same code path, fewer pixels
ARCH_LIST = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def no_wandb(monkeypatch):
    for name in ("WANDB_PROJECT", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------ item 3: the GPU architecture

@pytest.mark.parametrize("capability, arch_list, name, runs", [
    ((6, 0), ARCH_LIST, "Tesla P100-PCIE-16GB", False),  # Kaggle's P100 on current wheels
    ((7, 5), ARCH_LIST, "Tesla T4", True),
    ((8, 9), ARCH_LIST, "NVIDIA L4", True),  # an sm_86 cubin runs on 8.9 (same major, higher minor)
    ((8, 0), ["sm_86", "sm_90"], "NVIDIA A100", False),  # ... but not on a lower minor
    ((12, 0), ["sm_80", "sm_90", "compute_90"], "RTX 5090", True),  # PTX: the driver compiles it
    ((12, 0), ["sm_80", "sm_90"], "RTX 5090", False),
    ((9, 0), ["sm_80", "sm_90a"], "H100", True),  # arch-specific cubins run on exactly their GPU
    ((9, 1), ["sm_90a"], "imaginary 9.1", False),
    ((6, 0), ["sm_50", "sm_60", "sm_70"], "Tesla P100-PCIE-16GB", True),  # torch <= 2.7 wheels
])
def test_gpu_architecture_check(capability, arch_list, name, runs):
    def check():
        devices.check_gpu_supported(torch.device("cuda", 0), capability, arch_list, name)

    if runs:
        check()
        return
    with pytest.raises(UserError) as caught:
        check()
    message = str(caught.value)
    sm = f"sm_{10 * capability[0] + capability[1]}"
    assert "\n" not in message and name in message and sm in message and " ".join(arch_list) in message
    assert "T4" in message and "--device cpu" in message


def test_main_stops_in_one_line_on_a_gpu_torch_has_no_kernels_for(tmp_path, monkeypatch, capsys):
    """--device auto on Kaggle's P100: the first line of output is the error, before any data or model."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (6, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla P100-PCIE-16GB")
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(ARCH_LIST))
    code = main.main([*TINY, "--save_folder", str(tmp_path), "--train_steps", "1"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --device cuda:0") and "P100" in err[0] and "T4" in err[0]
    assert not (tmp_path / "model.pt").exists()


def test_a_gpu_index_that_is_not_there_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="--device cuda:1: there is no GPU 1, torch sees 1"):
        devices.pick_device("cuda:1")


# ------------------------------------------------------------------ item 5: FID's packages

@pytest.mark.parametrize("module, package", [("torch_fidelity", "torch-fidelity"), ("torchmetrics", "torchmetrics")])
def test_fid_without_its_package_stops_before_training_in_one_line(tmp_path, monkeypatch, capsys, module, package):
    import torchmetrics.image.fid  # noqa: F401 (imported first, as where torch-fidelity is truly missing)

    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError

    def no_network(*args, **kwargs):
        raise AssertionError("the package check must come before any download")

    monkeypatch.setattr(fid.urllib.request, "urlopen", no_network)
    with pytest.raises(UserError, match=f"pip install {package}"):
        fid.check_fid_installed()
    code = main.main([*TINY, "--save_folder", str(tmp_path), "--train_steps", "1", "--fid"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: --fid needs the Python package {package}, not installed") and "without --fid" in err[0]
    assert "Kaggle" in err[0] and not (tmp_path / "model.pt").exists()


def test_fid_check_passes_when_the_packages_are_installed():
    fid.check_fid_installed()


# ------------------------------------------------------------------ item 4: no host sync in the EMA update

class DeviceTraffic(TorchDispatchMode):
    """Records every op that reads a device tensor back to the host or copies between devices.

    On a GPU those are the calls that block the host: `.item()`/`bool()` of a device tensor
    (aten._local_scalar_dense) and a copy between the CPU and the device (aten._to_copy, copy_).
    The tests use the meta device as the "GPU", so every crossing shows up on a CPU-only machine.
    """

    def __init__(self):
        super().__init__()
        self.crossings: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        out = func(*args, **kwargs)
        outputs = [a for a in torch.utils._pytree.tree_leaves(out) if isinstance(a, torch.Tensor)]
        devices = {t.device.type for t in inputs + outputs}
        if func is torch.ops.aten._local_scalar_dense.default and devices != {"cpu"}:
            self.crossings.append(f"{func} reads a {inputs[0].device} tensor")
        elif len(devices) > 1:
            self.crossings.append(f"{func} between {sorted(devices)}")
        return out


def trainer_with_weights_on_the_meta_device() -> Trainer:
    """A tiny CPU trainer whose model and EMA copy then move to `meta`, as they would be on CUDA.

    The EMA wrapper itself is not moved (as in the trainer), so its counter stays on the CPU.
    """
    trainer = main.build_trainer(main.parse_args([*TINY, "--device", "cpu"]))
    trainer.model.to("meta")
    trainer.ema.module.to("meta")
    return trainer


def test_the_recorder_catches_the_sync_in_torchs_averaged_model():
    """The check below can fail: torch's own update moves its counter to the device every call."""
    trainer = trainer_with_weights_on_the_meta_device()
    ema = AveragedModel(trainer.model, use_buffers=True)
    ema.update_parameters(trainer.model)  # the first call copies
    with DeviceTraffic() as traffic:
        ema.update_parameters(trainer.model)
    assert any("_to_copy" in c and "cpu" in c and "meta" in c for c in traffic.crossings), traffic.crossings
    trainer.close()


def test_the_ema_update_never_crosses_between_host_and_device():
    trainer = trainer_with_weights_on_the_meta_device()
    with DeviceTraffic() as traffic:
        for step in range(3):  # the first update copies, the next ones average
            trainer.step = step
            trainer.update_ema()
    assert traffic.crossings == []
    assert int(trainer.ema.n_averaged) == 3 and trainer.ema.n_averaged.device.type == "cpu"
    trainer.close()


def test_train_step_calls_the_sync_free_ema_update(monkeypatch):
    calls = []
    monkeypatch.setattr(Trainer, "update_ema", lambda self: calls.append(self.step))
    monkeypatch.setattr(AveragedModel, "update_parameters",
                        lambda *a, **k: pytest.fail("train_step must not call AveragedModel.update_parameters"))
    trainer = main.build_trainer(main.parse_args([*TINY, "--device", "cpu"]))
    trainer.train_step()
    trainer.train_step()
    assert calls == [0, 1]
    trainer.close()


def test_old_checkpoints_ema_still_loads(tmp_path):
    """A checkpoint whose `ema` came from AveragedModel.update_parameters loads and resumes."""
    trainer = main.build_trainer(main.parse_args([*TINY, "--device", "cpu", "--save_folder", str(tmp_path)]))
    trainer.train_step()
    trainer.ema.update_parameters(trainer.model)  # torch's own update, as older versions did
    trainer.save_checkpoint()
    saved = {k: v.clone() for k, v in trainer.ema.state_dict().items()}
    trainer.close()
    resumed = main.build_trainer(main.parse_args([*TINY, "--device", "cpu", "--load_path", str(tmp_path / "model.pt")]))
    for name, value in saved.items():
        assert torch.equal(resumed.ema.state_dict()[name], value), name
    resumed.train_step()
    assert int(resumed.ema.n_averaged) == int(saved["n_averaged"]) + 1
    resumed.close()


# ------------------------------------------------------------------ item 9: CPU stand-ins of GPU paths

def test_fp16_autocast_with_a_gradient_scaler_on_the_cpu():
    """The T4's path (fp16 autocast + GradScaler) through the same train_step, on the CPU."""
    trainer = main.build_trainer(main.parse_args(SMALL))
    trainer.amp_dtype = torch.float16  # what --amp auto picks on a T4
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)
    seen = []
    real_forward = trainer.wrapped_model.forward
    trainer.wrapped_model.forward = lambda x_0: seen.append(torch.get_autocast_dtype("cpu")) or real_forward(x_0)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    loss = trainer.train_step()  # scale 2^127: the scaled gradients overflow, so the step is skipped
    assert seen == [torch.float16] and torch.isfinite(loss)
    assert trainer.scaler.get_scale() == 2.0**126
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for _ in range(2):
        assert torch.isfinite(trainer.train_step())
    assert trainer.scaler.get_scale() == 1024.0  # no overflow: the scale stays
    assert not all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    images = trainer.sample(4)  # sampling under fp16 autocast returns float32 images in [0, 1]
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    trainer.close()


@pytest.mark.slow
def test_torch_compile_traces_the_training_step(monkeypatch):
    """--compile through TorchDynamo and AOTAutograd; the aot_eager backend skips code generation
    (the GPU's Triton kernels cannot be built here), so it runs in seconds."""
    real_compile = torch.compile
    compiled = []

    def compile_with_aot_eager(model, **kwargs):
        compiled.append(model)
        return real_compile(model, backend="aot_eager", **kwargs)

    monkeypatch.setattr(trainer_module.torch, "compile", compile_with_aot_eager)
    torch._dynamo.reset()
    trainer = main.build_trainer(main.parse_args([*SMALL, "--compile"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a --compile fallback warns and trains eagerly
        losses = [trainer.train_step() for _ in range(2)]
    assert compiled == [trainer.model] and trainer.wrapped_model is not trainer.model
    assert all(torch.isfinite(loss) for loss in losses) and trainer.step == 2
    counters = torch._dynamo.utils.counters
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo really captured a graph
    trainer.close()
    torch._dynamo.reset()


# ------------------------------------------------------------------ on a real GPU only

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: none in this run")
def test_train_step_never_syncs_on_cuda():
    trainer = main.build_trainer(main.parse_args([*TINY, "--device", "cuda"]))
    trainer.train_step()  # the first step may sync (cuDNN autotuning, allocator)
    trainer.train_step()
    trainer.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            trainer.train_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer.synchronize()
    trainer.close()


# ------------------------------------------------------------------ item 8: flaky disks

def error_lines(stderr: str) -> list[str]:
    """stderr without the progress bar; no traceback allowed."""
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("error")]


def test_a_failed_write_is_retried_with_growing_waits(monkeypatch, tmp_path):
    waits, calls = [], []
    monkeypatch.setattr(utils.time, "sleep", waits.append)

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError(107, "Transport endpoint is not connected")

    utils.write_with_retries(flaky, tmp_path / "model.pt")
    assert len(calls) == 3 and waits == [2.0, 4.0]

    waits.clear()
    with pytest.raises(utils.WriteFailed) as caught:
        utils.write_with_retries(lambda: (_ for _ in ()).throw(OSError(28, "No space left on device")),
                                 tmp_path / "model.pt", tries=4, first_wait=1.0)
    assert waits == [1.0, 2.0, 4.0]
    assert str(caught.value) == f"cannot write {tmp_path / 'model.pt'} (No space left on device), tried 4 times over 7 s"


@pytest.mark.slow
def test_a_failing_checkpoint_write_is_retried_then_stops_in_one_line_keeping_the_last_good_one(tmp_path, monkeypatch,
                                                                                               capsys):
    waits, real_save = [], utils.atomic_torch_save
    monkeypatch.setattr(utils.time, "sleep", waits.append)

    def drive_drops_after_step_2(obj, path):
        if obj.get("step", 0) > 2:
            raise OSError(107, "Transport endpoint is not connected")
        real_save(obj, path)

    monkeypatch.setattr(utils, "atomic_torch_save", drive_drops_after_step_2)
    code = main.main([*TINY, "--save_folder", str(tmp_path), "--train_steps", "8", "--save_and_sample_every", "2"])
    err = error_lines(capsys.readouterr().err)
    assert code == 2 and waits == [2.0, 4.0]
    assert len(err) == 1 and err[0].startswith(f"error: cannot write {tmp_path / 'model.pt'} (Transport endpoint is "
                                               "not connected), tried 3 times over 6 s; the checkpoint of step 2 is kept")
    assert "stopped at step 4: when the folder is writable again, resume with python main.py" in err[0]
    assert err[0].endswith(f"--load_path {tmp_path / 'model.pt'}")
    assert torch.load(tmp_path / "model.pt", weights_only=True)["step"] == 2
    assert not (tmp_path / "sample-4.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv", "model.pt", "sample-2.png"]  # no temp files


@pytest.mark.slow
def test_a_failing_log_write_is_reported_the_same_way(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(utils.time, "sleep", lambda seconds: None)
    real_open = open

    def full_disk(path, *args, **kwargs):
        if str(path).endswith("log.csv"):
            raise OSError(28, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk)
    code = main.main([*TINY, "--save_folder", str(tmp_path), "--train_steps", "4", "--save_and_sample_every", "1"])
    monkeypatch.undo()
    err = error_lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: cannot write {tmp_path / 'log.csv'} (No space left on device), tried 3 times")
    assert "the checkpoint of step 1 is kept; stopped at step 1" in err[0]


# ------------------------------------------------------------------ item 2: the check before training

@pytest.fixture
def meta_trainer():
    """A tiny trainer on the meta device: a tensor created on the CPU next to it fails as on a GPU."""
    trainer = main.build_trainer(main.parse_args([*TINY, "--device", "meta"]))
    yield trainer
    trainer.close()


def forward_without_device(self, x_0, noise=None):
    t = torch.randint(0, self.num_timesteps, (x_0.shape[0],))  # the mistake: no device=x_0.device
    noise = self.noise_like(x_0.shape, x_0.device) if noise is None else noise
    return self.p_losses(x_0, t, noise)


def p_sample_loop_without_device(self, img):
    for t_index in reversed(range(self.num_timesteps)):
        t = torch.full((img.shape[0],), t_index, dtype=torch.long)  # the mistake: no device=img.device
        img = self.p_sample(img, t, t_index)
    return img


def sample_on_the_cpu(self, batch_size):
    x_T = self.noise_like((batch_size, self.channels, self.image_size, self.image_size), "cpu")  # the mistake
    return (self.p_sample_loop(x_T) + 1) / 2


@pytest.mark.parametrize("name, mistake, function", [
    ("forward", forward_without_device, "forward"),
    ("p_sample_loop", p_sample_loop_without_device, "sample"),
    ("sample", sample_on_the_cpu, "sample"),
])
def test_the_check_before_training_names_the_function_that_mixes_devices(meta_trainer, monkeypatch, name, mistake,
                                                                          function):
    meta_trainer.check_model()  # the correct code passes on the "GPU"
    monkeypatch.setattr(diffusion.GaussianDiffusion, name, mistake)
    with pytest.raises(UserError) as caught:
        meta_trainer.check_model()
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"`{function}` fails on meta before training: RuntimeError: ")
    assert "device" in message and "device=x.device" in message


def test_the_check_before_training_catches_a_loss_that_is_not_a_scalar(monkeypatch, tmp_path, capsys):
    def per_pixel_loss(self, x_0, t, noise):
        return (noise - self.model(self.q_sample(x_0, t, noise), t)).abs()  # the mistake: no mean

    monkeypatch.setattr(diffusion.GaussianDiffusion, "p_losses", per_pixel_loss)
    code = main.main([*TINY, "--save_folder", str(tmp_path), "--train_steps", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0] == ("error: forward returned [2, 3, 32, 32] for a batch [2, 3, 32, 32]; the loss must be a scalar "
                      "(0-dim) tensor: average over the batch and the pixels")
    assert not (tmp_path / "log.csv").exists() and not (tmp_path / "model.pt").exists()


def test_the_check_before_training_catches_samples_of_the_wrong_shape(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(diffusion.GaussianDiffusion, "p_sample_loop", lambda self, img: img[:, :, ::2, ::2])
    code = main.main([*TINY, "--save_folder", str(tmp_path), "--train_steps", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: sample(2) returned [2, 3, 16, 16]; expected images [2, 3, 32, 32]"]


def test_the_check_before_training_leaves_the_random_state_and_the_weights_alone():
    trainer = main.build_trainer(main.parse_args([*TINY, "--device", "cpu"]))
    rng, weights = torch.get_rng_state(), [p.detach().clone() for p in trainer.model.parameters()]
    trainer.check_model()
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in trainer.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(weights, trainer.model.parameters()))
    assert trainer.step == 0 and int(trainer.ema.n_averaged) == 0
    trainer.close()


@pytest.mark.slow
def test_python_main_py_with_a_device_mistake_stops_at_once_naming_forward(tmp_path):
    """The real command line on a copy of the code whose diffusion.py forward draws t on the CPU."""
    for path in REPO.glob("*.py"):  # the handout's top level
        shutil.copy(path, tmp_path / path.name)
    source = (tmp_path / "diffusion.py").read_text()
    correct = "(batch_size,), device=x_0.device, dtype=torch.long)"
    assert correct in source
    (tmp_path / "diffusion.py").write_text(source.replace(correct, "(batch_size,), dtype=torch.long)"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_PROJECT", None)
    result = subprocess.run([sys.executable, "main.py", *TINY, "--device", "meta", "--train_steps", "1000",
                             "--save_folder", str(tmp_path / "results")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1, result.stderr
    assert err[0].startswith("error: `forward` fails on meta before training: RuntimeError:")
    assert "via diffusion.py forward > p_losses" in err[0]
    assert not (tmp_path / "results" / "log.csv").exists()


# ------------------------------------------------------------------ item 6: --eval_only

@pytest.fixture
def small_fid(monkeypatch):
    """FID with a small fixed feature extractor instead of Inception (no download)."""
    class ColourFeatures(torch.nn.Module):  # uint8 [B, 3, H, W] -> [B, 6]: mean and spread of each channel
        def forward(self, x):
            x = x.float().flatten(2) / 255
            return torch.cat([x.mean(2), x.std(2)], dim=1)

    original = fid.make_fid_metric
    monkeypatch.setattr(fid, "make_fid_metric", lambda weights_path=None, feature=None:
                        original(feature=ColourFeatures()))


@pytest.mark.slow
def test_eval_only_writes_grids_and_fid_of_a_checkpoint_without_training(tmp_path, small_fid, capsys):
    flags = [*TINY, "--save_folder", str(tmp_path), "--save_and_sample_every", "2"]
    assert main.main([*flags, "--train_steps", "2"]) == 0
    checkpoint = tmp_path / "model.pt"
    before = checkpoint.read_bytes()
    log = (tmp_path / "log.csv").read_text()
    (tmp_path / "sample-2.png").unlink()
    capsys.readouterr()
    # --train_steps above the checkpoint's step: still no training (the notebooks' FID cell).
    assert main.main([*flags, "--train_steps", "50", "--load_path", str(checkpoint), "--eval_only", "--fid",
                      "--fid_samples", "16", "--visualize", "--visualize_samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "evaluating the model at step 2 (no training)" in out and "| FID " in out
    assert float(out.split("| FID ")[1].split()[0]) > 0
    for name in ["sample-2.png", "denoising-2.png", "denoising-2.gif"]:
        assert (tmp_path / name).is_file(), name
    assert checkpoint.read_bytes() == before and (tmp_path / "log.csv").read_text() == log


def test_eval_only_needs_a_checkpoint(capsys):
    assert main.main([*TINY, "--eval_only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --eval_only needs --load_path: the model.pt to evaluate (e.g. --load_path results/model.pt)"]


# ------------------------------------------------------------------ item 7: conservative defaults

def test_channels_last_is_on_for_the_cpu_by_default_and_follows_the_flag():
    for flags, expected in [([], True), (["--no-channels_last"], False), (["--channels_last"], True)]:
        trainer = main.build_trainer(main.parse_args([*TINY, "--device", "cpu", *flags]))
        assert trainer.channels_last is expected
        assert f"channels_last {'on' if expected else 'off'}" in trainer.describe()
        trainer.close()
    assert main.parse_args([]).channels_last is None  # the default: decided by the device (off on CUDA)


def test_processes_wait_hours_not_minutes_for_rank_0s_sampling_and_fid(monkeypatch):
    seen = {}

    class Started(Exception):
        pass

    def init_process_group(**kwargs):
        seen.update(kwargs)
        raise Started

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(trainer_module.dist, "init_process_group", init_process_group)
    with pytest.raises(Started):
        main.build_trainer(main.parse_args([*TINY, "--device", "cpu"]))
    assert seen["backend"] == "gloo" and seen["timeout"] >= datetime.timedelta(hours=1)
