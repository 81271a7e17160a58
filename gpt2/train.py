"""Train GPT-2 as config.py describes, with command-line overrides.

    python -m gpt2.train                                  # the current configuration
    python -m gpt2.train --max-iters 200 --device cpu     # overrides win over config.py
    python -m gpt2.train --resume                         # continue the latest run of this name
    python -m gpt2.train --resume runs/gpt2_adamw_none-20261123-101500
    torchrun --standalone --nproc_per_node=2 -m gpt2.train   # one run over two GPUs (DDP)

Writes runs/<run>/: config.py and .config, settings.json, environment.json,
metrics.jsonl, output.log, ckpt.pt, best.pt, summary.json, loss.png, sample.txt,
and on GPUs gpu.jsonl and gpu.png (lib/measure/gpu_monitor.py).
"""

import argparse
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from gpt2.batch import choose_batch, make_probe, refuse_manual_values, resumed_batch
from gpt2.hf import import_hf
from gpt2.memory import check_gpu_fits, host_bytes_needed, host_ram_warning
from gpt2.model import GPT, GPTConfig, attention_sizes
from gpt2.sample import sample
from lib.config.cli import add_override_flags, overrides_from_args
from lib.config.settings import Settings, SettingsError, load_settings, settle
from lib.convert.fp8 import convert_to_fp8
from lib.convert.lora import apply_lora
from lib.errors import Refusal, out_of_memory
from lib.io import atomic_write_json, atomic_write_text
from lib.measure.after_training import after_training
from lib.measure.gpu_monitor import GPU_FILE, GPUMonitor, plot_gpu
from lib.measure.metrics import bookkeeping, peak_memory_bytes
from lib.measure.records import copy_config, environment, plot_losses, setup_logging
from lib.measure.summary import FINISHED, RunSummary
from lib.measure.tracking import start_tracker
from lib.optim.build import build_optimizer
from lib.pruning.build import build_pruner
from lib.train import distributed
from lib.train.checkpoint import CHECKPOINT_FILE, CheckpointError, load_checkpoint
from lib.train.data import TokenData
from lib.train.distributed import Dist, broadcast, wrap_ddp
from lib.train.loop import Trainer, planned_iters
from lib.train.run_dir import choose_run_dir
from lib.train.runtime import amp_dtype, compile_model, configure, use_expandable_segments

log = logging.getLogger("train")
EXIT_CODES = {"completed": 0, "time_budget": 0, "interrupted": 130, "diverged": 3, "out_of_memory": 2}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="config.py", help="generated configuration (default: config.py)")
    p.add_argument("--out-dir", help="the run folder (default: OUTPUT_DIR/<run-name>-<time>)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        metavar="RUN_DIR",
        help="continue a run from its checkpoint (no value: --out-dir, else the latest of this name)",
    )
    add_override_flags(p)
    return p.parse_args(argv)


def check_world(s: Settings, dist: Dist) -> None:
    """The step's micro-batches must share out evenly over the ranks."""
    accumulation = s.training.gradient_accumulation
    if accumulation % dist.world_size:
        raise SettingsError(
            f"GPT2_GRADIENT_ACCUMULATION={accumulation} does not divide over {dist.world_size} processes: "
            "each step's micro-batches are shared out over the ranks, so the global batch stays "
            f"batch x accumulation x block. Use a multiple of {dist.world_size} "
            f"(--gradient-accumulation {dist.world_size * max(1, accumulation // dist.world_size)}) "
            "or fewer processes."
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_expandable_segments()  # before anything touches the GPU
    try:
        dist = Dist.from_env()
        overrides = overrides_from_args(args)
        s, scaling = settle(load_settings(args.config), overrides)
        if s.training.batch_mode == "auto":
            refuse_manual_values(overrides)
        check_world(s, dist)
        device = distributed.start(dist, s.runtime.device)
    except Refusal as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return train(args, s, scaling, dist, device)
    finally:
        distributed.stop(dist)


def prepare_run_dir(args: argparse.Namespace, s: Settings, dist: Dist) -> tuple[Path, dict | None]:
    """Rank 0 chooses (and makes) the run folder; every rank gets it and the checkpoint to resume."""
    chosen = error = None
    if dist.is_main:
        try:
            run_dir = choose_run_dir(s, args.resume, args.out_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            chosen = str(run_dir)
        except CheckpointError as e:
            error = str(e)
        except OSError as e:
            error = f"cannot make the run folder: {e}; choose another --out-dir or OUTPUT_DIR"
    chosen, error = broadcast(dist, (chosen, error))
    if error is not None:
        raise CheckpointError(error)
    run_dir = Path(chosen)
    return run_dir, None if args.resume is None else load_checkpoint(run_dir / CHECKPOINT_FILE)


def preflight(s: Settings, device: torch.device, dist: Dist, resume_dir: Path | None) -> dict | None:
    """Refuse a run that will not fit on the GPU (GPT2_MEMORY_CHECK); warn when host RAM is short."""
    if not s.runtime.memory_check:
        return None
    checkpoint_bytes = (resume_dir / CHECKPOINT_FILE).stat().st_size if resume_dir is not None else 0
    procs = min(dist.world_size, int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size)))
    warning = host_ram_warning(host_bytes_needed(s, checkpoint_bytes, procs))
    if warning and dist.local_rank == 0:
        log.warning("warning: %s", warning)
    est = check_gpu_fits(s, device, dist.world_size)
    log.info("memory estimate: %s per %s", est.describe(), "GPU" if device.type == "cuda" else "process")
    return {"estimated_peak_bytes": est.total, "estimate_parts": est.parts}


def build_model(s: Settings) -> tuple[GPT, dict | None]:
    """The GPT the settings describe: random, or GPT2_INIT_FROM's pretrained weights (same shape)."""
    if not s.model.init_from:
        return GPT(GPTConfig.from_settings(s.model)), None
    model, record = import_hf(s.model.init_from, s.model.block_size)
    want, got = GPTConfig.from_settings(s.model), model.config
    if (want.n_layer, want.n_head, want.n_embd) != (got.n_layer, got.n_head, got.n_embd):
        raise Refusal(
            f"GPT2_INIT_FROM={s.model.init_from!r} holds a {got.n_layer}-layer, {got.n_embd}-wide model with "
            f"{got.n_head} heads, but GPT2_MODEL_NAME is {s.model.name!r}; choose the matching size"
        )
    return model, record


@dataclass
class Run:
    """Everything set up for one training run, and what the summary records about the set-up."""

    s: Settings
    run_dir: Path
    dist: Dist
    device: torch.device
    model: GPT
    optimizer: torch.optim.Optimizer
    data: TokenData
    pruner: object | None
    tracker: object | None
    trainer: Trainer
    amp: torch.dtype | None
    compiled: bool
    record: dict  # memory, scaling, batch sizing, init and LoRA: copied into summary.json


def train(
    args: argparse.Namespace, s: Settings, scaling: dict | None, dist: Dist, device: torch.device
) -> int:
    try:
        run_dir, resume_state = prepare_run_dir(args, s, dist)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    setup_logging(run_dir, dist)
    try:
        try:
            run = set_up(args, s, scaling, dist, device, run_dir, resume_state)
        except torch.OutOfMemoryError as e:
            raise out_of_memory(f"on {device} while setting the run up", e) from None
    except Refusal as e:
        log.error("error: %s", e)
        return 2
    del resume_state
    if args.resume is not None and (why := nothing_to_resume(run)) is not None:
        if (run_dir / "summary.json").is_file():
            log.info("%s", why)
            return 0
        # It stopped between its last checkpoint and its summary: evaluate once and write that.
        log.info("%s finished without a summary.json; evaluating its final weights to write one", run_dir)
        run.trainer.last_eval = run.trainer.evaluate()
        done = "completed" if run.trainer.state.iter_num >= run.trainer.total_iters else "time_budget"
        if dist.is_main:
            finish(run, write_summary(run, {"status": done, **run.trainer.throughput()}, None, 0.0))
        return 0
    started = time.time()
    gpu_file = run_dir / (GPU_FILE if dist.is_main else f"gpu_rank{dist.rank}.jsonl")
    monitor = GPUMonitor.for_device(gpu_file, device, run.s.monitor).start()
    try:
        with logging_redirect_tqdm():
            outcome = run.trainer.fit()
    except (
        torch.OutOfMemoryError
    ) as e:  # the results so far are kept: metrics, the last checkpoint, a summary
        at = f"on {device} while training, at iter {run.trainer.state.iter_num}"
        log.error("error: %s", out_of_memory(at, e))
        outcome = {"status": "out_of_memory", **run.trainer.throughput()}
    finally:
        gpu = monitor.stop()
    if not dist.is_main:
        return EXIT_CODES[outcome["status"]]
    summary = write_summary(run, outcome, gpu, time.time() - started)
    plot_gpu(gpu_file, run_dir / "gpu.png", f"{run_dir.name}: GPU")
    finish(run, summary)
    return EXIT_CODES[outcome["status"]]


def set_up(
    args: argparse.Namespace,
    s: Settings,
    scaling: dict | None,
    dist: Dist,
    device: torch.device,
    run_dir: Path,
    resume_state: dict | None,
) -> Run:
    """Model, data, optimizer, pruner and trainer for the run, restored when resuming; or a Refusal."""
    if s.runtime.nproc_per_node != dist.world_size:
        log.warning(
            "GPT2_NPROC_PER_NODE is %d but this run has %d process(es): start it with `make` or "
            "`python -m scripts.launch` (torchrun) to use %d",
            s.runtime.nproc_per_node,
            dist.world_size,
            s.runtime.nproc_per_node,
        )
    configure(device, s.runtime.tf32, s.runtime.seed, s.runtime.attention_backend)
    if dist.is_main:
        if resume_state is None:
            # A folder without a checkpoint holds at most an attempt that died before its first one.
            for stale in ("metrics.jsonl", "summary.json"):
                (run_dir / stale).unlink(missing_ok=True)
            copy_config(Path(args.config), run_dir)
        atomic_write_json(
            run_dir / "environment.json", {**environment(device), "world_size": dist.world_size}
        )

    sizing = None  # GPT2_BATCH_MODE=auto: the micro-batch is chosen once the model exists
    if s.training.batch_mode == "auto" and resume_state is not None:
        s, sizing = resumed_batch(s, resume_state["settings"])
    resumed_dir = run_dir if resume_state is not None else None
    choose_later = s.training.batch_mode == "auto" and sizing is None
    memory = None if choose_later else preflight(s, device, dist, resumed_dir)
    data = TokenData(
        s.data.token_dir, s.data.dataset, s.data.data_dir, s.runtime.seed, check=s.data.token_check()
    )
    data.check_block_size(s.model.block_size)
    model, init = build_model(s)
    model = model.to(device)
    if s.runtime.fp8:
        convert_to_fp8(model, s.runtime.fp8_recipe, device, s.runtime.fp8_layers)
    lora = apply_lora(model, s.lora) if s.lora.enabled else None
    if dist.enabled:  # the same initial weights everywhere (DDP checks), then dropout differs per rank
        torch.manual_seed(s.runtime.seed + 7919 * dist.rank)
    optimizer = build_optimizer(model, s.optimizer, s.training.learning_rate, compile=s.runtime.compile)
    amp = amp_dtype(device, s.runtime.mixed_precision, s.runtime.amp_dtype)
    compiled = s.runtime.compile and device.type == "cuda"
    train_model = compile_model(wrap_ddp(model, dist, device), device, compiled, s.runtime.compile_mode)
    if s.training.batch_mode == "auto" and sizing is None:
        probe = make_probe(train_model, model, device, amp, s.model.block_size, dist)
        s, sizing = choose_batch(s, device, dist.world_size, probe)
        memory = preflight(s, device, dist, resumed_dir)
        log.info(
            "batch sizing: GPT2_TARGET_BATCH %d = micro-batch %d x accumulation %d (%s)",
            s.training.target_batch,
            s.training.batch_size,
            s.training.gradient_accumulation,
            sizing["rule"],
        )
    if dist.is_main and resume_state is None:
        atomic_write_json(run_dir / "settings.json", s.to_dict())
    total_iters = planned_iters(s, data.num_tokens("train"))
    pruner = build_pruner(model, optimizer, s.pruning, total_iters)
    tracker = start_tracker(s.tracking, run_dir, run_dir.name, s.to_dict()) if dist.is_main else None
    trainer = Trainer(s, run_dir, device, model, train_model, optimizer, data, amp, pruner, tracker, dist)
    if scaling is not None:
        log.info(
            "bitter2 scaling: %s x%.2f, %s -> %s",
            scaling["setting"],
            scaling["factor"],
            scaling["from"],
            scaling["to"],
        )
    if resume_state is not None:
        trainer.restore(resume_state)

    log.info(
        "run %s | %s, %.2fM parameters | %s%s %s%s | batch %d x %d accumulation x %d tokens = %s tokens/step"
        " | %d steps on %s (%s train tokens)",
        run_dir,
        s.model.name,
        model.num_params() / 1e6,
        f"{dist.world_size} x " if dist.enabled else "",
        device.type if dist.enabled else device,
        "fp32" if amp is None else str(amp).removeprefix("torch."),
        " compiled" if compiled else "",
        s.training.batch_size,
        s.training.gradient_accumulation,
        s.model.block_size,
        f"{trainer.tokens_per_iter:,}",
        trainer.total_iters,
        s.data.dataset,
        f"{data.num_tokens('train'):,}",
    )
    record = {
        "memory_estimate": memory,
        "scaling": scaling,
        "batch_sizing": sizing,
        "init_from": init,
        "lora": lora,
    }
    return Run(
        s, run_dir, dist, device, model, optimizer, data, pruner, tracker, trainer, amp, compiled, record
    )


def nothing_to_resume(run: Run) -> str | None:
    """Why a resumed run has no step left to take (its results stay as they are), or None."""
    st, total = run.trainer.state, run.trainer.total_iters
    budget = run.s.training.max_time_seconds
    if st.iter_num >= total:
        return (
            f"nothing to resume: {run.run_dir} finished at iter {st.iter_num} of {total}; its results "
            "stay as they are. To train it longer, resume with a larger --max-iters (GPT2_MAX_ITERS)."
        )
    if budget and st.train_seconds >= budget:
        return (
            f"nothing to resume: {run.run_dir} has used its time budget (GPT2_MAX_TIME = {budget} s, "
            f"{st.train_seconds:.0f} s trained, stopped at iter {st.iter_num} of {total}); its results stay "
            "as they are. To train it longer, resume with a larger --max-time (seconds)."
        )
    return None


def write_summary(run: Run, outcome: dict, gpu: dict | None, wall_seconds: float) -> RunSummary:
    """summary.json (lib/measure/summary.RunSummary): the outcome, the final metrics, the costs and
    the set-up of the run."""
    s, trainer, model = run.s, run.trainer, run.model
    final = trainer.last_eval or {}
    finished = outcome["status"] in FINISHED
    measured = (
        after_training(model, run.device, run.amp, s) if finished else {"inference": None, "lm_eval": None}
    )
    pruned, adamwprune = run.pruner is not None, s.optimizer.name == "adamwprune"
    summary = RunSummary(
        run=run.run_dir.name,
        **outcome,
        iters=trainer.state.iter_num,
        planned_iters=trainer.total_iters,
        tokens=trainer.state.iter_num * trainer.tokens_per_iter,
        train_seconds=trainer.state.train_seconds,
        wall_seconds_this_session=wall_seconds,
        final_train_loss=final.get("train_loss"),
        final_val_loss=final.get("val_loss"),
        final_val_ppl=final.get("val_ppl"),
        model_sparsity=final.get("model_sparsity"),
        best_val_loss=trainer.state.best_val_loss if math.isfinite(trainer.state.best_val_loss) else None,
        best_checkpoint="best.pt" if (run.run_dir / "best.pt").is_file() else None,
        peak_memory_bytes=max(trainer.state.peak_memory_bytes, peak_memory_bytes(run.device)),
        memory_estimate=run.record["memory_estimate"],
        **bookkeeping(model, run.optimizer, run.pruner),
        scaling=run.record["scaling"],
        num_params=model.num_params(),
        attention=attention_sizes(model.config),
        model=s.model.name,
        dataset=s.data.dataset,
        data=run.data.meta,
        optimizer=s.optimizer.name,
        pruning_method=s.pruning.method,
        adamwprune_variant=s.pruning.adamwprune_variant if adamwprune else None,
        adamwprune_base=s.optimizer.adamwprune_base if adamwprune else None,
        target_sparsity=s.pruning.target_sparsity if pruned else None,
        seed=s.runtime.seed,
        device=str(run.device),
        world_size=run.dist.world_size,
        global_batch=s.training.batch_size * s.training.gradient_accumulation,
        dtype="float32" if run.amp is None else str(run.amp).removeprefix("torch."),
        compiled=run.compiled,
        batch_sizing=run.record["batch_sizing"],
        init_from=run.record["init_from"],
        lora=run.record["lora"],
        gpu=gpu,
        **measured,
    )
    summary.write(run.run_dir / "summary.json")
    return summary


def finish(run: Run, summary: RunSummary) -> None:
    """After the summary: tracker, sparsity per layer, the loss plot, a sample, the closing line."""
    s, run_dir = run.s, run.run_dir
    if run.tracker is not None:
        run.tracker.finish()
    if run.pruner is not None:
        atomic_write_json(run_dir / "sparsity.json", run.pruner.sparsity())
    plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png", f"{run_dir.name} ({s.model.name})")
    if summary.finished and s.generation.max_tokens > 0:
        try:
            text = sample(run.model, s, run.device)
        except OSError as e:  # tiktoken could not fetch the GPT-2 BPE files: the results stay
            log.error(
                "error: no sample: the GPT-2 tokenizer files could not be loaded (%s). Offline, point "
                "TIKTOKEN_CACHE_DIR at a copy of them, or set GPT2_GENERATION_MAX_TOKENS=0",
                e.__class__.__name__,
            )
        else:
            atomic_write_text(run_dir / "sample.txt", text)
            log.info("sample:\n%s", text)
    log.info(
        "done (%s) | val loss %s | val ppl %s | %s",
        summary.status,
        f"{summary.final_val_loss:.4f}" if summary.final_val_loss is not None else "n/a",
        f"{summary.final_val_ppl:.2f}" if summary.final_val_ppl is not None else "n/a",
        run_dir,
    )


if __name__ == "__main__":
    sys.exit(main())
