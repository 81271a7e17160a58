"""fp16 loss scaling: a step GradScaler skips for an overflow changes nothing, for every optimizer and pruner.

On a GPU, torch's fused AdamW and AdamWSPAM take GradScaler's overflow flag (`found_inf`)
on the device instead of being skipped on the host. These tests take that same path on
the CPU (fused AdamW, a CPU GradScaler) through the trainer's own step, inject an infinite
gradient entry into one step, and compare every piece of state before and after it:
weights, Adam's moments and step counts, SPAM's statistics and movement scores.

On the CPU the forward runs in fp32, without autocast: the skip path sees only the fp32
gradients of the fp32 weights and the scaler's flag, whatever the forward's precision, and
16-bit CPU matmuls have no fast kernel on many CPUs (fp16: 1.5 s a step of this tiny model on
an AMD EPYC with AVX-512, against 0.1 s; bf16 on one with only AVX2: 7.9 s for one 128 x 768 by
768 x 50257 product, against 0.37 s in fp32).
On CUDA (tests/test_gpu.py) it is float16, as a run takes it.
"""

import math

import pytest
import torch

from gpt2.model import GPT, GPTConfig
from lib.adamwprune import AdamWPruneSettings
from lib.adamwprune.build import build_optimizer, build_pruner
from lib.optim import OptimizerSettings
from lib.optim.spam import spam_adamw_
from lib.pruning import PruningSettings
from lib.runtime.settings import RuntimeSettings
from lib.train.data import TokenData
from lib.train.loop import Trainer
from lib.train.settings import DataSettings, ModelSettings, Settings, TrainingSettings

INJECT_AT = 7  # a step that is neither a mask update nor a SPAM reset
CASES = {
    "adamw": ("adamw", "none", "adamw", "eager"),
    "adamwspam": ("adamwspam", "none", "adamw", "eager"),
    "adamwspam-compiled": ("adamwspam", "none", "adamw", "compiled"),
    "movement": ("adamwspam", "movement", "adamw", "eager"),
    "state": ("adamwprune", "state", "adamw", "eager"),
    "state-spam-base": ("adamwprune", "state", "adamwspam", "eager"),
}


def fp16_trainer(
    tmp_path, data_dir, optimizer: str, method: str, base: str, step: str, device: str = "cpu"
) -> Trainer:
    """A tiny GPT-2 on Shakespeare under autocast and an fp16 GradScaler, pruning from step 2.

    On the CPU the optimizer is forced onto the GPU's path (fused AdamW, one-pass SPAM step);
    on CUDA it is built as a run builds it (compiled SPAM step and movement kernel).
    """
    s = Settings(
        model=ModelSettings(block_size=32),
        data=DataSettings(data_dir=str(data_dir)),
        training=TrainingSettings(
            batch_size=4, max_iters=20, lr_warmup_steps=2, eval_samples=1, log_interval=5, grad_clip=1.0
        ),
        optimizer=OptimizerSettings(
            name=optimizer,
            spam_spike_threshold=0.5,
            spam_theta=5.0,
            spam_clip_grace_steps=2,
            spam_interval=12,
        ),
        pruning=PruningSettings(
            method=method,
            target_sparsity=0.5,
            pruning_warmup=2,
            frequency=2,
            ramp_end_step=14,
        ),
        adamwprune=AdamWPruneSettings(base=base, variant="bitter0"),
        runtime=RuntimeSettings(device=device, compile=device == "cuda"),
    )
    dev = torch.device(device)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_settings(s.model)).to(dev)
    if dev.type == "cuda":
        opt = build_optimizer(model, s.optimizer, s.adamwprune, learning_rate=1e-3, compile=True)
    else:
        opt = build_optimizer(model, s.optimizer, s.adamwprune, learning_rate=1e-3, compile=False, fused=True)
        if step == "compiled":  # the one-pass step as torch.compile builds it (on CUDA by default)
            opt.one_pass = True
            opt._one_pass_step = torch.compile(spam_adamw_, dynamic=False)
        elif optimizer != "adamw":
            opt.one_pass = True  # the device-side path GPU runs take
    pruner = build_pruner(model, opt, s.pruning, s.adamwprune, total_iters=20)
    data = TokenData(s.data.token_dir, s.data.dataset, s.data.data_dir, s.runtime.seed)
    amp = torch.float16 if dev.type == "cuda" else None  # see the module's docstring
    trainer = Trainer(s, tmp_path, dev, model, model, opt, data, amp, pruner)
    trainer.scaler = torch.amp.GradScaler(device, init_scale=2.0**8)
    return trainer


def snapshot(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Every tensor a skipped step must leave alone."""
    out = {f"param {n}": p.detach().clone() for n, p in trainer.model.named_parameters()}
    for i, st in enumerate(trainer.optimizer.state.values()):
        for key, value in st.items():
            out[f"state {i} {key}"] = value.clone()
    if hasattr(trainer.optimizer, "norm_stats"):
        out["spam norm_stats"] = trainer.optimizer.norm_stats.clone()
    if trainer.pruner is not None:
        for i, t in enumerate(trainer.pruner.extra_tensors()):
            out[f"movement {i}"] = t.clone()
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_an_overflowed_fp16_step_changes_nothing(case, tmp_path, data_dir):
    check_overflowed_step_changes_nothing(fp16_trainer(tmp_path, data_dir, *CASES[case]))


def check_overflowed_step_changes_nothing(trainer: Trainer) -> None:
    """Train 15 steps, the 7th with an infinite gradient entry; that step must change nothing."""
    target = trainer.pruner.weights[0] if trainer.pruner else trainer.model.transformer.h[0].mlp.c_fc.weight
    inject = {"now": False}

    def poison(grad: torch.Tensor) -> torch.Tensor:
        if inject["now"]:
            grad = grad.clone()
            grad.view(-1)[0] = math.inf
        return grad

    target.register_hook(poison)
    for step in range(1, 16):
        inject["now"] = step == INJECT_AT
        if inject["now"]:
            before, scale_before = snapshot(trainer), trainer.scaler.get_scale()
        loss, _ = trainer._step(1e-3)
        assert math.isfinite(loss.item())
        if inject["now"]:
            after = snapshot(trainer)
            assert before.keys() == after.keys() and len(before) > 20
            changed = [k for k in before if not torch.equal(before[k], after[k])]
            assert changed == [], f"the skipped step changed {changed[:5]}"
            assert trainer.scaler.get_scale() == scale_before / 2  # GradScaler backed off
            assert trainer.skipped_steps.item() == 1
        trainer.state.iter_num = step
    # Training went on: everything finite, the pruner reached its target, SPAM still detects.
    for name, value in snapshot(trainer).items():
        assert torch.isfinite(value.float()).all(), name
    if trainer.pruner is not None:
        assert trainer.pruner.sparsity()["prunable"] == pytest.approx(0.5, abs=1e-3)
    if hasattr(trainer.optimizer, "norm_stats"):
        assert trainer.optimizer.norm_stats[2].item() == 14  # 15 steps, one skipped
    steps = {st["step"].item() for st in trainer.optimizer.state.values()}
    assert steps == {14.0}  # Adam's bias correction counted the 14 steps taken


def test_a_non_finite_gradient_norm_never_enters_spams_statistics():
    from lib.optim import OptimizerSettings
    from lib.optim.spam import AdamWSPAM

    p = torch.nn.Parameter(torch.zeros(3))
    opt = AdamWSPAM(
        [p], settings=OptimizerSettings(spam_clip=False, spam_spike_threshold=2.0), lr=0.1, foreach=True
    )
    for i in range(12):
        p.grad = torch.ones(3)
        opt.observe_grad_norm(torch.tensor(1.0 + 0.01 * (-1) ** i))
        opt.step()
    stats = opt.norm_stats.clone()
    for bad in (math.inf, math.nan):
        p.grad = torch.ones(3)
        opt.observe_grad_norm(torch.tensor(bad))
        opt.step()
        assert torch.equal(opt.norm_stats, stats)  # no spike counted, the history untouched
    p.grad = torch.ones(3)
    opt.observe_grad_norm(torch.tensor(50.0))
    opt.step()
    assert opt.log_stats()["spam_spikes"] == 1  # and the detector still works
