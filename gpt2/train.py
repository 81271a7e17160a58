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

if __name__ == "__main__" and not __package__:  # `python3 gpt2/train.py` or `cd gpt2 && python3 train.py`
    import _script  # gpt2/_script.py, beside this file

    _script.rerun_as_module("gpt2.train")


import argparse
import logging
import sys
from pathlib import Path

import torch

from gpt2.batch import choose_batch, make_probe, refuse_manual_values, resumed_batch
from gpt2.hf import build_model
from gpt2.memory import preflight
from gpt2.model import attention_sizes
from gpt2.sample import write_sample
from lib.adamwprune.build import build_optimizer, build_pruner
from lib.config.cli import add_override_flags, overrides_from_args
from lib.config.load import load_settings, read_config_py
from lib.convert.fp8 import convert_to_fp8
from lib.convert.lora import apply_lora
from lib.errors import Refusal, out_of_memory
from lib.io import WriteError, atomic_write_json
from lib.measure.records import setup_logging, start_records
from lib.measure.tracking import start_tracker
from lib.runtime import distributed
from lib.runtime.device import amp_dtype, compile_model, configure, use_expandable_segments
from lib.runtime.distributed import Dist, check_world, world_warning, wrap_ddp
from lib.train.checkpoint import CheckpointError
from lib.train.data import DataError, TokenData
from lib.train.loop import Trainer, planned_iters
from lib.train.run import Run
from lib.train.run_dir import choose_run_dir, prepare_run_dir, release_run_dirs, resumed_settings
from lib.train.settings import Settings, settle
from lib.train.stop import STOP

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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_expandable_segments()  # before anything touches the GPU
    try:
        dist = Dist.from_env()
        overrides = overrides_from_args(args, lambda: read_config_py(args.config))
        s, scaling = settle(load_settings(args.config), overrides)
        kept = None
        if args.resume is not None:  # the run's own settings, not config.py's; every rank reads them
            run_dir = choose_run_dir(s, args.resume, args.out_dir)
            s, scaling, kept = resumed_settings(run_dir, s, overrides, probe_lock=dist.is_main)
            args.resume = str(run_dir)
        if s.training.batch_mode == "auto":
            refuse_manual_values(overrides)
        check_world(s.training.gradient_accumulation, dist)
        device = distributed.start(dist, s.runtime.device)
    except Refusal as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    STOP.install()  # from here a stop request is acted on in every phase (lib/train/stop.py)
    try:
        return train(args, s, scaling, dist, device, kept)
    except (DataError, WriteError) as e:  # a token file damaged under the run, a full disk: said; the
        log.error("error: %s", e)  # last checkpoint stays
        return 2
    finally:
        STOP.uninstall()
        release_run_dirs()
        distributed.stop(dist)


def train(
    args: argparse.Namespace,
    s: Settings,
    scaling: dict | None,
    dist: Dist,
    device: torch.device,
    kept: str | None = None,
) -> int:
    try:
        run_dir, resume_state = prepare_run_dir(s, dist, args.resume, args.out_dir)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    setup_logging(run_dir, dist)
    if kept is not None:
        log.info("%s", kept)
    try:
        try:
            run = set_up(Path(args.config), s, scaling, dist, device, run_dir, resume_state)
        except torch.OutOfMemoryError as e:
            raise out_of_memory(f"on {device} while setting the run up", e) from None
    except Refusal as e:
        log.error("error: %s", e)
        return 2
    del resume_state
    if args.resume is not None and (why := run.nothing_to_resume()) is not None:
        return EXIT_CODES[run.conclude(why)]
    return EXIT_CODES[run.train()]


def set_up(
    config_py: Path,
    s: Settings,
    scaling: dict | None,
    dist: Dist,
    device: torch.device,
    run_dir: Path,
    resume_state: dict | None,
) -> Run:
    """Model, data, optimizer, pruner and trainer for the run, restored when resuming; or a Refusal."""
    if (warning := world_warning(s.runtime.nproc_per_node, dist)) is not None:
        log.warning("warning: %s", warning)
    configure(device, s.runtime.tf32, s.runtime.seed, s.runtime.attention_backend)
    if dist.is_main:
        start_records(run_dir, config_py, device, dist.world_size, fresh=resume_state is None)

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
    optimizer = build_optimizer(
        model, s.optimizer, s.adamwprune, s.training.learning_rate, compile=s.runtime.compile
    )
    amp = amp_dtype(device, s.runtime.mixed_precision, s.runtime.amp_dtype)
    compiled = s.runtime.compile and device.type == "cuda"
    train_model = compile_model(wrap_ddp(model, dist, device), device, compiled, s.runtime.compile_mode)
    if choose_later:
        probe = make_probe(train_model, model, device, amp, s.model.block_size, dist)
        s, sizing = choose_batch(s, device, dist.world_size, probe)
        memory = preflight(s, device, dist, resumed_dir)
    pruner = build_pruner(
        model, optimizer, s.pruning, s.adamwprune, planned_iters(s, data.num_tokens("train"))
    )
    tracker = start_tracker(s.tracking, run_dir, run_dir.name, s.to_dict()) if dist.is_main else None
    trainer = Trainer(s, run_dir, device, model, train_model, optimizer, data, amp, pruner, tracker, dist)
    if scaling is not None:
        log.info(
            "bitter2 scaling: %s x%.2f, %s -> %s", *(scaling[k] for k in ("setting", "factor", "from", "to"))
        )
    if resume_state is not None:
        trainer.restore(resume_state)  # or a refusal: a flag changed what a resume may not change
    if dist.is_main:  # what the run runs with now (a resume's flags included): the next resume's settings
        atomic_write_json(run_dir / "settings.json", s.to_dict())
    record = {
        "memory_estimate": memory,
        "scaling": scaling,
        "batch_sizing": sizing,
        "init_from": init,
        "lora": lora,
        "num_params": model.num_params(),
        "attention": attention_sizes(model.config),
    }
    sample = (lambda out: write_sample(model, s, device, out)) if s.generation.max_tokens > 0 else None
    run = Run(trainer, compiled, record, sample)
    log.info("%s", run.describe())
    return run


if __name__ == "__main__":
    sys.exit(main())
