"""Properties of the diffusion core, checked against independent derivations.

These tests do not compare the code with itself: the schedule is recomputed from the
slides' formula with the math module, the sampling step is compared with the Gaussian
posterior q(x_{t-1} | x_t, x_0) obtained by Bayes' rule, and q_sample with the moments
of many noise draws.
"""

import math

import pytest
import torch
from torch import nn

from diffusion import GaussianDiffusion, cosine_schedule, extract
from unet import Unet


class ZeroNoise(nn.Module):
    """A 'network' that always predicts zero noise: x0_hat = x_t / sqrt(abar_t)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class OracleNoise(nn.Module):
    """Predicts exactly the noise that turns x_t back into the known x_0."""

    def __init__(self, diffusion_ref: list, x_0: torch.Tensor):
        super().__init__()
        self.diffusion_ref = diffusion_ref
        self.x_0 = x_0

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.diffusion_ref[0].alphas_cumprod.double()[t].view(-1, 1, 1, 1)
        return ((x_t.double() - abar.sqrt() * self.x_0.double()) / (1 - abar).sqrt()).float()


def make_oracle_diffusion(x_0: torch.Tensor, timesteps: int = 50) -> GaussianDiffusion:
    ref: list = []
    diffusion = GaussianDiffusion(OracleNoise(ref, x_0), image_size=x_0.shape[-1], channels=x_0.shape[1], timesteps=timesteps)
    ref.append(diffusion)
    return diffusion


def slides_alphas(timesteps: int, s: float = 0.008) -> list[float]:
    def f(t: int) -> float:
        return math.cos(((t / timesteps + s) / (1 + s)) * math.pi / 2) ** 2

    abar = [f(t) / f(0) for t in range(timesteps + 1)]
    return [min(max(abar[t] / abar[t - 1], 0.001), 1.0) for t in range(1, timesteps + 1)]


# ---------------------------------------------------------------- schedule


@pytest.mark.parametrize("timesteps", [1, 2, 50, 1000])
def test_cosine_schedule_matches_the_slides_formula(timesteps):
    alphas = cosine_schedule(timesteps)
    assert alphas.dtype == torch.float32 and alphas.shape == (timesteps,)
    expected = torch.tensor(slides_alphas(timesteps), dtype=torch.float64)
    torch.testing.assert_close(alphas.double(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("timesteps", [10, 50, 1000])
def test_schedule_properties(timesteps):
    diffusion = GaussianDiffusion(ZeroNoise(), image_size=8, timesteps=timesteps)
    alphas, abar = diffusion.alphas, diffusion.alphas_cumprod
    for buffer in (alphas, abar):
        assert buffer.dtype == torch.float32 and buffer.shape == (timesteps,)
    assert (alphas >= 0.001).all() and (alphas <= 1).all()
    assert (abar[1:] < abar[:-1]).all(), "alphas_cumprod must decrease strictly"
    assert abar[0] > 0.95, "little noise at the first step"
    assert abar[-1] < 1e-3, "almost pure noise at the last step"
    # alphas_cumprod is the product of the *clipped* alphas, not f(t)/f(0).
    torch.testing.assert_close(abar.double(), torch.cumprod(alphas.double(), 0), rtol=1e-5, atol=0)


def test_last_alpha_is_clipped():
    # f(T) = cos(pi/2)^2 = 0, so the unclipped ratio abar_T / abar_{T-1} is ~0.
    assert cosine_schedule(50)[-1].item() == pytest.approx(0.001)


def test_extract_shapes_and_values():
    a = torch.arange(10, dtype=torch.float32) * 2
    t = torch.tensor([0, 3, 9])
    out = extract(a, t, (3, 2, 5, 5))
    assert out.shape == (3, 1, 1, 1)
    assert out.flatten().tolist() == [0.0, 6.0, 18.0]
    assert extract(a, t, (3, 7)).shape == (3, 1)
    assert extract(a, t, (3, 1, 4, 4, 4)).shape == (3, 1, 1, 1, 1)


# ---------------------------------------------------------------- forward process


def test_q_sample_marginal_moments():
    """Over many noise draws x_t has mean sqrt(abar_t) x_0 and variance 1 - abar_t."""
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(ZeroNoise(), image_size=4, channels=1, timesteps=50)
    n = 20000
    x_0 = torch.full((n, 1, 4, 4), 0.7)
    for step in (0, 10, 25, 49):
        t = torch.full((n,), step, dtype=torch.long)
        x_t = diffusion.q_sample(x_0, t, torch.randn_like(x_0))
        abar = slides_abar(step)
        assert x_t.mean().item() == pytest.approx(math.sqrt(abar) * 0.7, abs=0.01)
        assert x_t.var().item() == pytest.approx(1 - abar, abs=0.01 + 0.02 * (1 - abar))


def slides_abar(step: int, timesteps: int = 50) -> float:
    return math.prod(slides_alphas(timesteps)[: step + 1])


def test_q_sample_mixes_steps_within_a_batch():
    diffusion = GaussianDiffusion(ZeroNoise(), image_size=4, channels=1, timesteps=50)
    x_0 = torch.ones(2, 1, 4, 4)
    noise = torch.zeros_like(x_0)
    x_t = diffusion.q_sample(x_0, torch.tensor([0, 49]), noise)
    assert x_t[0].mean().item() == pytest.approx(math.sqrt(slides_abar(0)), rel=1e-5)
    assert x_t[1].mean().item() == pytest.approx(math.sqrt(slides_abar(49)), rel=1e-3, abs=1e-6)


@pytest.mark.slow
def test_forward_returns_a_differentiable_scalar_l1_loss():
    torch.manual_seed(0)
    model = Unet(dim=8, dim_mults=(1, 2), channels=3)
    diffusion = GaussianDiffusion(model, image_size=8, channels=3, timesteps=10)
    loss = diffusion(torch.rand(4, 3, 8, 8) * 2 - 1)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_p_losses_is_mean_absolute_error_of_the_noise():
    # With a zero predictor the L1 loss is mean |noise|, whatever x_0 and t are.
    diffusion = GaussianDiffusion(ZeroNoise(), image_size=4, channels=1, timesteps=10)
    noise = torch.linspace(-2, 2, 32).reshape(2, 1, 4, 4)
    loss = diffusion.p_losses(torch.rand(2, 1, 4, 4), torch.tensor([1, 7]), noise)
    assert loss.item() == pytest.approx(noise.abs().mean().item(), rel=1e-6)


# ---------------------------------------------------------------- reverse process


def bayes_posterior(abar_prev: float, alpha: float, x_0: float, x_t: float) -> tuple[float, float]:
    """q(x_{t-1} | x_t, x_0) from q(x_{t-1} | x_0) q(x_t | x_{t-1}) by completing the square.

    Prior  x_{t-1} ~ N(sqrt(abar_prev) x_0, 1 - abar_prev)
    Likelihood x_t ~ N(sqrt(alpha) x_{t-1}, 1 - alpha)
    """
    prior_var = 1 - abar_prev
    precision = alpha / (1 - alpha) + (1 / prior_var if prior_var > 0 else math.inf)
    if math.isinf(precision):  # abar_{-1} = 1: x_{-1} is x_0 itself
        return x_0, 0.0
    var = 1 / precision
    mean = var * (math.sqrt(abar_prev) * x_0 / prior_var + math.sqrt(alpha) * x_t / (1 - alpha))
    return mean, var


@pytest.mark.parametrize("step", [0, 1, 7, 30, 49])
def test_posterior_buffers_match_bayes_rule(step):
    diffusion = GaussianDiffusion(ZeroNoise(), image_size=4, timesteps=50)
    alphas = slides_alphas(50)
    abar_prev = slides_abar(step - 1) if step > 0 else 1.0
    x_0, x_t = 0.3, -0.8
    mean, var = bayes_posterior(abar_prev, alphas[step], x_0, x_t)
    got_mean = diffusion.posterior_mean_coef_x0[step].item() * x_0 + diffusion.posterior_mean_coef_xt[step].item() * x_t
    assert got_mean == pytest.approx(mean, rel=1e-4, abs=1e-6)
    assert diffusion.posterior_variance[step].item() == pytest.approx(var, rel=1e-4, abs=1e-9)


@pytest.mark.parametrize("step", [1, 10, 40])
def test_p_sample_with_an_oracle_draws_from_the_true_posterior(step):
    """If the network knew the noise, Algorithm 2 would sample q(x_{t-1} | x_t, x_0) exactly."""
    torch.manual_seed(1)
    n = 20000
    x_0 = torch.full((n, 1, 2, 2), 0.4)
    x_t_value = -0.2
    diffusion = make_oracle_diffusion(x_0)
    x_t = torch.full_like(x_0, x_t_value)
    x_prev = diffusion.p_sample(x_t, torch.full((n,), step, dtype=torch.long), step)
    abar_prev = slides_abar(step - 1)
    mean, var = bayes_posterior(abar_prev, slides_alphas(50)[step], 0.4, x_t_value)
    assert x_prev.mean().item() == pytest.approx(mean, abs=4 * math.sqrt(var / x_prev.numel()) + 1e-5)
    assert x_prev.var().item() == pytest.approx(var, rel=0.05)


def test_p_sample_clamps_x0_hat():
    # Zero noise predicted from x_t = 5: x0_hat = 5 / sqrt(abar) must be clamped to 1.
    diffusion = GaussianDiffusion(ZeroNoise(), image_size=2, channels=1, timesteps=50)
    x_t = torch.full((1, 1, 2, 2), 5.0)
    out = diffusion.p_sample(x_t, torch.tensor([0]), 0)
    torch.testing.assert_close(out, torch.ones_like(out))


def test_no_noise_at_the_last_step():
    diffusion = GaussianDiffusion(ZeroNoise(), image_size=4, channels=3, timesteps=10)
    calls = []
    diffusion.noise_like = lambda shape, device: calls.append(shape) or torch.randn(shape, device=device)
    x = torch.randn(3, 3, 4, 4)
    first = diffusion.p_sample(x, torch.zeros(3, dtype=torch.long), 0)
    second = diffusion.p_sample(x, torch.zeros(3, dtype=torch.long), 0)
    assert calls == [] and torch.equal(first, second)
    diffusion.p_sample(x, torch.ones(3, dtype=torch.long), 1)
    assert len(calls) == 1, "every step but the last adds noise"


def test_p_sample_loop_visits_steps_in_reverse_order():
    diffusion = GaussianDiffusion(ZeroNoise(), image_size=4, channels=1, timesteps=6)
    seen = []
    original = diffusion.p_sample

    def spy(x, t, t_index):
        seen.append((t_index, t.tolist()))
        return original(x, t, t_index)

    diffusion.p_sample = spy
    out = diffusion.p_sample_loop(torch.randn(2, 1, 4, 4))
    assert seen == [(i, [i, i]) for i in reversed(range(6))]
    assert out.min() >= -1 and out.max() <= 1


@pytest.mark.slow
@pytest.mark.parametrize("channels", [1, 3])
def test_sample_shape_and_range(channels):
    torch.manual_seed(0)
    model = Unet(dim=8, dim_mults=(1, 2), channels=channels)
    diffusion = GaussianDiffusion(model, image_size=8, channels=channels, timesteps=5)
    images = diffusion.sample(3)
    assert images.shape == (3, channels, 8, 8)
    assert images.min() >= 0 and images.max() <= 1
    assert images.std() > 0


def test_sample_uses_noise_like_for_its_start():
    diffusion = GaussianDiffusion(ZeroNoise(), image_size=4, channels=2, timesteps=3)
    shapes = []
    diffusion.noise_like = lambda shape, device: shapes.append(tuple(shape)) or torch.zeros(shape, device=device)
    images = diffusion.sample(5)
    # With zero noise everywhere and a zero predictor, every image is (0 + 1) / 2.
    torch.testing.assert_close(images, torch.full((5, 2, 4, 4), 0.5))
    assert shapes[0] == (5, 2, 4, 4) and len(shapes) == 3  # x_T, then steps 2 and 1
