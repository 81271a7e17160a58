"""RA+MLA attention: causality for any alpha, alpha 0 is plain MLA, shapes, counts, and a run."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from gpt2.model import GPT, GPTConfig, LatentAttention, reciprocal_attention
from lib.train.settings import Settings, SettingsError

from .conftest import ROOT, make_config


def config(**kw) -> GPTConfig:
    return GPTConfig.from_name(
        "gpt2-tiny", block_size=32, ra_mla=True, ra_mla_latent_dim=16, ra_mla_ra_window=8, **kw
    )


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_no_position_sees_the_future_whatever_alpha(alpha):
    torch.manual_seed(0)
    model = GPT(config(ra_mla_ra_alpha=alpha)).eval()
    idx = torch.randint(0, 50257, (1, 32))
    changed = idx.clone()
    changed[0, 20:] = torch.randint(0, 50257, (12,))
    with torch.no_grad():
        a, _ = model(idx, all_positions=True)
        b, _ = model(changed, all_positions=True)
    torch.testing.assert_close(a[0, :20], b[0, :20])  # positions before the change are unchanged
    assert not torch.allclose(a[0, 20:], b[0, 20:])


def test_alpha_zero_is_plain_causal_attention_and_the_mix_is_the_formula():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, 8) for _ in range(3))
    plain = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(reciprocal_attention(q, k, v, 0.0, window=4), plain, rtol=1e-5, atol=1e-6)
    # by hand for one query: position 5 with window 4 mixes j = 2..5, keeps j = 0, 1 plain
    s = q[0, 0] @ k[0, 0].T / 8**0.5
    row = s[5, :6].clone()
    row[2:6] = 0.7 * s[5, 2:6] + 0.3 * s[2:6, 5]
    expected = torch.softmax(row, -1) @ v[0, 0, :6]
    torch.testing.assert_close(
        reciprocal_attention(q, k, v, 0.3, window=4)[0, 0, 5], expected, rtol=1e-5, atol=1e-6
    )


def test_shapes_parameter_counts_and_cache_size():
    c = config()
    C, L, D = 128, 16, 32
    attn = LatentAttention(c)
    per_block = (C * L + L) + (L * C + C) + (L * C + C) + (C * L + L) + (L * C + C) + (C * C + C)
    assert sum(p.numel() for p in attn.parameters()) == per_block
    assert attn(torch.randn(2, 32, C)).shape == (2, 32, C)
    shared = LatentAttention(
        dataclasses.replace(c, ra_mla_per_head_v_up=False, ra_mla_per_head_q_latent=False)
    )
    assert shared.v_up.out_features == D and shared.q_proj.in_features == C
    assert c.kv_cache_values_per_token() == 4 * L
    assert dataclasses.replace(c, ra_mla=False).kv_cache_values_per_token() == 4 * 2 * C


def test_settings_map_the_seed_symbols_and_refuse_bad_values():
    s = Settings().replace({"model.ra_mla": True, "model.ra_mla_ra_alpha": 0.25})
    c = GPTConfig.from_settings(s.model)
    assert (c.latent, c.ra_mla_ra_alpha, c.ra_mla_ra_window) == (128, 0.25, 64)
    assert (c.ra_mla_per_head_q_latent, c.ra_mla_per_head_v_up) == (True, True)
    # every field of the settings reaches the network as it is, by the same name
    assert all(getattr(c, f.name) == getattr(s.model, f.name) for f in dataclasses.fields(s.model))
    assert (c.n_layer, c.n_head, c.n_embd, c.vocab_size) == (4, 4, 128, 50304)
    with pytest.raises(SettingsError, match="CONFIG_RA_MLA_RA_ALPHA"):
        Settings().replace({"model.ra_mla": True, "model.ra_mla_ra_alpha": 1.5})
    with pytest.raises(SettingsError, match="GPT-2 weights have no latent"):
        Settings().replace({"model.ra_mla": True, "model.init_from": "gpt2"})


def test_the_defconfig_is_the_vanilla_baseline_plus_ra_mla(kconf, tmp_path):
    from lib.config.load import load_settings

    vanilla = load_settings(
        make_config(tmp_path, (ROOT / "defconfigs" / "gpt2-vanilla-baseline").read_text(), kconf)
    )
    ra = load_settings(
        make_config(tmp_path, (ROOT / "defconfigs" / "gpt2-ra-mla-baseline").read_text(), kconf)
    )
    differ = {
        f"{section}.{k}"
        for section, values in ra.to_dict().items()
        for k, v in values.items()
        if vanilla.to_dict()[section][k] != v
    }
    assert differ == {"model.ra_mla", "runtime.compile"}  # the RA_MLA_* values are the defaults
    assert ra.model.ra_mla_latent_dim == 128 and ra.model.ra_mla_ra_alpha == 0.0


def test_an_ra_mla_run_prunes_its_new_layers_and_reports_sizes(tiny_config, tmp_path):
    from gpt2 import train

    out = tmp_path / "run"
    argv = ["--config", str(tiny_config), "--out-dir", str(out), "--max-iters", "6", "--eval-interval", "6"]
    argv += ["--ra-mla", "--ra-alpha", "0.5", "--set", "RA_MLA_LATENT_DIM=32"]
    argv += ["--optimizer", "adamw", "--pruning-method", "magnitude"]
    argv += ["--target-sparsity", "0.5", "--pruning-warmup", "2"]
    assert train.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    sizes = summary["attention"]
    assert sizes["kind"] == "ra_mla" and sizes["params"] < sizes["dense_params"]
    assert sizes["kv_cache_bytes_per_token"] * 8 == sizes["dense_kv_cache_bytes_per_token"]  # 32 of 2 x 128
    assert summary["sparsity"] == pytest.approx(0.5, abs=0.001)
    layers = json.loads((out / "sparsity.json").read_text())["layers"]
    assert any(name.endswith("attn.kv_down.weight") for name in layers)
    losses = [
        json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in x
    ]
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_torch_compile_gives_the_eager_loss_and_gradients():
    """The seeds hit an inductor bug with RA+MLA; here inductor (CPU) compiles it and agrees."""
    torch.manual_seed(0)
    eager = GPT(config(ra_mla_ra_alpha=0.5))
    model = GPT(config(ra_mla_ra_alpha=0.5))
    model.load_state_dict(eager.state_dict())
    idx = torch.randint(0, 50257, (2, 32))
    compiled_loss = torch.compile(model)(idx, idx)[1]
    compiled_loss.backward()
    eager_loss = eager(idx, idx)[1]
    eager_loss.backward()
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-5)
    for a, b in zip(model.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
