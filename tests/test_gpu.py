"""The paths only a CUDA GPU takes: `make test-gpu` on a GPU machine (skipped elsewhere).

Run before every GPU study. Covered: the compiled SPAM step against the eager one, the
radix-sort threshold against the CPU's kthvalue, the compiled per-step pruning kernels,
fp16 loss scaling with an injected overflow through the trainer's compiled step, the
automatic batch probe, FP8 matmuls (torchao) and NVML sampling, each in a real run of
gpt2/train.py where it can be.
"""

import json

import pytest
import torch

from gpt2 import train
from lib.measure.metrics import read_metrics
from lib.optim import OptimizerSettings
from lib.optim.spam import AdamWSPAM
from lib.pruning.pruner import foreach_mask_gradients_, lowest_k_mask, mask_gradients_

from .conftest import make_config
from .test_amp import CASES, check_overflowed_step_changes_nothing, fp16_trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make test-gpu on one)"),
]
CUDA = torch.device("cuda")


def gpu_config(tmp_path, kconf, data_dir, extra: str = "") -> object:
    """A tiny GPT-2 on Shakespeare on the GPU, compiled, 30 steps of 8 x 64 tokens."""
    return make_config(
        tmp_path,
        f"""CONFIG_GPT2_BLOCK_SIZE=64
{"" if "BATCH_MODE_AUTO" in extra else "CONFIG_BATCH_SIZE=8"}
CONFIG_GPT2_MAX_ITERS=30
CONFIG_LEARNING_RATE="2e-3"
CONFIG_GPT2_WARMUP_STEPS=5
CONFIG_GPT2_MIN_LR="2e-4"
CONFIG_GPT2_EVAL_INTERVAL=15
CONFIG_GPT2_EVAL_SAMPLES=4
CONFIG_GPT2_LOG_INTERVAL=5
CONFIG_GPT2_GENERATION_MAX_TOKENS=0
CONFIG_DEVICE="cuda"
CONFIG_DATA_DIR="{data_dir}"
CONFIG_OUTPUT_DIR="{tmp_path / "runs"}"
{extra}""",
        kconf,
    )


def run(config, out, *flags) -> dict:
    assert train.main(["--config", str(config), "--out-dir", str(out), *flags]) == 0
    return json.loads((out / "summary.json").read_text())


def test_compiled_spam_step_matches_the_eager_step_on_the_gpu():
    """Spikes, clipping past the grace period, a reset and its warm-up, in 30 steps."""
    cfg = OptimizerSettings(
        spam_theta=5.0,
        spam_clip_grace_steps=3,
        spam_spike_threshold=0.5,
        spam_interval=9,
        spam_warmup_steps=4,
    )
    nets, opts = [], []
    for compiled in (True, False):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 8)).to(CUDA)
        opts.append(AdamWSPAM(net.parameters(), settings=cfg, compile=compiled, lr=1e-2, fused=True))
        nets.append(net)
    assert opts[0].one_pass and not opts[1].one_pass
    torch.manual_seed(1)
    for step in range(30):
        x = torch.randn(64, 64, device=CUDA) * (10.0 if step in (14, 21) else 1.0)
        for net, opt in zip(nets, opts, strict=True):
            (net(x) ** 2).mean().backward()
            opt.observe_grad_norm(torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0))
            opt.step()
            opt.zero_grad()
    fused, eager = opts[0].log_stats(), opts[1].log_stats()
    assert fused["spam_spikes"] == eager["spam_spikes"] >= 1
    # the last step's clipped entries: the same but for the few that rounding moves across their bound
    assert fused["spam_clipped"] == pytest.approx(eager["spam_clipped"], rel=1e-2, abs=3)
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        # 30 steps of rounding drift between two kernel orders (weights ~0.05, updates ~1e-2)
        torch.testing.assert_close(a, b, rtol=1e-3, atol=5e-5)


@pytest.mark.parametrize("n, k", [(1_000_003, 500_001), (4096, 4096), (10_000, 1)])
def test_the_cuda_threshold_selects_what_the_cpu_selects(n, k):
    torch.manual_seed(0)
    scores = torch.randn(n).round(decimals=2)  # many ties at the threshold
    scores[: n // 10] = 0.0
    cpu = lowest_k_mask(scores, k)
    gpu = lowest_k_mask(scores.to(CUDA), k)
    assert int(gpu.sum()) == k and torch.equal(gpu.cpu(), cpu)


def test_the_compiled_gradient_mask_zeroes_what_the_multi_tensor_one_does():
    torch.manual_seed(0)
    weights = [torch.randn(256, 64, device=CUDA).relu() for _ in range(3)]  # half exactly zero
    grads = [torch.randn_like(w) for w in weights]
    expected = [g.clone() for g in grads]
    foreach_mask_gradients_(expected, weights)
    torch.compile(mask_gradients_, dynamic=False)(grads, weights)
    for g, e in zip(grads, expected, strict=True):
        assert torch.equal(g, e)


@pytest.mark.parametrize("case", ["adamwspam", "movement", "state-spam-base"])
def test_an_injected_fp16_overflow_changes_nothing_in_the_compiled_gpu_step(case, tmp_path, data_dir):
    trainer = fp16_trainer(tmp_path, data_dir, *CASES[case][:3], "compiled", device="cuda")
    if trainer.optimizer.__class__ is AdamWSPAM:
        assert trainer.optimizer.one_pass  # the compiled one-pass step
    check_overflowed_step_changes_nothing(trainer)


def test_an_fp16_run_of_spam_and_movement_trains_and_logs_its_loss_scale(tmp_path, kconf, data_dir):
    config = gpu_config(
        tmp_path,
        kconf,
        data_dir,
        "CONFIG_PRUNING_MODE_SINGLE=y\nCONFIG_PRUNING_SELECT_MOVEMENT=y\nCONFIG_PRUNING_WARMUP=5\nCONFIG_PRUNING_FREQUENCY=5\n",
    )
    out = tmp_path / "fp16"
    summary = run(config, out, "--dtype", "fp16")
    assert summary["dtype"] == "float16" and summary["compiled"] and summary["final_val_loss"] < 9.0
    records = read_metrics(out / "metrics.jsonl")
    assert [r["sparsity"] for r in records if r["kind"] == "eval"][-1] == pytest.approx(0.5, abs=1e-3)
    logged = [r for r in records if r["kind"] == "train"]
    assert all(r["loss_scale"] > 0 and r["skipped_steps"] >= 0 for r in logged)


def test_auto_batch_sizing_probes_the_gpu_and_trains(tmp_path, kconf, data_dir):
    config = gpu_config(
        tmp_path, kconf, data_dir, "CONFIG_GPT2_BATCH_MODE_AUTO=y\nCONFIG_GPT2_TARGET_BATCH=64\n"
    )
    summary = run(config, tmp_path / "auto")
    sizing = summary["batch_sizing"]
    assert sizing["batch_size"] * sizing["gradient_accumulation"] == 64 and sizing["probes"][-1]["fits"]


def test_fp8_head_trains_within_reach_of_bf16(tmp_path, kconf, data_dir):
    pytest.importorskip("torchao", reason="FP8 needs torchao (pip install -e '.[fp8]')")
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 matmuls need compute capability 8.9+ (Ada, Hopper)")
    config = gpu_config(tmp_path, kconf, data_dir)
    bf16 = run(config, tmp_path / "bf16", "--optimizer", "adamw")
    fp8 = run(config, tmp_path / "fp8", "--optimizer", "adamw", "--fp8", "--fp8-layers", "head")
    assert abs(fp8["final_val_loss"] - bf16["final_val_loss"]) < 0.05 * bf16["final_val_loss"]


def test_nvml_samples_power_and_utilisation_during_a_run(tmp_path, kconf, data_dir):
    pytest.importorskip("pynvml", reason="GPU monitoring needs nvidia-ml-py")
    config = gpu_config(tmp_path, kconf, data_dir, "CONFIG_GPT2_GPU_MONITOR_INTERVAL=1\n")
    out = tmp_path / "monitored"
    summary = run(config, out, "--optimizer", "adamw", "--max-iters", "800", "--eval-interval", "800")
    gpu = summary["gpu"]
    assert gpu["source"] == "nvml" and gpu["samples"] >= 2 and gpu["mean_power_watts"] > 0
    assert (out / "gpu.jsonl").is_file() and (out / "gpu.png").is_file()


@pytest.mark.parametrize("kind", ["dense", "ra_mla"])
def test_the_compiled_decoder_generates_what_the_eager_path_does(kind):
    """The CUDA-graph decode step (gpt2/decode.py) against GPT.generate and the full-window path,
    greedy in fp32 (so no near-tie can flip a token), past the block too."""
    from gpt2.decode import Decoder
    from gpt2.model import GPT2_VOCAB_SIZE

    from .test_decode import model_of

    model = model_of(kind).cuda()
    idx = torch.randint(
        0, GPT2_VOCAB_SIZE, (4, 6), device="cuda", generator=torch.Generator("cuda").manual_seed(0)
    )
    decoder = Decoder(model, batch=4, compile=True)
    want = model.generate(idx, 30, temperature=0.0, cache=False)
    assert torch.equal(model.generate(idx, 30, temperature=0.0), want)
    for _ in range(2):  # the second call replays the recorded graph
        assert torch.equal(decoder.generate(idx, 30, temperature=0.0), want)
    short = idx[:, :4]  # another prompt length: the same compiled prompt read (dynamic shapes)
    assert torch.equal(decoder.generate(short, 12, 0.0), model.generate(short, 12, 0.0, cache=False))
    torch.manual_seed(5)  # sampled: the graph draws from the default generator as eager calls do
    want = model.generate(idx, 30, temperature=1.0, top_k=50)
    for _ in range(2):
        torch.manual_seed(5)
        assert torch.equal(decoder.generate(idx, 30, temperature=1.0, top_k=50), want)
    small = Decoder(model, batch=4, size=12, compile=True)  # past its cache the window slides
    assert torch.equal(small.generate(idx, 30, temperature=0.0), model.generate(idx, 30, 0.0, cache=False))
    bf16 = Decoder(model, batch=4, dtype=torch.bfloat16, compile=True)
    timings: list[float] = []
    assert bf16.generate(idx, 30, temperature=1.0, top_k=50, timings=timings).shape == (4, 36)
    assert len(timings) == 30 and min(timings) > 0
