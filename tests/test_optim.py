"""AdamWSPAM's features on crafted tensors, and its equality with AdamW when they are off."""

import pytest
import torch

from lib.adamwprune import AdamWPruneSettings
from lib.adamwprune.build import build_optimizer
from lib.optim import OPTIMIZERS, OptimizerSettings
from lib.optim.spam import AdamWSPAM, reset_warmup_scale, spike_clip_

OFF = OptimizerSettings(
    spam_clip=False, spam_spike_threshold=0.0, spam_periodic_reset=False, spam_warmup=False
)


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))


def train(model, opt, steps=20):
    torch.manual_seed(1)
    for _ in range(steps):
        x = torch.randn(32, 8)
        loss = (model(x) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()


def test_spam_with_every_feature_off_equals_adamw():
    a, b = tiny_net(), tiny_net()
    kw = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=True)
    train(a, torch.optim.AdamW(a.parameters(), **kw))
    train(b, AdamWSPAM(b.parameters(), settings=OFF, **kw))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_spike_clip_bounds_entries_and_spares_unset_ones():
    g = [torch.tensor([10.0, 1.0, -10.0, 3.0, -0.5])]
    v = [torch.tensor([1.0, 1.0, 1.0, 0.0, 0.01])]
    spike_clip_(g, v, theta=4.0)  # bound sqrt(4 * v) = 2 where v = 1
    torch.testing.assert_close(g[0], torch.tensor([2.0, 1.0, -2.0, 3.0, -0.2]))


def one_param_spam(spam: OptimizerSettings, lr=0.1):
    p = torch.nn.Parameter(torch.zeros(3))
    return p, AdamWSPAM(
        [p], settings=spam, lr=lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0, foreach=True
    )


def step_with(p, opt, grad, norm=None):
    p.grad = grad.clone()
    if norm is not None:
        opt.observe_grad_norm(torch.tensor(norm))
    opt.step()


def test_gradient_norm_spike_softly_resets_the_moments_and_is_counted():
    p, opt = one_param_spam(
        OptimizerSettings(spam_clip=False, spam_spike_threshold=2.0, spam_periodic_reset=False)
    )
    g = torch.tensor([1.0, -1.0, 0.5])
    for i in range(12):  # a quiet history: norms 1.0 +- 0.01
        step_with(p, opt, g, norm=1.0 + 0.01 * (-1) ** i)
    m_before = opt.state[p]["exp_avg"].clone()
    v_before = opt.state[p]["exp_avg_sq"].clone()
    step_with(p, opt, g, norm=5.0)
    assert opt.log_stats()["spam_spikes"] == 1
    torch.testing.assert_close(opt.state[p]["exp_avg"], 0.9 * 0.5 * m_before + 0.1 * g)
    torch.testing.assert_close(opt.state[p]["exp_avg_sq"], 0.99 * 0.9 * v_before + 0.01 * g * g)
    step_with(p, opt, g, norm=1.0)
    assert opt.log_stats()["spam_spikes"] == 1


def test_no_spike_verdict_before_ten_steps():
    p, opt = one_param_spam(
        OptimizerSettings(spam_clip=False, spam_spike_threshold=2.0, spam_periodic_reset=False)
    )
    for norm in (1.0, 1.0, 100.0):
        step_with(p, opt, torch.ones(3), norm=norm)
    assert opt.log_stats()["spam_spikes"] == 0


@pytest.mark.parametrize("restart", [False, True])
def test_periodic_reset_zeroes_moments_and_restarts_bias_correction_only_if_asked(restart):
    p, opt = one_param_spam(
        OptimizerSettings(
            spam_clip=False,
            spam_spike_threshold=0.0,
            spam_periodic_reset=True,
            spam_interval=3,
            spam_reset_bias_correction=restart,
            spam_warmup=False,
        )
    )
    for _ in range(3):
        step_with(p, opt, torch.ones(3))
    assert opt.state[p]["step"].item() == 3
    g = torch.tensor([2.0, -2.0, 1.0])
    step_with(p, opt, g)  # the 4th step starts with a reset
    assert opt.state[p]["step"].item() == (1 if restart else 4)  # SPAM's code keeps the count
    torch.testing.assert_close(opt.state[p]["exp_avg"], 0.1 * g)
    torch.testing.assert_close(opt.state[p]["exp_avg_sq"], 0.01 * g * g)


def test_warmup_after_reset_scales_the_update_not_the_decay_and_restores_lr():
    p = torch.nn.Parameter(torch.full((3,), 2.0))
    cfg = OptimizerSettings(
        spam_clip=False,
        spam_spike_threshold=0.0,
        spam_interval=2,
        spam_reset_bias_correction=True,
        spam_warmup_steps=4,
    )
    opt = AdamWSPAM([p], settings=cfg, lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5, foreach=True)
    for _ in range(2):
        step_with(p, opt, torch.ones(3))
    before = p.detach().clone()
    step_with(p, opt, torch.ones(3))  # first step after the reset: the update times 0.01, all the decay
    # AdamW: p * (1 - lr * wd), then minus lr * scale * m_hat / sqrt(v_hat) (= 1 on a fresh start).
    expected = before * (1 - 0.1 * 0.5) - 0.1 * reset_warmup_scale(0, 4, 0.01)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["weight_decay"] == 0.5


def test_warmup_scale_is_a_half_cosine_from_the_start_factor():
    assert reset_warmup_scale(0, 150, 0.01) == pytest.approx(0.01)  # SPAM's CosineDecay(0.99, 150)
    assert reset_warmup_scale(75, 150, 0.01) == pytest.approx(0.01 + 0.99 * 0.5)
    assert reset_warmup_scale(149, 150, 0.01) < 1.0 == reset_warmup_scale(150, 150, 0.01)
    assert reset_warmup_scale(10, 100, 1.0) == 1.0


@pytest.mark.parametrize("one_pass", [False, True])
def test_clipping_waits_for_the_grace_period_at_the_start_and_after_each_reset(one_pass):
    """With theta tiny every entry past the grace period is clipped; within it none is."""
    p = torch.nn.Parameter(torch.zeros(3))
    cfg = OptimizerSettings(
        spam_theta=1e-6, spam_clip_grace_steps=3, spam_spike_threshold=0.0, spam_interval=6, spam_warmup=False
    )
    opt = AdamWSPAM([p], settings=cfg, one_pass=one_pass, lr=0.1, weight_decay=0.0, foreach=True)
    clipped = []
    for step in range(1, 13):
        m = opt.state[p]["exp_avg"].clone() if opt.state.get(p) else torch.zeros(3)
        if (step - 1) % 6 == 0:
            m = torch.zeros(3)  # the reset before this step
        step_with(p, opt, torch.full((3,), 4.0))
        unclipped = 0.9 * m + 0.1 * 4.0
        clipped.append(not torch.allclose(opt.state[p]["exp_avg"], unclipped))
    # steps 1-3 and 7-9 are in the grace period (step 1 and 7 have v = 0: nothing to clip against)
    assert clipped == [False, False, False, True, True, True] * 2


def test_spam_state_survives_a_checkpoint():
    p, opt = one_param_spam(
        OptimizerSettings(spam_clip=True, spam_spike_threshold=2.0, spam_periodic_reset=True, spam_interval=5)
    )
    for i in range(7):
        step_with(p, opt, torch.full((3,), 1.0 + i), norm=1.0 + i)
    state = opt.state_dict()
    p2, opt2 = one_param_spam(
        OptimizerSettings(spam_clip=True, spam_spike_threshold=2.0, spam_periodic_reset=True, spam_interval=5)
    )
    opt2.load_state_dict(state)
    assert torch.equal(opt2.norm_stats, opt.norm_stats)
    assert (opt2.num_steps, opt2.steps_since_reset) == (opt.num_steps, opt.steps_since_reset) == (7, 2)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_builds_and_decays_only_matrices(name):
    model = tiny_net()
    opt = build_optimizer(model, OptimizerSettings(name=name), AdamWPruneSettings(), learning_rate=1e-3)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() == 1 for p in no_decay["params"])
    train(model, opt, steps=2)


def test_one_pass_spam_step_equals_the_pre_step_then_adamw():
    """The fused path (one compiled function on CUDA) computes what the simple path does.

    Spikes, clipped entries and a periodic reset with its warm-up all happen in 25 steps.
    """
    cfg = OptimizerSettings(spam_theta=5.0, spam_spike_threshold=0.5, spam_interval=7, spam_warmup_steps=3)
    models, optimizers = [], []
    for one_pass in (True, False):
        model = tiny_net()
        groups = [
            {"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
        ]
        opt = AdamWSPAM(groups, settings=cfg, one_pass=one_pass, lr=1e-2, betas=(0.9, 0.95), foreach=True)
        models.append(model)
        optimizers.append(opt)
    torch.manual_seed(2)
    for step in range(25):
        x = torch.randn(32, 8) * (8.0 if step in (12, 18) else 1.0)
        for model, opt in zip(models, optimizers, strict=True):
            for g in opt.param_groups:
                g["lr"] = 1e-2 * (1 - step / 30)
            (model(x) ** 2).mean().backward()
            opt.observe_grad_norm(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
            opt.step()
            opt.zero_grad()
    fast, simple = optimizers
    assert fast.log_stats()["spam_spikes"] == simple.log_stats()["spam_spikes"] >= 1
    for pa, pb in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    for pa, pb in zip(models[0].parameters(), models[1].parameters(), strict=True):
        sa, sb = fast.state[pa], simple.state[pb]
        assert torch.equal(sa["step"], sb["step"])  # same bias correction after the reset
        torch.testing.assert_close(sa["exp_avg_sq"], sb["exp_avg_sq"], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("one_pass", [False, True])
def test_the_clipped_entries_are_counted_on_the_steps_asked_for(one_pass):
    p = torch.nn.Parameter(torch.zeros(5))
    spam = OptimizerSettings(
        spam_theta=4.0, spam_clip_grace_steps=0, spam_spike_threshold=0.0, spam_periodic_reset=False
    )
    opt = AdamWSPAM(
        [p], settings=spam, lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0, one_pass=one_pass
    )
    opt.count_clipped_every = 2  # as the trainer sets it to its logging interval
    step_with(p, opt, torch.ones(5))  # v = 0 before it: nothing is clipped; after it v = 0.01
    assert "spam_clipped" not in opt.log_stats()  # step 1 was not counted: no stale figure either
    step_with(p, opt, torch.tensor([0.1, -0.5, 0.3, 0.0, 0.2]))  # bound sqrt(4 * 0.01) = 0.2: two over it
    assert opt.log_stats() == {"spam_spikes": 0, "spam_clipped": 2}
    before = p.detach().clone()
    step_with(p, opt, torch.tensor([0.1, -0.5, 0.3, 0.0, 0.2]))
    assert "spam_clipped" not in opt.log_stats() and not torch.equal(p, before)
    off = AdamWSPAM([p], settings=OptimizerSettings(spam_clip=False), lr=0.1, one_pass=one_pass)
    step_with(p, off, torch.ones(5))
    assert "spam_clipped" not in off.log_stats()  # no clip, no count
