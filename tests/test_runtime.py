"""Speed knobs: the attention kernel choice, the compile mode, FP8's refusal where it cannot run."""

import os

import pytest
import torch

from gpt2.model import GPT, GPTConfig
from lib.convert.fp8 import convert_to_fp8, fp8_filter, fp8_unavailable
from lib.errors import Refusal
from lib.runtime.device import compile_model, select_attention_backend, use_expandable_segments
from lib.train.settings import Settings, SettingsError


@pytest.fixture
def restore_sdpa():
    yield
    select_attention_backend("auto")


@pytest.mark.parametrize("name", ["flash", "cudnn", "efficient"])
def test_an_attention_choice_leaves_that_kernel_and_the_fallback(name, restore_sdpa):
    select_attention_backend(name)
    kernel = {"efficient": "mem_efficient"}.get(name, name)
    enabled = {
        k
        for k in ("flash", "cudnn", "mem_efficient", "math")
        if getattr(torch.backends.cuda, f"{k}_sdp_enabled")()
    }
    assert enabled == {kernel, "math"}
    select_attention_backend("auto")
    assert all(getattr(torch.backends.cuda, f"{k}_sdp_enabled")() for k in ("flash", "mem_efficient", "math"))


def test_a_model_gives_the_same_loss_whatever_attention_kernel_is_chosen(restore_sdpa):
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("gpt2-tiny", block_size=32)).eval()
    idx = torch.randint(0, 50257, (2, 32))
    losses = []
    for name in ("auto", "flash", "math"):
        select_attention_backend(name)
        losses.append(model(idx, idx)[1])
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(losses[0], losses[2])


def test_compilation_applies_on_cuda_only():
    model = torch.nn.Linear(2, 2)
    assert compile_model(model, torch.device("cpu"), True, "max-autotune") is model


def test_unknown_speed_settings_are_refused_with_the_symbol():
    with pytest.raises(SettingsError, match="CONFIG_GPT2_COMPILE_MODE.*--compile-mode"):
        Settings().replace({"runtime.compile_mode": "fastest"})
    with pytest.raises(SettingsError, match="CONFIG_GPT2_ATTENTION_BACKEND"):
        Settings().replace({"runtime.attention_backend": "xformers"})
    with pytest.raises(SettingsError, match="CONFIG_GPT2_FP8_RECIPE"):
        Settings().replace({"runtime.fp8_recipe": "blockwise"})
    with pytest.raises(SettingsError, match="one of all, blocks, mlp, head.*CONFIG_GPT2_FP8_LAYERS"):
        Settings().replace({"runtime.fp8_layers": "attention"})


@pytest.mark.parametrize(
    "layers, expected",
    [
        ("all", {"lm_head", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}),
        ("blocks", {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}),
        ("mlp", {"mlp.c_fc", "mlp.c_proj"}),
        ("head", {"lm_head"}),
    ],
)
def test_the_fp8_layer_choice_picks_those_linear_layers(layers, expected):
    model = GPT(GPTConfig.from_name("gpt2-tiny", block_size=32))
    wanted = fp8_filter(layers)
    picked = {name for name, m in model.named_modules() if wanted(m, name)}
    assert {".".join(name.split(".")[-2:]) for name in picked} == expected
    per_block = {"all": 4, "blocks": 4, "mlp": 2, "head": 0}[layers]
    assert len(picked) == ("lm_head" in expected) + model.config.n_layer * per_block
    assert not wanted(torch.nn.Linear(10, 16), "h.0.mlp.c_fc")  # FP8 GEMMs need multiples of 16


def test_fp8_is_refused_where_it_cannot_run_and_the_model_is_untouched():
    model = GPT(GPTConfig.from_name("gpt2-tiny", block_size=32))
    assert "NVIDIA GPU" in fp8_unavailable(torch.device("cpu"))
    with pytest.raises(Refusal, match=r"GPT2_FP8=y \(--fp8\).*Say N to GPT2_FP8"):
        convert_to_fp8(model, "tensorwise", torch.device("cpu"))
    assert all(type(m).__name__ != "Float8Linear" for m in model.modules())


def test_a_cpu_run_asked_for_fp8_stops_with_the_reason(tiny_config, tmp_path, capsys):
    from gpt2 import train

    assert train.main(["--config", str(tiny_config), "--out-dir", str(tmp_path / "r"), "--fp8"]) == 2
    assert "FP8 matrix multiplies need an NVIDIA GPU" in (tmp_path / "r" / "output.log").read_text()


def test_the_allocator_setting_is_a_default_not_an_override(monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    use_expandable_segments()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    use_expandable_segments()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"
