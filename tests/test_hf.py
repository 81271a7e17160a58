"""GPT-2 weights in and out in the HF format: transformers' own model is the reference."""

import json

import pytest
import torch

from gpt2.hf import export_hf, import_hf
from gpt2.model import SIZES
from lib.errors import Refusal

transformers = pytest.importorskip("transformers")


def hf_gpt2(folder, n_layer=2, n_head=4, n_embd=32, positions=64, seed=0):
    """A small random GPT2LMHeadModel saved with save_pretrained (config.json + model.safetensors)."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=50257, n_positions=positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # non-trivial biases and norms, so a transposition mistake shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return model


def logits_of(ours, theirs, idx):
    with torch.no_grad():
        a, _ = ours.eval()(idx, all_positions=True)
        b = theirs.eval()(idx).logits
    return a, b


def test_import_then_export_reproduces_transformers_logits(tmp_path):
    reference = hf_gpt2(tmp_path / "hf")
    model, record = import_hf(str(tmp_path / "hf"))
    idx = torch.randint(0, 50257, (2, 64))
    ours, theirs = logits_of(model, reference, idx)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert record["sparsity"] == 0.0
    export_hf(model, tmp_path / "out")
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out")
    _, again = logits_of(model, reloaded, idx)
    torch.testing.assert_close(again, theirs, rtol=1e-5, atol=1e-5)
    # a shorter context keeps the first positions
    short, _ = import_hf(str(tmp_path / "hf"), block_size=16)
    torch.testing.assert_close(
        logits_of(short, reference, idx[:, :16])[0], theirs[:, :16], rtol=1e-5, atol=1e-5
    )


def test_a_pruned_export_keeps_its_zeros_and_reports_them(tmp_path):
    hf_gpt2(tmp_path / "hf")
    model, _ = import_hf(str(tmp_path / "hf"))
    with torch.no_grad():
        for block in model.transformer.h:
            w = block.mlp.c_fc.weight
            w.masked_fill_(w.abs() < w.abs().median(), 0.0)
    export_hf(model, tmp_path / "pruned")
    loaded, record = import_hf(str(tmp_path / "pruned"))
    zeros = sum(int((b.mlp.c_fc.weight == 0).sum()) for b in loaded.transformer.h)
    assert zeros == sum(int((b.mlp.c_fc.weight == 0).sum()) for b in model.transformer.h) > 0
    assert record["sparsity"] == pytest.approx(
        1 / 6, abs=0.01
    )  # half of c_fc, 4/12 of a block's Linear weights
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "pruned")
    assert int((reloaded.transformer.h[0].mlp.c_fc.weight == 0).sum()) > 0


def test_bad_sources_are_refused_with_what_a_folder_needs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(Refusal, match="lacks config.json, model.safetensors"):
        import_hf(str(tmp_path / "empty"))
    hf_gpt2(tmp_path / "hf", positions=32)
    with pytest.raises(Refusal, match="exceeds the pretrained model's 32 positions"):
        import_hf(str(tmp_path / "hf"), block_size=64)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(Refusal, match="not gpt2"):
        import_hf(str(tmp_path / "hf"))


def test_training_starts_from_pretrained_weights_and_exports_back(tiny_config, tmp_path, capsys):
    from gpt2 import train
    from scripts import export_hf as export_script

    n_layer, n_head, n_embd = SIZES["gpt2-tiny"]
    reference = hf_gpt2(tmp_path / "hf", n_layer=n_layer, n_head=n_head, n_embd=n_embd, positions=64)
    out = tmp_path / "run"
    argv = ["--config", str(tiny_config), "--out-dir", str(out), "--max-iters", "3", "--eval-interval", "3"]
    assert train.main([*argv, "--init-from", str(tmp_path / "hf")]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["init_from"]["source"] == str(tmp_path / "hf")
    assert summary["num_params"] == reference.num_parameters() - (64 - 32) * n_embd  # a 32-token context
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["kind"] == "eval" and first["val_loss"] < 11.5  # the HF model's loss, not a padded one's
    assert export_script.main([str(out), "--out", str(tmp_path / "exported")]) == 0
    exported = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "exported")
    assert exported.num_parameters() == summary["num_params"]
    assert "GPT2LMHeadModel.from_pretrained" in capsys.readouterr().out
    bad = tmp_path / "bad"
    hf_gpt2(bad, n_layer=2, n_head=4, n_embd=32)
    assert train.main([*argv[:3], str(tmp_path / "run2"), *argv[4:], "--init-from", str(bad)]) == 2
