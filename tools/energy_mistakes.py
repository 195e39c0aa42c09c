"""The catalogue of common Part 3 mistakes (energy.py), as data: each one a wrong version of one function.

tools/make_energy_reference.py stores the outputs of the "output" mistakes in the reference files, so
that test_energy.py can name them; tests/test_fairness.py checks that every mistake fails its
own function's tests with its name. `detect` says how test_energy.py recognises a mistake:
"output": its output on the reference inputs is stored, and the failure names `title`;
"check": a property or spy test catches it, and its message contains `expect`.
"""

from __future__ import annotations

import torch

from energy import EnergyModel
from tools.mistakes_format import Catalogue

BOOK = Catalogue(EnergyModel)
CATALOGUE, ALTERNATIVES, alternative = BOOK.mistakes, BOOK.alternatives, BOOK.alternative


def mistake(key: str, title: str, why: str, detect: str = "output", expect: str = ""):
    """Part 3's keys name their function: "langevin_step.no_clamp"."""
    return BOOK.mistake(key, key.split(".")[0], title, why, detect, expect)


# ---------------------------------------------------------------------------- langevin_step

STEP = "x' = clamp(x - step_size * grad_x E(x) + noise_scale * z, -1, 1)"


def _grad_x(self, x, reduce="sum"):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        energy = self.energy(x)
        energy = energy.sum() if reduce == "sum" else energy.mean()
        return torch.autograd.grad(energy, x)[0]


def _finish(self, x, grad, sign=-1.0, noise=None, clamp=True):
    z = self.noise_like(x.shape, x.device)
    scale = self.noise_scale if noise is None else noise
    out = x.detach() + sign * self.step_size * grad + scale * z
    return out.clamp(-1, 1) if clamp else out


@mistake("langevin_step.ascent", "ascending the energy (x + step_size * grad)",
         f"{STEP}: Langevin dynamics walks DOWNHILL on the energy, towards the low energy of real images.")
def _(self, x):
    return _finish(self, x, _grad_x(self, x), sign=+1.0)


@mistake("langevin_step.no_clamp", "x not clamped to [-1, 1]",
         f"{STEP}: the clamp keeps the samples in the data range; without it a chain can drift off.")
def _(self, x):
    return _finish(self, x, _grad_x(self, x), clamp=False)


@mistake("langevin_step.no_noise", "no noise added",
         f"{STEP}: without noise_scale * z the chain is plain gradient descent and every chain collapses to a minimum.")
def _(self, x):
    return _finish(self, x, _grad_x(self, x), noise=0.0)


@mistake("langevin_step.textbook_noise", "the noise scaled by sqrt(2 * step_size) instead of noise_scale",
         f"{STEP}: this homework decouples the two (Du & Mordatch); textbook Langevin's sqrt(2 * step_size) "
         "would drown the images at the step sizes used here.")
def _(self, x):
    return _finish(self, x, _grad_x(self, x), noise=(2 * self.step_size) ** 0.5)


@mistake("langevin_step.mean_energy", "the gradient of the batch's MEAN energy (every gradient divided by B)",
         f"{STEP}: each example moves along its own dE(x_b)/dx_b; differentiate E(x).sum(), not E(x).mean().")
def _(self, x):
    return _finish(self, x, _grad_x(self, x, reduce="mean"))


@mistake("langevin_step.weights_not_x", "the gradient taken with respect to the weights instead of x",
         f"{STEP}: grad_x E(x) is the gradient with respect to the IMAGES: torch.autograd.grad(E(x).sum(), x). "
         "Here the weights moved and x only got the noise.")
def _(self, x):
    params = [p for p in self.energy_net.parameters()]
    with torch.enable_grad():
        grads = torch.autograd.grad(self.energy(x.detach()).sum(), params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= self.step_size * g
    return _finish(self, x, torch.zeros_like(x))


@mistake("langevin_step.weights_updated", "weights updated during sampling",
         "Sampling must not change the model: only x moves along -grad_x E(x).", "check", "weights updated during sampling")
def _(self, x):
    grad = _grad_x(self, x)
    with torch.no_grad():
        for p in self.energy_net.parameters():
            p.mul_(0.99)
    return _finish(self, x, grad)


@mistake("langevin_step.backward", "gradients accumulated into the weights during sampling",
         "E.backward() fills the weights' .grad too, which the next training step would add to its own gradient; "
         "torch.autograd.grad(E, x) computes dE/dx alone.", "check", "gradients accumulated into the weights")
def _(self, x):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        self.energy(x).sum().backward()
    return _finish(self, x, x.grad)


@mistake("langevin_step.frozen", "weights left frozen after sampling",
         "Turning requires_grad off for the weights while sampling is fine only if it is turned back on: "
         "otherwise the model never trains again.", "check", "weights left frozen after sampling")
def _(self, x):
    for p in self.energy_net.parameters():
        p.requires_grad_(False)
    return _finish(self, x, _grad_x(self, x))


@mistake("langevin_step.keeps_graph", "the graph kept across steps",
         "Return the new x detached: otherwise every step's graph stays alive (memory grows with the steps) "
         "and backward would run through the whole chain.", "check", "the graph is kept across steps")
def _(self, x):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        grad = torch.autograd.grad(self.energy(x).sum(), x)[0]
        out = x - self.step_size * grad + self.noise_scale * self.noise_like(x.shape, x.device)
        return out.clamp(-1, 1)


@mistake("langevin_step.no_enable_grad", "fails inside torch.no_grad()",
         "Sampling code is often run under torch.no_grad(); wrap the gradient in `with torch.enable_grad():`.",
         "check", "fails inside torch.no_grad()")
def _(self, x):
    x = x.detach().requires_grad_(True)
    grad = torch.autograd.grad(self.energy(x).sum(), x)[0]
    return _finish(self, x, grad)


@mistake("langevin_step.randn", "noise drawn with torch.randn instead of noise_like",
         "z = self.noise_like(x.shape, x.device), the seam the grader fixes.", "check", "noise_like was called 0 times")
def _(self, x):
    grad = _grad_x(self, x)
    return (x.detach() - self.step_size * grad + self.noise_scale * torch.randn_like(x)).clamp(-1, 1)


# ---------------------------------------------------------------------------- langevin_sample

LOOP = "for k = 1..steps: x = langevin_step(x)"


@mistake("langevin_sample.one_short", "one step too few", f"{LOOP}: exactly `steps` steps (range(steps)).")
def _(self, x, steps):
    for _ in range(steps - 1):
        x = self.langevin_step(x)
    return x


@mistake("langevin_sample.one_more", "one step too many", f"{LOOP}: exactly `steps` steps (range(steps)).")
def _(self, x, steps):
    for _ in range(steps + 1):
        x = self.langevin_step(x)
    return x


@mistake("langevin_sample.no_feedback", "every step restarted from the starting x",
         f"{LOOP}: each step continues from the previous step's output.")
def _(self, x, steps):
    out = x
    for _ in range(steps):
        out = self.langevin_step(x)
    return out


@mistake("langevin_sample.result_dropped", "the steps' results thrown away",
         f"{LOOP}: assign the result back to x; langevin_step returns a new tensor.")
def _(self, x, steps):
    for _ in range(steps):
        self.langevin_step(x)
    return x


# ---------------------------------------------------------------------------- loss

LOSS = "L = mean E(x_real) - mean E(x_fake) + alpha * mean(E(x_real)^2 + E(x_fake)^2)"


def _energies(self, x_real, x_fake):
    return self.energy(x_real), self.energy(x_fake.detach())


@mistake("loss.sign", "the contrastive terms' signs swapped",
         f"{LOSS}: minimising it must LOWER the real images' energy and raise the samples'.")
def _(self, x_real, x_fake):
    e_real, e_fake = _energies(self, x_real, x_fake)
    return e_fake.mean() - e_real.mean() + self.alpha * (e_real.pow(2).mean() + e_fake.pow(2).mean())


@mistake("loss.no_regulariser", "regulariser missing",
         f"{LOSS}: without alpha * (E^2 ...) the energies can drift off to huge values and training diverges.")
def _(self, x_real, x_fake):
    e_real, e_fake = _energies(self, x_real, x_fake)
    return e_real.mean() - e_fake.mean()


@mistake("loss.regulariser_sign", "regulariser with the wrong sign",
         f"{LOSS}: the regulariser is ADDED; subtracted it rewards huge energies.")
def _(self, x_real, x_fake):
    e_real, e_fake = _energies(self, x_real, x_fake)
    return e_real.mean() - e_fake.mean() - self.alpha * (e_real.pow(2).mean() + e_fake.pow(2).mean())


@mistake("loss.regulariser_of_means", "regulariser on the squared MEAN energies",
         f"{LOSS}: square each energy, then average: mean(E^2), not mean(E)^2.")
def _(self, x_real, x_fake):
    e_real, e_fake = _energies(self, x_real, x_fake)
    return e_real.mean() - e_fake.mean() + self.alpha * (e_real.mean() ** 2 + e_fake.mean() ** 2)


@mistake("loss.no_alpha", "regulariser without its weight alpha",
         f"{LOSS}: the regulariser is scaled by self.alpha.")
def _(self, x_real, x_fake):
    e_real, e_fake = _energies(self, x_real, x_fake)
    return e_real.mean() - e_fake.mean() + e_real.pow(2).mean() + e_fake.pow(2).mean()


@mistake("loss.sum", "sums over the batch instead of means",
         f"{LOSS}: average over the batch (a sum grows with the batch size).")
def _(self, x_real, x_fake):
    e_real, e_fake = _energies(self, x_real, x_fake)
    return e_real.sum() - e_fake.sum() + self.alpha * (e_real.pow(2).sum() + e_fake.pow(2).sum())


@mistake("loss.energy_detached", "the fake energies detached instead of the fake images",
         f"{LOSS}: E(x_fake.detach()) keeps the weights in the graph; E(x_fake).detach() removes them, so the "
         "loss no longer raises the samples' energy.")
def _(self, x_real, x_fake):
    e_real, e_fake = self.energy(x_real), self.energy(x_fake).detach()
    return e_real.mean() - e_fake.mean() + self.alpha * (e_real.pow(2).mean() + e_fake.pow(2).mean())


@mistake("loss.not_detached", "fake samples not detached in the loss",
         "Use E(x_fake.detach()): the loss trains the weights, never the Langevin chain that made the samples.",
         "check", "fake samples not detached in the loss")
def _(self, x_real, x_fake):
    e_real, e_fake = self.energy(x_real), self.energy(x_fake)
    return e_real.mean() - e_fake.mean() + self.alpha * (e_real.pow(2).mean() + e_fake.pow(2).mean())


@mistake("loss.no_grad", "the loss computed without a gradient",
         "backward() on the loss trains the weights: compute it outside torch.no_grad().", "check",
         "carries no gradient")
def _(self, x_real, x_fake):
    with torch.no_grad():
        e_real, e_fake = _energies(self, x_real, x_fake)
        return e_real.mean() - e_fake.mean() + self.alpha * (e_real.pow(2).mean() + e_fake.pow(2).mean())


# ---------------------------------------------------------------------------- sample_buffer

BUFFER = "x_b = uniform noise where fresh_b (reinit_prob), replay[idx_b] elsewhere"


def _shape(self, batch_size):
    return (batch_size, self.channels, self.image_size, self.image_size)


@mistake("sample_buffer.no_fresh", "chains never restarted from noise",
         f"{BUFFER}: without fresh starts the buffer never sees new noise and its samples lose diversity.")
def _(self, batch_size):
    idx, fresh = self.draw_replay(batch_size)
    self.uniform_like(_shape(self, batch_size), self.device)
    return self.replay[idx].clone(), idx


@mistake("sample_buffer.inverted", "the split inverted (noise where the buffer belongs)",
         f"{BUFFER}: `fresh` marks the few chains that restart from noise.")
def _(self, batch_size):
    idx, fresh = self.draw_replay(batch_size)
    noise = self.uniform_like(_shape(self, batch_size), self.device)
    return torch.where(fresh[:, None, None, None], self.replay[idx], noise), idx


@mistake("sample_buffer.gaussian", "fresh chains started from Gaussian noise (noise_like) instead of uniform noise",
         f"{BUFFER}: fresh starts are uniform in [-1, 1], drawn with self.uniform_like.")
def _(self, batch_size):
    idx, fresh = self.draw_replay(batch_size)
    noise = self.noise_like(_shape(self, batch_size), self.device)
    return torch.where(fresh[:, None, None, None], noise, self.replay[idx]), idx


@mistake("sample_buffer.first_slots", "the first B slots used instead of the drawn ones",
         f"{BUFFER}: idx says which slots this batch continues.")
def _(self, batch_size):
    idx, fresh = self.draw_replay(batch_size)
    noise = self.uniform_like(_shape(self, batch_size), self.device)
    return torch.where(fresh[:, None, None, None], noise, self.replay[:batch_size]), idx


# ---------------------------------------------------------------------------- update_buffer

UPDATE = "replay[idx_b] = x_b for every b"


@mistake("update_buffer.never", "buffer never updated",
         f"{UPDATE}: without it every chain restarts from the same old points and chains never get long.")
def _(self, x, idx):
    return None


@mistake("update_buffer.first_slots", "written to the first B slots instead of the drawn ones",
         f"{UPDATE}: each chain goes back to the slot it came from.")
def _(self, x, idx):
    self.replay[: x.shape[0]] = x.detach()


@mistake("update_buffer.not_detached", "samples stored with their graph",
         f"{UPDATE} with x detached: the buffer keeps values, not a graph.", "check", "still attached to the autograd graph")
def _(self, x, idx):
    self.replay[idx] = x


# ---------------------------------------------------------------------------- forward


def _forward(self, x_real, start="buffer", steps=None, update="fake", loss_on="fake"):
    x_init, idx = self.sample_buffer(x_real.shape[0])
    if start == "noise":
        x_init = self.uniform_like(x_real.shape, x_real.device)
    x_fake = self.langevin_sample(x_init, self.langevin_steps if steps is None else steps(self))
    if update == "fake":
        self.update_buffer(x_fake, idx)
    elif update == "init":
        self.update_buffer(x_init, idx)
    return self.loss(x_real, x_fake if loss_on == "fake" else x_init)


FORWARD = "x_init, idx = sample_buffer(B); x_fake = langevin_sample(x_init, K); update_buffer(x_fake, idx); loss"


@mistake("forward.no_update", "buffer never updated (update_buffer not called)", f"{FORWARD}.", "check",
         "buffer never updated")
def _(self, x_real):
    return _forward(self, x_real, update="none")


@mistake("forward.from_noise", "chains started from fresh noise instead of the replay buffer", f"{FORWARD}.", "check",
         "chains started from fresh noise instead of the replay buffer")
def _(self, x_real):
    return _forward(self, x_real, start="noise")


@mistake("forward.sample_steps", "sample_steps used instead of langevin_steps", f"{FORWARD}, K = self.langevin_steps.",
         "check", "use self.langevin_steps")
def _(self, x_real):
    return _forward(self, x_real, steps=lambda self: self.sample_steps)


@mistake("forward.updates_init", "the starting points written back instead of the samples", f"{FORWARD}.", "check",
         "starting points were written back")
def _(self, x_real):
    return _forward(self, x_real, update="init")


@mistake("forward.loss_on_init", "the loss computed on the starting points instead of the samples", f"{FORWARD}.",
         "check", "starting points used as x_fake")
def _(self, x_real):
    return _forward(self, x_real, loss_on="init")


# ---------------------------------------------------------------------------- sample

SAMPLE = "images = (langevin_sample(uniform_like((B, C, H, W)), sample_steps) + 1) / 2"


def _sample(self, batch_size, draw="uniform", steps=None, finish=lambda x: (x + 1) / 2):
    shape = _shape(self, batch_size)
    x = self.uniform_like(shape, self.device) if draw == "uniform" else self.noise_like(shape, self.device)
    return finish(self.langevin_sample(x, self.sample_steps if steps is None else steps(self)))


@mistake("sample.no_map", "results in [-1, 1] instead of [0, 1]", f"{SAMPLE}.", "check", "instead of [0, 1]")
def _(self, batch_size):
    return _sample(self, batch_size, finish=lambda x: x)


@mistake("sample.clamp", "x clamped to [0, 1] instead of mapped", f"{SAMPLE}.", "check", "clamped x to [0, 1]")
def _(self, batch_size):
    return _sample(self, batch_size, finish=lambda x: x.clamp(0, 1))


@mistake("sample.gaussian", "chains started from Gaussian noise", f"{SAMPLE}.", "check",
         "drew Gaussian noise with noise_like")
def _(self, batch_size):
    return _sample(self, batch_size, draw="gaussian")


@mistake("sample.langevin_steps", "langevin_steps used instead of sample_steps", f"{SAMPLE}.", "check",
         "use self.sample_steps")
def _(self, batch_size):
    return _sample(self, batch_size, steps=lambda self: self.langevin_steps)


# ---------------------------------------------------------------------------- correct variants
# In styles other than the solution's: each must pass every test.


@alternative("own_loop_in_forward", "forward")
def _(self, x_real):
    x, idx = self.sample_buffer(len(x_real))
    for _ in range(self.langevin_steps):
        x = self.langevin_step(x)
    self.update_buffer(x, idx)
    return self.loss(x_real, x)


@alternative("in_place_map", "sample")
def _(self, batch_size):
    x = self.uniform_like((batch_size, self.channels, self.image_size, self.image_size), self.device)
    out = self.langevin_sample(x, self.sample_steps)
    return out.add_(1).mul_(0.5)


@alternative("own_loop_in_sample", "sample")
def _(self, batch_size):
    x = self.uniform_like((batch_size, self.channels, self.image_size, self.image_size), self.device)
    for _ in range(self.sample_steps):
        x = self.langevin_step(x=x)
    return x * 0.5 + 0.5


@alternative("recursive", "langevin_sample")
def _(self, x, steps):
    return x.detach() if steps == 0 else self.langevin_sample(self.langevin_step(x), steps - 1)


@alternative("torch_func_grad", "langevin_step")
def _(self, x):
    with torch.enable_grad():
        grad = torch.func.grad(lambda v: self.energy(v).sum())(x.detach()).detach()  # no graph to the weights
    z = self.noise_like(x.shape, x.device)
    return torch.clamp(x.detach() - self.step_size * grad + self.noise_scale * z, -1, 1)


@alternative("in_place_on_a_copy", "langevin_step")
def _(self, x):
    leaf = x.detach().clone().requires_grad_()
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(self.energy(leaf).sum(), leaf)
    out = leaf.detach()
    out.sub_(self.step_size * grad).add_(self.noise_like(x.shape, x.device), alpha=self.noise_scale)
    return out.clamp_(-1, 1)


@alternative("stacked", "sample_buffer")
def _(self, batch_size):
    idx, fresh = self.draw_replay(batch_size)
    noise = self.uniform_like((batch_size, self.channels, self.image_size, self.image_size), self.device)
    x = torch.stack([noise[b] if bool(fresh[b]) else self.replay[i] for b, i in enumerate(idx.tolist())])
    return x, idx


@alternative("index_put", "update_buffer")
def _(self, x, idx):
    with torch.no_grad():
        self.replay.index_put_((idx,), x.detach())


@alternative("torch_functions", "loss")
def _(self, x_real, x_fake):
    e_real, e_fake = self.energy(x_real), self.energy(x_fake.data)
    return torch.mean(e_real) - torch.mean(e_fake) + self.alpha * (torch.mean(e_real ** 2) + torch.mean(e_fake ** 2))


@alternative("keywords", "forward")
def _(self, x_real):
    x_init, idx = self.sample_buffer(batch_size=x_real.shape[0])
    x_fake = self.langevin_sample(steps=self.langevin_steps, x=x_init)
    self.update_buffer(idx=idx, x=x_fake)
    return self.loss(x_fake=x_fake, x_real=x_real)


# Whole classes, each with its own way through the functions.


@BOOK.alternative_class
class FreezeAndBackward(EnergyModel):
    """The UvA tutorial's way: freeze the weights, x.grad via backward(), restore; loss from one
    concatenated forward; buffer via index_copy_; keyword calls; in-place Langevin on a clone."""

    def langevin_step(self, x):
        flags = [p.requires_grad for p in self.energy_net.parameters()]
        for p in self.energy_net.parameters():
            p.requires_grad_(False)
        try:
            x = x.clone().detach().requires_grad_(True)
            with torch.enable_grad():
                self.energy_net(x).sum().backward()
            with torch.no_grad():
                x.add_(x.grad, alpha=-self.step_size)
                x.add_(self.noise_like(shape=x.shape, device=x.device) * self.noise_scale)
                x.clamp_(min=-1.0, max=1.0)
            return x.detach()
        finally:
            for p, flag in zip(self.energy_net.parameters(), flags):
                p.requires_grad_(flag)

    def langevin_sample(self, x, steps):
        k = 0
        while k < steps:
            x = self.langevin_step(x=x)
            k += 1
        return x

    def loss(self, x_real, x_fake):
        energies = self.energy_net(torch.cat([x_real, x_fake.detach()]))
        e_real, e_fake = energies[: len(x_real)], energies[len(x_real):]
        return (e_real.mean() - e_fake.mean()) + self.alpha * ((e_real ** 2).mean() + (e_fake ** 2).mean())

    def sample_buffer(self, batch_size):
        idx, fresh = self.draw_replay(batch_size=batch_size)
        x = self.replay.index_select(0, idx)
        noise = self.uniform_like(shape=x.shape, device=x.device)
        x[fresh] = noise[fresh]
        return x, idx

    def update_buffer(self, x, idx):
        with torch.no_grad():
            self.replay.index_copy_(0, idx, x)

    def forward(self, x_real):
        start, slots = self.sample_buffer(batch_size=len(x_real))
        fake = self.langevin_sample(x=start, steps=self.langevin_steps)
        self.update_buffer(x=fake, idx=slots)
        return self.loss(x_real=x_real, x_fake=fake)

    def sample(self, batch_size):
        x = self.uniform_like([batch_size, self.channels, self.image_size, self.image_size], self.replay.device)
        return self.langevin_sample(x, self.sample_steps).add(1).mul(0.5)


@BOOK.alternative_class
class Float64(EnergyModel):
    """The updates and the loss in float64, cast back; the gradient of E.mean() times B; decorated with no_grad."""

    @torch.no_grad()
    def langevin_step(self, x):
        with torch.enable_grad():
            leaf = x.detach().clone().requires_grad_()
            (grad,) = torch.autograd.grad(self.energy_net(leaf).mean() * len(leaf), [leaf])
        z = self.noise_like(x.shape, x.device).double()
        return (x.double() - self.step_size * grad.double() + self.noise_scale * z).clamp(-1, 1).to(x.dtype)

    def loss(self, x_real, x_fake):
        e_real = self.energy_net(x_real).double()
        e_fake = self.energy_net(x_fake.detach()).double()
        total = e_real.mean() - e_fake.mean() + self.alpha * (e_real.square().mean() + e_fake.square().mean())
        return total.float()

    def sample_buffer(self, batch_size):
        idx, fresh = self.draw_replay(batch_size)
        noise = self.uniform_like((batch_size, self.channels, self.image_size, self.image_size), self.device)
        mask = fresh.view(-1, 1, 1, 1).to(noise.dtype)
        return mask * noise + (1 - mask) * self.replay[idx], idx

    def update_buffer(self, x, idx):
        for b in range(len(idx)):
            self.replay[idx[b]] = x[b].detach()
