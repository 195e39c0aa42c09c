"""Properties of Part 3's EnergyModel (energy.py) that hold whatever the network: Langevin moves x
downhill along dE/dx, clamps, keeps no graph and leaves the weights alone; the loss is the
contrastive divergence with its regulariser on detached fakes; the replay buffer is 95/5 and updated.

Expected values come from a quadratic energy whose gradient is known in closed form,
E(x) = 1/2 sum_{c,h,w} a_c x^2 + b, so dE/dx = a_c x (nothing here is computed by the code under test).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from energy import EnergyModel, EnergyNet


class Quadratic(nn.Module):
    """E(x) = 1/2 sum_{c,h,w} a_c x^2 + b: [B, C, H, W] -> [B]; dE/dx = a_c x."""

    def __init__(self, channels: int):
        super().__init__()
        self.a = nn.Parameter(torch.linspace(0.5, 2.0, channels))
        self.b = nn.Parameter(torch.tensor(0.25))

    def forward(self, x):
        return 0.5 * (self.a[None, :, None, None] * x**2).flatten(1).sum(1) + self.b


class FixedNoise:
    """noise_like returning preset tensors, counting its calls."""

    def __init__(self, z):
        self.z, self.calls = z, 0

    def __call__(self, shape, device=None):
        self.calls += 1
        assert tuple(shape) == tuple(self.z.shape)
        return self.z.clone()


def _model(channels=3, size=4, **kwargs):
    kwargs = dict(dict(step_size=0.1, noise_scale=0.01, langevin_steps=3, alpha=0.2, buffer_size=16), **kwargs)
    return EnergyModel(Quadratic(channels), image_size=size, channels=channels, **kwargs)


def _x(shape, seed=0, scale=0.9):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) * 2 - 1) * scale


def _grad_x(model, x):  # the closed form dE/dx = a_c x
    return model.energy_net.a.detach()[None, :, None, None] * x


def test_energy_net_shapes():
    for channels, size in ((3, 32), (1, 8), (3, 4), (3, 1)):
        net = EnergyNet(channels, dim=8)
        assert net(torch.zeros(5, channels, size, size)).shape == (5,)


def test_langevin_step_is_the_equation():
    model = _model()
    x = _x((4, 3, 4, 4))
    z = _x((4, 3, 4, 4), seed=1)
    model.noise_like = FixedNoise(z)
    expected = (x - 0.1 * _grad_x(model, x) + 0.01 * z).clamp(-1, 1)
    got = model.langevin_step(x.clone())
    assert torch.allclose(got, expected, atol=1e-6)
    assert model.noise_like.calls == 1


def test_langevin_step_descends_the_energy():
    model = _model(noise_scale=0.0, step_size=0.05)
    # float64: at initialisation one small step changes the energy by less than float32 resolves
    model.energy_net = EnergyNet(3, dim=8).double()
    x = _x((6, 3, 4, 4), scale=0.5).double()
    with torch.no_grad():
        before = model.energy(x)
        after = model.energy(model.langevin_step(x))
    assert (after < before).all(), (before, after)


def test_langevin_step_clamps_to_the_data_range():
    model = _model(step_size=5.0, noise_scale=0.5)
    x = _x((4, 3, 4, 4))
    z = torch.full_like(x, 3.0)
    model.noise_like = FixedNoise(z)
    got = model.langevin_step(x)
    unclamped = x - 5.0 * _grad_x(model, x) + 0.5 * z
    assert unclamped.abs().max() > 1.5  # the case does leave the range
    assert got.min() >= -1 and got.max() <= 1
    assert torch.allclose(got, unclamped.clamp(-1, 1), atol=1e-6)


def test_langevin_keeps_no_graph_and_leaves_the_weights_alone():
    model = _model()
    model.energy_net = EnergyNet(3, dim=8)
    before = {k: v.clone() for k, v in model.energy_net.state_dict().items()}
    x = _x((3, 3, 4, 4)).requires_grad_(True)
    out = model.langevin_sample(x, 4)
    assert not out.requires_grad and out.grad_fn is None
    assert x.grad is None, "Langevin must not write into the caller's x.grad"
    for name, p in model.energy_net.named_parameters():
        assert p.grad is None, f"{name}.grad was filled during sampling"
        assert p.requires_grad, f"{name} left frozen after sampling"
        assert torch.equal(p.detach(), before[name]), f"{name} changed during sampling"


def test_langevin_works_under_no_grad_and_inference_of_callers():
    model = _model()
    x = _x((2, 3, 4, 4))
    z = _x((2, 3, 4, 4), seed=2)
    model.noise_like = FixedNoise(z)
    with torch.no_grad():
        got = model.langevin_step(x)
    assert torch.allclose(got, (x - 0.1 * _grad_x(model, x) + 0.01 * z).clamp(-1, 1), atol=1e-6)


def test_langevin_sample_chains_steps():
    model = _model(noise_scale=0.0)
    x = _x((2, 3, 4, 4))
    model.noise_like = FixedNoise(torch.zeros_like(x))
    expected = x.clone()
    for _ in range(5):
        expected = (expected - 0.1 * _grad_x(model, expected)).clamp(-1, 1)
    assert torch.allclose(model.langevin_sample(x, 5), expected, atol=1e-6)
    assert model.noise_like.calls == 5
    assert torch.equal(model.langevin_sample(x, 0), x)


def test_loss_formula_and_detached_fakes():
    model = _model(alpha=0.3)
    x_real, x_fake = _x((4, 3, 4, 4), seed=3), _x((6, 3, 4, 4), seed=4).requires_grad_(True)
    a, b = model.energy_net.a.detach(), model.energy_net.b.detach()

    def energy(x):
        return 0.5 * (a[None, :, None, None] * x.detach() ** 2).flatten(1).sum(1) + b

    e_real, e_fake = energy(x_real), energy(x_fake)
    expected = e_real.mean() - e_fake.mean() + 0.3 * (e_real.pow(2).mean() + e_fake.pow(2).mean())
    loss = model.loss(x_real, x_fake)
    assert loss.shape == () and torch.allclose(loss, expected, atol=1e-5)
    loss.backward()
    assert x_fake.grad is None, "the loss let gradients flow into the fake samples"
    # dL/db = 1 - 1 + alpha * (2 mean(e_real) + 2 mean(e_fake))
    assert torch.allclose(model.energy_net.b.grad, 0.3 * 2 * (e_real.mean() + e_fake.mean()), atol=1e-4)


def test_draw_replay_restarts_reinit_prob_of_the_chains_and_is_distinct():
    model = _model(buffer_size=4096)
    torch.manual_seed(0)
    fresh_total = 0
    for _ in range(10):
        idx, fresh = model.draw_replay(2000)
        assert idx.dtype == torch.long and len(set(idx.tolist())) == 2000
        assert 0 <= int(idx.min()) and int(idx.max()) < 4096
        fresh_total += int(fresh.sum())
    # 20,000 Bernoulli(0.3) draws: mean 6000, sd 65; the bounds are 6 sd away
    assert model.reinit_prob == 0.3 and 5600 < fresh_total < 6400
    with pytest.raises(ValueError, match="buffer_size"):
        model.draw_replay(5000)


def test_sample_buffer_mixes_noise_and_buffer():
    model = _model(buffer_size=8)
    model.replay.copy_(torch.arange(8.0)[:, None, None, None].expand(8, 3, 4, 4) / 10)
    idx, fresh = torch.tensor([5, 2, 7]), torch.tensor([False, True, False])
    model.draw_replay = lambda batch_size: (idx, fresh)
    noise = torch.full((3, 3, 4, 4), -0.5)
    model.uniform_like = lambda shape, device: noise.clone()
    x, got_idx = model.sample_buffer(3)
    assert torch.equal(got_idx, idx)
    assert torch.allclose(x[0], torch.full((3, 4, 4), 0.5)) and torch.allclose(x[2], torch.full((3, 4, 4), 0.7))
    assert torch.equal(x[1], noise[1])
    x.fill_(0.0)
    assert model.replay[5, 0, 0, 0] == 0.5, "changing the returned batch changed the buffer"


def test_update_buffer_writes_the_drawn_slots():
    model = _model(buffer_size=6)
    before = model.replay.clone()
    new = torch.full((2, 3, 4, 4), 0.3, requires_grad=True) * 1.0
    model.update_buffer(new, torch.tensor([4, 1]))
    assert torch.equal(model.replay[4], new[0].detach()) and torch.equal(model.replay[1], new[1].detach())
    keep = [0, 2, 3, 5]
    assert torch.equal(model.replay[keep], before[keep])
    assert not model.replay.requires_grad


def test_forward_runs_the_method_and_updates_the_buffer():
    model = _model(buffer_size=10, langevin_steps=2, noise_scale=0.0)
    model.noise_like = lambda shape, device: torch.zeros(shape)
    before = model.replay.clone()
    idx = torch.tensor([3, 8])
    model.draw_replay = lambda batch_size: (idx, torch.zeros(batch_size, dtype=torch.bool))
    x_real = _x((2, 3, 4, 4), seed=5)
    loss = model(x_real)
    x_fake = before[idx]
    for _ in range(2):
        x_fake = (x_fake - 0.1 * _grad_x(model, x_fake)).clamp(-1, 1)
    assert torch.allclose(model.replay[idx], x_fake, atol=1e-6)
    assert torch.allclose(loss, model.loss(x_real, x_fake), atol=1e-6)
    loss.backward()
    assert model.energy_net.a.grad is not None


def test_sample_is_in_the_image_range():
    model = _model(size=8, sample_steps=3)
    model.energy_net = EnergyNet(3, dim=8)
    images = model.sample(5)
    assert images.shape == (5, 3, 8, 8) and images.min() >= 0 and images.max() <= 1


def test_replay_buffer_is_saved_and_loaded():
    model = _model(buffer_size=5)
    model.replay.fill_(0.123)
    other = _model(buffer_size=5)
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.replay, model.replay)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="buffer_size"):
        _model(buffer_size=0)
    with pytest.raises(ValueError, match="reinit_prob"):
        _model(reinit_prob=1.5)


def test_fresh_chains_start_from_smooth_noise_in_range():
    model = EnergyModel(EnergyNet(3, 4), image_size=32, buffer_size=4)
    torch.manual_seed(0)
    x = model.uniform_like((64, 3, 32, 32), "cpu")
    assert x.shape == (64, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert x.min() < -0.9 and x.max() > 0.9 and abs(x.mean()) < 0.05  # the whole range, centred
    # Neighbouring pixels agree (blobs, not pixel noise), while pixels 16 apart are independent.
    near = torch.corrcoef(torch.stack([x[..., :-1].flatten(), x[..., 1:].flatten()]))[0, 1]
    far = torch.corrcoef(torch.stack([x[..., :-16].flatten(), x[..., 16:].flatten()]))[0, 1]
    assert near > 0.9 and abs(far) < 0.05, (near, far)
    assert model.replay.shape == (4, 3, 32, 32) and model.replay.abs().max() <= 1
    small = model.uniform_like((2, 1, 4, 4), "cpu")  # images smaller than the coarse grid: plain uniform noise
    assert small.shape == (2, 1, 4, 4) and small.abs().max() <= 1
    assert model.uniform_like((5,), "cpu").shape == (5,)
