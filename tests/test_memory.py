"""The memory pre-flight: the estimate's parts, the refusal and its advice, host RAM."""

import re
from types import SimpleNamespace

import pytest
import torch

from gpt2 import memory
from gpt2.memory import GIB, check_gpu_fits, estimate, fit_advice, largest_batch
from gpt2.model import GPT, GPTConfig
from lib.train.settings import Settings

XL = Settings().replace(
    {"model.name": "gpt2-xl", "training.batch_size": 32, "training.gradient_accumulation": 4}
)


def test_parameter_counts_match_the_built_model():
    s = Settings().replace({"model.name": "gpt2-tiny", "pruning.method": "magnitude"})
    n, prunable = memory.parameter_counts(s)
    model = GPT(GPTConfig.from_name("gpt2-tiny"))
    assert n == model.num_params()
    assert (
        prunable
        == sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        - model.lm_head.weight.numel()
    )


def test_estimate_parts_follow_the_settings():
    base = Settings().replace({"model.name": "gpt2", "training.batch_size": 32})
    e = estimate(base, compiled=True)
    n = e.parts["weights"] // 4
    assert e.parts["optimizer"] == 8 * n and e.parts["pruning"] == 0
    # Gradients outlive a forward pass only when micro-batches accumulate.
    assert e.parts["gradients"] == 0
    assert (
        estimate(base.replace({"training.gradient_accumulation": 2}), compiled=True).parts["gradients"]
        == 4 * n
    )
    # Activations and logits grow with the micro-batch; the states do not.
    double = estimate(base, batch_size=2 * base.training.batch_size, compiled=True)
    assert abs(double.parts["activations"] - 2 * e.parts["activations"]) <= 1
    assert double.parts["optimizer"] == e.parts["optimizer"]
    movement = estimate(base.replace({"pruning.method": "movement"}), compiled=True)
    assert 0 < movement.parts["pruning"] < e.parts["weights"]  # bf16 scores of the Linear weights only
    assert estimate(base, world_size=2, compiled=True).parts["ddp_buckets"] == 4 * n
    ckpt = estimate(base.replace({"model.activation_checkpointing": True}), compiled=True)
    fused = estimate(base.replace({"model.fused_loss": True}), compiled=False)
    assert ckpt.parts["activations"] < e.parts["activations"] / 3
    assert fused.parts["logits"] < estimate(base, compiled=False).parts["logits"] / 5
    assert (
        abs(estimate(base, compiled=True, amp=False).parts["activations"] - 2 * e.parts["activations"]) <= 1
    )


def test_largest_batch_is_the_edge_of_the_estimate():
    capacity = 40 * GIB
    b = largest_batch(XL, capacity, compiled=True)
    assert estimate(XL, batch_size=b, compiled=True).total <= capacity
    assert estimate(XL, batch_size=b + 1, compiled=True).total > capacity


@pytest.fixture
def gpu_of(monkeypatch):
    def install(gib: float):
        props = SimpleNamespace(total_memory=int(gib * GIB))
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Test GPU")

    return install


def test_a_run_that_cannot_fit_is_refused_with_settings_that_fit(gpu_of):
    gpu_of(40)
    with pytest.raises(MemoryError) as e:
        check_gpu_fits(XL, torch.device("cuda"))
    message = str(e.value)
    assert "more than the 38.0 GiB usable on Test GPU" in message
    b, a = map(int, re.search(r"--batch-size (\d+) --gradient-accumulation (\d+)", message).groups())
    assert b * a >= 32 * 4  # the global batch is kept
    fixed = XL.replace({"training.batch_size": b, "training.gradient_accumulation": a})
    check_gpu_fits(fixed, torch.device("cuda"))  # the advice fits
    assert "--activation-checkpointing" in message and "--no-memory-check" in message


def test_weights_alone_too_big_suggest_a_smaller_model(gpu_of):
    gpu_of(8)
    tips = fit_advice(XL, 8 * GIB)
    assert any("a smaller model" in t for t in tips)
    gpu_of(200)
    assert check_gpu_fits(XL, torch.device("cuda")).total < 200 * GIB


def test_a_cpu_run_that_cannot_fit_in_host_memory_is_refused_with_settings_that_fit(monkeypatch):
    """A CPU run's memory is the host's: --batch-size 4096 on a laptop swapped until the OOM killer."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 64 * GIB)
    with pytest.raises(MemoryError) as e:
        check_gpu_fits(XL, cpu)
    message = str(e.value)
    assert "per process on the CPU, more than the 64.0 GiB of host memory available" in message
    b, a = map(int, re.search(r"--batch-size (\d+) --gradient-accumulation (\d+)", message).groups())
    check_gpu_fits(XL.replace({"training.batch_size": b, "training.gradient_accumulation": a}), cpu)
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 2000 * GIB)
    assert check_gpu_fits(XL, cpu).total > 64 * GIB  # measured, and it fits there
    monkeypatch.setattr(memory, "available_host_bytes", lambda: None)  # not Linux: no figure to refuse by
    assert check_gpu_fits(XL, cpu).total > 64 * GIB


def test_host_ram_warning(monkeypatch):
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 4 * GIB)
    need = memory.host_bytes_needed(XL, processes=2)
    assert need > 2 * 4 * 1.5e9
    assert "host RAM but only 4.0 GiB is available" in memory.host_ram_warning(need)
    assert memory.host_ram_warning(GIB) is None
    monkeypatch.setattr(memory, "available_host_bytes", lambda: None)
    assert memory.host_ram_warning(need) is None
