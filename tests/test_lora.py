"""LoRA fine-tuning through peft: starts as the base model, trains only adapters, merges back."""

import json

import pytest
import torch

from gpt2.model import GPT, GPTConfig
from lib.convert.lora import apply_lora, merge_lora_state
from lib.convert.settings import LoraSettings
from lib.train.settings import Settings, SettingsError

pytest.importorskip("peft")


def tiny(seed=0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.from_name("gpt2-tiny", block_size=32))


def test_adapters_start_as_the_base_model_and_are_all_that_trains():
    base, model = tiny(), tiny()
    record = apply_lora(model, LoraSettings(enabled=True, rank=4, alpha=8, dropout=0.0))
    n_layer, d = 4, 128
    # per block: c_attn (d -> 3d), attn.c_proj (d -> d), c_fc (d -> 4d), mlp.c_proj (4d -> d)
    expected = n_layer * 4 * ((d + 3 * d) + (d + d) + (d + 4 * d) + (4 * d + d))
    assert record["trainable_params"] == expected
    assert record["total_params"] == base.num_params() + expected
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if "lora_" in n
    }
    idx = torch.randint(0, 50257, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(idx, idx)[1], base.eval()(idx, idx)[1])  # B = 0 at the start


def test_training_moves_only_adapters_and_the_merged_model_computes_the_same():
    model = tiny()
    apply_lora(model, LoraSettings(enabled=True, rank=4, dropout=0.0))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    idx = torch.randint(0, 50257, (4, 32))
    for _ in range(5):
        model(idx, idx)[1].backward()
        opt.step()
        opt.zero_grad()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    with torch.no_grad():
        adapted, _ = model.eval()(idx, all_positions=True)
        plain = tiny()
        plain.load_state_dict(merge_lora_state(model))
        merged, _ = plain.eval()(idx, all_positions=True)
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-4)


def test_pruning_methods_that_need_the_frozen_weights_gradients_are_refused():
    with pytest.raises(SettingsError, match="use --pruning-method magnitude"):
        Settings().replace({"lora.enabled": True, "pruning.method": "movement", "optimizer.name": "adamw"})
    with pytest.raises(SettingsError, match="CONFIG_GPT2_LORA_TARGETS"):
        LoraSettings(targets="c_attn,lm_head")


def test_a_lora_run_with_magnitude_pruning_prunes_the_base_and_exports_merged(tiny_config, tmp_path):
    from gpt2 import train

    out = tmp_path / "run"
    argv = ["--config", str(tiny_config), "--out-dir", str(out), "--max-iters", "8", "--eval-interval", "8"]
    argv += ["--lora", "--lora-rank", "4", "--optimizer", "adamw", "--pruning-method", "magnitude"]
    argv += ["--target-sparsity", "0.5", "--pruning-warmup", "2"]
    assert train.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lora"]["trainable_fraction"] < 0.1
    assert summary["sparsity"] == pytest.approx(0.5, abs=0.001)  # the frozen base weights, measured
    state = torch.load(out / "ckpt.pt", weights_only=True)["model"]
    assert any("lora_A" in k for k in state) and any(k.endswith("base_layer.weight") for k in state)
    pytest.importorskip("safetensors")
    from gpt2.hf import import_hf
    from scripts import export_hf

    assert export_hf.main([str(out), "--checkpoint", "last", "--out", str(tmp_path / "hf")]) == 0
    merged, record = import_hf(str(tmp_path / "hf"))
    assert 0.0 <= record["sparsity"] < 0.5  # the adapters' dense update fills some pruned places
