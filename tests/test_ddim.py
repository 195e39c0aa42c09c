"""DDIM (ddim.py): the strided schedule, eta = 1 is Algorithm 2, eta = 0 is deterministic and exact."""

import itertools

import pytest
import torch
from torch import nn

from ddim import ddim_sample, ddim_sample_loop, ddim_step, ddim_timesteps
from diffusion import GaussianDiffusion
from unet import Unet

T = 20


def make_diffusion(timesteps: int = T, seed: int = 0) -> GaussianDiffusion:
    torch.manual_seed(seed)
    unet = Unet(dim=8, dim_mults=(1, 2), channels=3)
    with torch.no_grad():  # the last layer starts at zero: give it weights so eps_hat depends on the network
        unet.final.weight.normal_(0, 0.1)
        unet.final.bias.normal_(0, 0.1)
    return GaussianDiffusion(unet, image_size=8, channels=3, timesteps=timesteps).eval()


class FixedNoise:
    """noise_like replacement: hands out a fixed list of tensors in order, and counts the draws."""

    def __init__(self, tensors):
        self.tensors, self.calls = list(tensors), 0

    def __call__(self, shape, device):
        tensor = self.tensors[self.calls]
        assert tuple(tensor.shape) == tuple(shape)
        self.calls += 1
        return tensor.to(device)


def test_timesteps_are_strided_descending_and_span_the_chain():
    assert ddim_timesteps(T, T) == list(range(T - 1, -1, -1))
    assert ddim_timesteps(T, 1) == [T - 1]
    for steps in range(2, T + 1):
        taus = ddim_timesteps(T, steps)
        assert len(taus) == steps, steps
        assert taus[0] == T - 1 and taus[-1] == 0
        assert all(a > b for a, b in itertools.pairwise(taus)), taus
    assert ddim_timesteps(1000, 4) == [999, 666, 333, 0]


@pytest.mark.parametrize("steps", [0, T + 1, -3])
def test_timesteps_out_of_range_is_a_clear_error(steps):
    with pytest.raises(ValueError, match=f"between 1 and T = {T}"):
        ddim_timesteps(T, steps)


def test_eta_one_on_every_step_is_the_ancestral_sampler(one_thread):
    """eta = 1, steps = T: sigma^2 is the posterior variance, so each jump is p_sample with the same z."""
    diffusion = make_diffusion()
    shape = (3, 3, 8, 8)
    torch.manual_seed(1)
    x_T = torch.randn(shape)
    zs = [torch.randn(shape) for _ in range(T)]

    diffusion.noise_like = FixedNoise(zs)
    ancestral = diffusion.p_sample_loop(x_T.clone())
    ancestral_draws = diffusion.noise_like.calls

    ddim_noise = FixedNoise(zs)
    ddim = ddim_sample_loop(diffusion, x_T.clone(), steps=T, eta=1.0, noise=ddim_noise)

    assert ancestral_draws == ddim_noise.calls == T - 1  # no noise on the last step
    torch.testing.assert_close(ddim, ancestral, atol=2e-5, rtol=1e-4)
    # ... and the comparison has teeth: the deterministic sampler lands elsewhere.
    eta0 = ddim_sample_loop(diffusion, x_T.clone(), steps=T, eta=0.0)
    assert (eta0 - ancestral).abs().max() > 1e-2


def test_every_step_matches_p_sample(one_thread):
    """Step by step from the same x_t (not only at the end): t_index T-1 down to 0."""
    diffusion = make_diffusion()
    torch.manual_seed(2)
    x = torch.randn(2, 3, 8, 8)
    for t_index in reversed(range(T)):
        z = torch.randn_like(x)
        diffusion.noise_like = FixedNoise([z])
        t = torch.full((2,), t_index, dtype=torch.long)
        expected = diffusion.p_sample(x, t, t_index)
        got = ddim_step(diffusion, x, t_index, t_index - 1, eta=1.0, noise=FixedNoise([z]))
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4, msg=f"t_index {t_index}")
        x = expected


def test_eta_zero_is_deterministic_and_draws_no_noise_after_x_T(one_thread):
    diffusion = make_diffusion()
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))

    def no_noise(shape, device):
        raise AssertionError("eta = 0 must not draw noise")

    first = ddim_sample_loop(diffusion, x_T.clone(), steps=7, eta=0.0, noise=no_noise)
    torch.manual_seed(123)  # another global RNG state changes nothing
    second = ddim_sample_loop(diffusion, x_T.clone(), steps=7, eta=0.0, noise=no_noise)
    assert torch.equal(first, second)


class OracleNoise(nn.Module):
    """The exact eps for data that is one image c: eps = (x_t - sqrt(abar_t) c) / sqrt(1 - abar_t)."""

    def __init__(self, c: torch.Tensor, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.c, self.abar = c, alphas_cumprod

    def forward(self, x, t):
        abar = self.abar[t].reshape(-1, 1, 1, 1)
        return (x - abar.sqrt() * self.c) / (1 - abar).sqrt()


@pytest.mark.parametrize("steps", [1, 3, 10, T])
def test_with_the_exact_noise_predictor_ddim_lands_on_the_data(steps):
    """For data that is a single image c, x0_hat = c at every step, so deterministic DDIM returns c."""
    diffusion = make_diffusion()
    c = torch.rand(1, 3, 8, 8) * 1.6 - 0.8
    diffusion.model = OracleNoise(c, diffusion.alphas_cumprod.clone())
    images = ddim_sample(diffusion, batch_size=4, steps=steps, eta=0.0)
    assert images.shape == (4, 3, 8, 8)
    torch.testing.assert_close(images, ((c + 1) / 2).expand(4, -1, -1, -1), atol=1e-4, rtol=0)


class FakeConditional(GaussianDiffusion):
    """Part 2's pinned interface, minimally: guided_noise(x, t, y, w) and threshold(x0_hat, method)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def guided_noise(self, x, t, y, w):
        self.calls.append(("guided_noise", y.tolist(), w))
        return self.model(x, t) * (1 + w) - w * 0.5 * x  # any function of the inputs

    def threshold(self, x0_hat, method):
        self.calls.append(("threshold", method))
        return x0_hat.clamp(-0.5, 0.5) if method == "static" else x0_hat


def test_conditional_models_use_guided_noise_and_their_threshold(one_thread):
    torch.manual_seed(4)
    unet = Unet(dim=8, dim_mults=(1, 2), channels=3)
    diffusion = FakeConditional(unet, image_size=8, channels=3, timesteps=T)
    y = torch.tensor([0, 2])
    x_T = torch.randn(2, 3, 8, 8)
    out = ddim_sample_loop(diffusion, x_T, steps=4, eta=0.0, y=y, w=2.0, threshold="none")
    assert diffusion.calls[:2] == [("guided_noise", [0, 2], 2.0), ("threshold", "none")]
    assert len(diffusion.calls) == 8  # one guided noise and one threshold per jump
    diffusion.calls.clear()
    ddim_sample_loop(diffusion, x_T, steps=1, eta=0.0, y=y, w=2.0, threshold="static")
    assert out.shape == x_T.shape and diffusion.calls[-1] == ("threshold", "static")


def test_unconditional_model_refuses_other_thresholds():
    diffusion = make_diffusion()
    with pytest.raises(ValueError, match="static"):
        ddim_sample(diffusion, batch_size=1, steps=2, threshold="dynamic")


# ---------------------------------------------------------------------------------------- main.py's flags

@pytest.mark.parametrize("flags, words", [
    (["--sampler", "euler"], "--sampler"),
    (["--sampler", "ddim", "--sampling_steps", "0"], "--sampling_steps must be between 1 and --time_steps 50"),
    (["--sampler", "ddim", "--sampling_steps", "51"], "--sampling_steps must be between 1 and --time_steps 50"),
    (["--sampling_steps", "10"], "add --sampler ddim"),
    (["--sampler", "ddim", "--ddim_eta", "1.5"], "--ddim_eta must be between 0 and 1"),
])
def test_bad_sampler_flags_exit_2_with_one_line(flags, words, capsys, tmp_path):
    import main

    assert main.main([*flags, "--save_folder", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err


def test_trainer_samples_grids_with_ddim(one_thread, tmp_path):
    from trainer import TrainConfig, Trainer

    config = TrainConfig(image_size=8, unet_dim=8, unet_dim_mults=[1, 2], time_steps=T, demo_images=8, batch_size=4,
                         device="cpu", channels_last=False, save_folder=str(tmp_path), sampler="ddim",
                         sampling_steps=4, ddim_eta=0.0)
    trainer = Trainer(config)
    try:
        torch.manual_seed(5)
        images = trainer.sample(3)
        torch.manual_seed(5)
        expected = ddim_sample(trainer.ema.module, 3, steps=4, eta=0.0)
        torch.testing.assert_close(images, expected)
        frames = trainer.sample_trajectory(2)
        assert len(frames) == 4 + 1 and frames[0].shape == (2, 3, 8, 8)
        assert all(0 <= f.min() and f.max() <= 1 for f in frames)
    finally:
        trainer.close()


@pytest.mark.parametrize("w, threshold", [(0.0, "static"), (2.0, "dynamic"), (1.0, "none")])
def test_conditional_eta_one_is_parts_two_ancestral_sampler(one_thread, w, threshold):
    """The same property for Part 2's ConditionalGaussianDiffusion, with guidance and each threshold."""
    from diffusion import ConditionalGaussianDiffusion

    torch.manual_seed(6)
    unet = Unet(dim=8, dim_mults=(1, 2), channels=3, num_classes=3)
    with torch.no_grad():
        unet.final.weight.normal_(0, 0.1)
        unet.label_emb.weight.normal_(0, 1.0)
    diffusion = ConditionalGaussianDiffusion(unet, image_size=8, num_classes=3, timesteps=T).eval()
    y = torch.tensor([0, 1, 2, 3])  # 3 is the null label
    x_T = torch.randn(4, 3, 8, 8)
    zs = [torch.randn(4, 3, 8, 8) for _ in range(T)]
    diffusion.noise_like = FixedNoise(zs)
    ancestral = diffusion.p_sample_loop(x_T.clone(), y, w, threshold)
    ddim = ddim_sample_loop(diffusion, x_T.clone(), steps=T, eta=1.0, y=y, w=w, threshold=threshold, noise=FixedNoise(zs))
    # Without a threshold x0-hat is unbounded (values near 20 here) and the two algebraically equal updates round
    # differently on each CPU kind: compare relative to the samples' own scale. A wrong update differs by O(scale).
    scale = max(1.0, ancestral.abs().max().item())
    torch.testing.assert_close(ddim, ancestral, atol=5e-5 * scale, rtol=1e-3)


def test_conditional_trainer_samples_grids_with_ddim(one_thread, tmp_path):
    from conditional_trainer import ConditionalTrainer
    from trainer import TrainConfig

    config = TrainConfig(image_size=8, unet_dim=8, unet_dim_mults=[1, 2], time_steps=T, demo_images=8, batch_size=4,
                         device="cpu", channels_last=False, save_folder=str(tmp_path), class_cond=True,
                         sampler="ddim", sampling_steps=3, ddim_eta=0.0)
    trainer = ConditionalTrainer(config)
    try:
        y = torch.tensor([0, 1])
        torch.manual_seed(5)
        images = trainer.sample_classes(y, 2.0, "dynamic")
        torch.manual_seed(5)
        expected = ddim_sample(trainer.ema.module, 2, steps=3, eta=0.0, y=y, w=2.0, threshold="dynamic")
        torch.testing.assert_close(images, expected)
        assert len(trainer.sample_trajectory(2)) == 3 + 1
    finally:
        trainer.close()
