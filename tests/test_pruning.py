"""Pruning: scores, exact thresholds, schedules, zeros that stay zero, and whole runs on CPU."""

import json

import pytest
import torch

from gpt2 import train
from gpt2.model import GPT, GPTConfig
from lib.adamwprune import AdamWPruneSettings
from lib.adamwprune.build import build_optimizer, build_pruner
from lib.adamwprune.variants import hybrid_momentum_stability_score
from lib.optim import OptimizerSettings
from lib.optim.spam import AdamWSPAM
from lib.pruning import PruningSettings
from lib.pruning.pruner import PruningError, lowest_k_mask, prunable_parameters
from lib.pruning.schedule import is_update_step, sparsity_at
from lib.pruning.scores import magnitude_score
from lib.train.settings import Settings, SettingsError
from lib.train.stop import STOP


def test_magnitude_and_bitter0_scores_by_hand():
    w = torch.tensor([2.0, -1.0, 0.5])
    m = torch.tensor([0.5, 0.5, -2.0])
    v = torch.tensor([4.0, 1.0, 0.25])
    torch.testing.assert_close(magnitude_score(w), torch.tensor([2.0, 1.0, 0.5]))
    # |w*m| * |w| / (sqrt(v) + eps): 1*2/2, 0.5*1/1, 1*0.5/0.5
    torch.testing.assert_close(hybrid_momentum_stability_score(w, m, v), torch.tensor([1.0, 0.5, 1.0]))


@pytest.mark.parametrize("k", [0, 1, 5, 9, 10])
def test_lowest_k_is_exact_even_with_ties(k):
    scores = torch.tensor([3.0, 1.0, 1.0, 1.0, 1.0, 2.0, 0.0, 0.0, 5.0, 1.0])
    mask = lowest_k_mask(scores, k)
    assert int(mask.sum()) == k
    if 0 < k < 10:  # every selected score is <= every unselected one
        assert scores[mask].max() <= scores[~mask].min()


def test_all_equal_scores_still_give_an_exact_count():
    assert int(lowest_k_mask(torch.ones(1001), 500).sum()) == 500


@pytest.mark.parametrize(
    "ramp, expected",
    [("cubic", 0.5 * (1 - 0.5**3)), ("seed", 0.5 * 0.5**3), ("linear", 0.25)],
)
def test_ramps_halfway(ramp, expected):
    kw = dict(target=0.5, warmup=100, ramp_end=300, ramp=ramp)
    assert sparsity_at(100, **kw) == 0.0
    assert sparsity_at(200, **kw) == pytest.approx(expected)
    assert sparsity_at(300, **kw) == sparsity_at(10_000, **kw) == 0.5


def test_update_steps():
    kw = dict(warmup=10, frequency=5, ramp_end=27)
    assert [s for s in range(40) if is_update_step(s, **kw)] == [15, 20, 25, 27]


def tiny_model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16))


def test_a_state_score_without_moments_is_refused_not_fed_zeros():
    from lib.pruning.pruner import PruningError

    model = tiny_model()
    opt = build_optimizer(
        model, OptimizerSettings(name="adamwprune"), AdamWPruneSettings(), learning_rate=1e-2
    )
    s = PruningSettings(method="state", target_sparsity=0.5, pruning_warmup=0, frequency=1, ramp_end_step=4)
    pruner = build_pruner(model, opt, s, AdamWPruneSettings(), total_iters=10)  # bitter0, the default
    with pytest.raises(PruningError, match="reads Adam's moments.*transformer.h.0.attn.c_attn.weight"):
        pruner.prune_to(0.5)  # before any optimizer step: no exp_avg / exp_avg_sq yet
    bitter1 = AdamWPruneSettings(variant="bitter1")
    build_pruner(model, opt, s, bitter1, total_iters=10).prune_to(0.5)  # |w| needs none


@pytest.mark.parametrize("method", ["magnitude", "movement", "state"])
def test_the_memory_models_pruning_state_is_what_each_pruner_keeps(method):
    """lib/pruning's STATE_BYTES_PER_WEIGHT (read by gpt2/memory.py) against the built pruner."""
    from lib.pruning import PAIRINGS, STATE_BYTES_PER_WEIGHT

    model = tiny_model()
    opt = build_optimizer(
        model, OptimizerSettings(name=PAIRINGS[method][0]), AdamWPruneSettings(), learning_rate=1e-2
    )
    s = PruningSettings(method=method, target_sparsity=0.5, pruning_warmup=0, frequency=1, ramp_end_step=4)
    pruner = build_pruner(model, opt, s, AdamWPruneSettings(variant="bitter1"), total_iters=10)
    assert pruner.state_bytes() == STATE_BYTES_PER_WEIGHT.get(method, 0) * pruner.num_prunable


@pytest.mark.parametrize("base, expected", [("adamw", torch.optim.AdamW), ("adamwspam", AdamWSPAM)])
def test_adamwprune_runs_on_its_base_optimizer(base, expected):
    opt = build_optimizer(
        tiny_model(), OptimizerSettings(name="adamwprune"), AdamWPruneSettings(base=base), learning_rate=1e-3
    )
    assert type(opt) is expected


def test_prunable_set_is_block_linears_unless_asked():
    names = [n for n, _ in prunable_parameters(tiny_model())]
    assert names == [
        f"transformer.h.{i}.{m}.weight"
        for i in (0, 1)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    ]
    more = [n for n, _ in prunable_parameters(tiny_model(), include_embeddings=True, include_vectors=True)]
    assert (
        "transformer.wte.weight" in more
        and "lm_head.weight" not in more
        and "transformer.ln_f.weight" in more
    )


@pytest.mark.parametrize(
    "optimizer, method, variant",
    [
        ("adamw", "magnitude", "bitter0"),
        ("adamwspam", "movement", "bitter0"),
        ("adamwprune", "state", "bitter0"),
        ("adamwprune", "state", "bitter1"),
    ],
)
@pytest.mark.parametrize("global_threshold", [True, False])
def test_pruned_weights_stay_zero_under_weight_decay(optimizer, method, variant, global_threshold):
    model = tiny_model()
    adamwprune = AdamWPruneSettings(variant=variant or "bitter0")
    opt = build_optimizer(
        model, OptimizerSettings(name=optimizer, weight_decay=0.1), adamwprune, learning_rate=1e-2
    )
    s = PruningSettings(
        method=method,
        target_sparsity=0.6,
        pruning_warmup=2,
        frequency=2,
        ramp_end_step=8,
        global_threshold=global_threshold,
    )
    pruner = build_pruner(model, opt, s, adamwprune, total_iters=60)
    torch.manual_seed(3)
    zeros_at_end_of_ramp = None
    for step in range(1, 61):
        idx = torch.randint(0, 50257, (4, 16))
        _, loss = model(idx, idx)
        loss.backward()
        pruner.before_step()
        opt.step()
        opt.zero_grad()
        pruner.after_step(step)
        if step == 8:
            zeros_at_end_of_ramp = [w == 0 for w in pruner.weights]
    assert pruner.sparsity()["prunable"] == pytest.approx(0.6, abs=1e-3)
    assert all(
        t.grad_fn is None and not t.requires_grad for t in pruner.extra_tensors()
    )  # no autograd history
    for before, w in zip(zeros_at_end_of_ramp, pruner.weights, strict=True):
        assert torch.equal(before, w == 0)  # 52 more steps with weight decay revived none
    if not global_threshold:
        for layer in pruner.sparsity()["layers"].values():
            assert layer["zeros"] == round(0.6 * layer["numel"])


def test_invalid_pairings_are_rejected_with_the_fix():
    with pytest.raises(
        SettingsError,
        match="pruning method 'state' does not pair with optimizer 'adamw'.*use --optimizer adamwprune",
    ):
        Settings().replace({"pruning.method": "state", "optimizer.name": "adamw"})
    with pytest.raises(
        SettingsError, match="adamwprune prunes by its own states: use --pruning-method state"
    ):
        Settings().replace({"pruning.method": "magnitude", "optimizer.name": "adamwprune"})
    with pytest.raises(SettingsError, match="does not pair"):
        Settings().replace({"optimizer.name": "adamwprune"})


def test_ramp_that_cannot_fit_the_run_is_refused():
    with pytest.raises(
        PruningError, match="must lie after PRUNING_WARMUP = 1000 and within the run's 100 steps"
    ):
        PruningSettings(method="magnitude").ramp_end(100)


# --- whole runs on Shakespeare ---------------------------------------------------------------

PRUNE = ["--target-sparsity", "0.7", "--pruning-warmup", "4"]


def run(config, out, *flags):
    return train.main(["--config", str(config), "--out-dir", str(out), *flags])


@pytest.mark.parametrize(
    "flags, state_ratio",
    [
        (["--optimizer", "adamwspam", "--pruning-method", "magnitude"], 0.0),
        (["--optimizer", "adamw", "--pruning-method", "movement"], 0.5),  # bf16 scores
        (["--optimizer", "adamwprune", "--pruning-method", "state", "--adamwprune-variant", "bitter0"], 0.0),
        (["--optimizer", "adamwprune", "--pruning-method", "state", "--adamwprune-variant", "bitter1"], 0.0),
    ],
)
def test_each_method_reaches_its_target_and_reports_measured_sparsity(
    tiny_config, tmp_path, flags, state_ratio
):
    out = tmp_path / "run"
    assert run(tiny_config, out, *flags, *PRUNE) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sparsity"] == pytest.approx(0.7, abs=0.001)
    assert summary["pruning_state_per_weight_byte"] == state_ratio
    assert summary["training_bytes_per_weight_byte"] == pytest.approx(
        3.0 + state_ratio, abs=1e-3
    )  # + Adam's m, v
    state = torch.load(out / "ckpt.pt", weights_only=True)["model"]
    zeros = sum(
        int((t == 0).sum())
        for n, t in state.items()
        if n.startswith("transformer.h.") and n.endswith(".weight") and t.dim() == 2
    )
    assert zeros == round(0.7 * summary["prunable_weights"])  # measured on the saved weights
    evals = [
        json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in line
    ]
    assert evals[0]["sparsity"] == 0.0 and evals[-1]["sparsity"] == pytest.approx(0.7, abs=0.001)
    layers = json.loads((out / "sparsity.json").read_text())["layers"]
    assert sum(v["zeros"] for v in layers.values()) == zeros


@pytest.mark.parametrize(
    "scaling, setting, expected", [("iterations", "max_iters", 36), ("batch", "batch_size", 5)]
)
def test_bitter2_scaling_is_applied_and_recorded(tiny_config, tmp_path, scaling, setting, expected):
    text = tiny_config.read_text().replace("}", f"    'ADAMWPRUNE_BITTER2_SCALING': '{scaling}',\n}}")
    tiny_config.write_text(text)
    out = tmp_path / "run"
    assert (
        run(
            tiny_config,
            out,
            "--optimizer",
            "adamwprune",
            "--pruning-method",
            "state",
            "--adamwprune-variant",
            "bitter2",
            *PRUNE,
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scaling"]["setting"] == f"training.{setting}" and summary["scaling"]["to"] == expected
    assert json.loads((out / "settings.json").read_text())["training"][setting] == expected
    assert summary["iters"] == (36 if scaling == "iterations" else 30)
    # A resume keeps the run's scaled settings (scaled once, not again: nothing left to do), and a
    # flag given then is scaled as a new run's would be.
    assert run(tiny_config, out, "--resume") == 0
    assert json.loads((out / "summary.json").read_text())["iters"] == summary["iters"]
    if scaling == "iterations":
        assert run(tiny_config, out, "--resume", "--max-iters", "35", "--eval-interval", "100") == 0
        assert json.loads((out / "summary.json").read_text())["iters"] == 42


def test_resume_mid_ramp_keeps_masks_and_movement_scores(tiny_config, tmp_path, monkeypatch):
    flags = ["--optimizer", "adamwspam", "--pruning-method", "movement", *PRUNE]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run(tiny_config, straight, *flags) == 0

    step = train.Trainer._step

    def stop_at_13(self, lr):  # as a SIGTERM arriving during step 13 would
        out = step(self, lr)
        if self.state.iter_num + 1 == 13:
            STOP.request("SIGTERM")
        return out

    monkeypatch.setattr(train.Trainer, "_step", stop_at_13)
    assert run(tiny_config, stopped, *flags) == 130
    monkeypatch.setattr(train.Trainer, "_step", step)
    assert torch.load(stopped / "ckpt.pt", weights_only=True)["iter_num"] == 13
    assert run(tiny_config, stopped, "--resume", *flags) == 0

    def records(d):
        return [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]

    def losses(d):
        return [(r["kind"], r["iter"], r.get("loss"), r.get("val_loss")) for r in records(d)]

    # Identical: a stop request adds no evaluation of its own.
    assert losses(stopped) == losses(straight)
    a = torch.load(straight / "ckpt.pt", weights_only=True)
    b = torch.load(stopped / "ckpt.pt", weights_only=True)
    for x, y in zip(a["pruner"]["extra"], b["pruner"]["extra"], strict=True):
        assert torch.equal(x, y)
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name])


def test_bf16_movement_scores_accumulate_like_fp32_where_plain_bf16_stalls():
    """Stochastic rounding keeps the bf16 sum unbiased over thousands of small steps."""
    from lib.pruning.pruner import accumulate_movement_, lowest_k_mask

    torch.manual_seed(0)
    n, steps = 20_000, 3000
    w = torch.randn(n) * 0.02
    drift = torch.randn(n) * 2e-4
    exact, plain = torch.zeros(n), torch.zeros(n, dtype=torch.bfloat16)
    scores = [torch.zeros(n, dtype=torch.bfloat16)]
    for _ in range(steps):
        g = torch.randn(n) * 1e-3 + drift
        exact -= g * w
        plain -= (g * w).to(torch.bfloat16)
        accumulate_movement_(scores, [g], [w])
    rel = lambda s: float((s.float() - exact).norm() / exact.norm())
    assert scores[0].dtype == torch.bfloat16
    assert rel(scores[0]) < 0.15 < rel(plain)  # plain bf16 lost much of the sum
    k = n // 2
    agree = (lowest_k_mask(scores[0].float(), k) & lowest_k_mask(exact, k)).sum().item() / k
    assert agree > 0.95  # the pruning decision is the fp32 one for all but a few percent


def test_movement_rounding_is_the_same_on_every_replica():
    """The dither comes from the tensors' bits, not a random generator: DDP ranks agree."""
    from lib.pruning.pruner import accumulate_movement_

    torch.manual_seed(0)
    w, g = torch.randn(1000) * 0.02, torch.randn(1000) * 1e-3
    start = torch.randn(1000).to(torch.bfloat16) * 1e-3
    a, b = [start.clone()], [start.clone()]
    torch.manual_seed(1)
    accumulate_movement_(a, [g], [w])
    torch.manual_seed(2)
    accumulate_movement_(b, [g], [w])
    assert torch.equal(a[0], b[0]) and (a[0] != start).sum() > 100


def test_the_compiled_per_step_pruning_work_matches_the_eager_multi_tensor_path():
    """What CUDA runs compile (one kernel per tensor) gives the eager path's gradients and scores."""
    from lib.pruning.pruner import (
        accumulate_movement_,
        foreach_mask_gradients_,
        mask_gradients_,
        movement_step_,
    )

    torch.manual_seed(0)
    weights = [torch.randn(64, 32), torch.randn(128)]
    for w in weights:
        w[torch.rand_like(w) < 0.5] = 0.0
    grads = [torch.randn_like(w) for w in weights]
    scores = [torch.randn_like(w).to(torch.bfloat16) * 1e-3 for w in weights]

    reference_grads = [g.clone() for g in grads]
    foreach_mask_gradients_(reference_grads, weights)
    compiled_grads = [g.clone() for g in grads]
    torch.compile(mask_gradients_, dynamic=False)(compiled_grads, weights)
    for ref, got, w in zip(reference_grads, compiled_grads, weights, strict=True):
        assert torch.equal(ref, got) and (got[w == 0] == 0).all() and (got[w != 0] != 0).all()

    reference_scores = [s.clone() for s in scores]
    accumulate_movement_(reference_scores, grads, weights)
    step = torch.compile(movement_step_, dynamic=False)
    for live in (False, True):
        got_scores, got_grads = [s.clone() for s in scores], [g.clone() for g in grads]
        step(got_scores, got_grads, weights, live)
        for ref, got in zip(reference_scores, got_scores, strict=True):
            # the same bf16 value, or one bf16 step apart where a fused multiply-add rounded differently
            torch.testing.assert_close(got.float(), ref.float(), rtol=2**-7, atol=0)
        assert all(
            torch.equal(g, r) for g, r in zip(got_grads, reference_grads if live else grads, strict=True)
        )
