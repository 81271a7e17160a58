"""One training run as built, from its first step to its last record: its parts, what is left of it
to resume, its one-line description, the training under the GPU monitor, its summary.json
(lib/measure/summary.RunSummary) and what follows it. The Trainer (loop.py) takes the steps,
evaluates and checkpoints; the Run owns what comes around that."""

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from lib.adamwprune import identity_of
from lib.errors import out_of_memory
from lib.io import atomic_write_json
from lib.measure.after_training import after_training
from lib.measure.gpu_monitor import GPU_FILE, GPUMonitor, plot_gpu
from lib.measure.metrics import bookkeeping, peak_memory_bytes
from lib.measure.records import plot_losses
from lib.measure.summary import FINISHED, RunSummary, summary_status
from lib.train.loop import Trainer
from lib.train.stop import STOP, StopRequested

log = logging.getLogger("train")


@dataclass
class Run:
    """One training run set up: the Trainer with every part of it, and what the summary records
    about the set-up."""

    trainer: Trainer  # holds the parts: settings, folder, model, optimizer, data, pruner, tracker
    compiled: bool
    # copied into summary.json: memory_estimate, scaling, batch_sizing, init_from, lora (the set-up's
    # records) and num_params, attention (what the model says about itself)
    record: dict
    # writes sample.txt from the trained model (gpt2/sample.py, above lib/); None: no sample
    sample: Callable[[Path], None] | None = None

    def describe(self) -> str:
        """The run in one line: model, devices, precision, batch, steps and data."""
        t = self.trainer
        s, dist = t.s, t.dist
        devices = f"{dist.world_size} x {t.device.type}" if dist.enabled else str(t.device)
        dtype = "fp32" if t.amp is None else str(t.amp).removeprefix("torch.")
        return (
            f"run {t.run_dir} | {s.model.name}, {self.record['num_params'] / 1e6:.2f}M parameters | "
            f"{devices} {dtype}{' compiled' if self.compiled else ''} | batch {s.training.batch_size} x "
            f"{s.training.gradient_accumulation} accumulation x {s.model.block_size} tokens = "
            f"{t.tokens_per_iter:,} tokens/step | {t.total_iters} steps on {s.data.dataset} "
            f"({t.data.num_tokens('train'):,} train tokens)"
        )

    def nothing_to_resume(self) -> str | None:
        """Why a resumed run has no step left to take (its results stay as they are), or None."""
        t = self.trainer
        st, total = t.state, t.total_iters
        budget = t.s.training.max_time_seconds
        if st.eval_pending:  # a stop request cut its evaluation short: that is left to do
            return None
        if st.iter_num >= total:
            further = (
                "Its checkpoint keeps no optimizer state (GPT2_CHECKPOINT_FINAL_OPTIMIZER=n), so it cannot "
                "be trained further."
                if t.without_optimizer
                else "To train it longer, resume with a larger --max-iters (GPT2_MAX_ITERS)."
            )
            return f"nothing to resume: {t.run_dir} finished at iter {st.iter_num} of {total}; its results stay as they are. {further}"
        trained = t.meter.train_seconds
        if budget and trained >= budget:
            return (
                f"nothing to resume: {t.run_dir} has used its time budget (GPT2_MAX_TIME = {budget} s, "
                f"{trained:.0f} s trained, stopped at iter {st.iter_num} of {total}); its results "
                "stay as they are. To train it longer, resume with a larger --max-time (seconds)."
            )
        return None

    def train(self) -> str:
        """Train under the GPU monitor, then, on rank 0, write the summary and finish; the run's
        status. Running out of memory ends the run with its results so far: metrics, the last
        checkpoint and a summary."""
        t = self.trainer
        started, dist = time.time(), t.dist
        gpu_file = t.run_dir / (GPU_FILE if dist.is_main else f"gpu_rank{dist.rank}.jsonl")
        monitor = GPUMonitor.for_device(gpu_file, t.device, t.s.monitor).start()
        try:
            with logging_redirect_tqdm():
                outcome = t.fit()
        except torch.OutOfMemoryError as e:
            at = f"on {t.device} while training, at iter {t.state.iter_num}"
            log.error("error: %s", out_of_memory(at, e))
            outcome = {"status": "out_of_memory", **t.throughput()}
        finally:
            gpu = monitor.stop()
        if not dist.is_main:
            return outcome["status"]
        summary = self.summarize(outcome, gpu, time.time() - started)
        plot_gpu(gpu_file, t.run_dir / "gpu.png", f"{t.run_dir.name}: GPU")
        self.finish(summary)
        return summary.status

    def conclude(self, why: str) -> str:
        """A resumed run with no step left (`why`, from nothing_to_resume): its results stay as they
        are; or, if it stopped between its last checkpoint and a finished summary (a death, or a stop
        request during the after-training measurements), one evaluation of its final weights and
        the summary from it. The run's status."""
        t = self.trainer
        if (status := summary_status(t.run_dir)) in FINISHED:
            log.info("%s", why)
            return status
        log.info(
            "%s finished training without a final summary; evaluating its final weights to write one",
            t.run_dir,
        )
        if t.evaluate_final() is None:
            log.warning("stopped (%s) before the summary; resume again to write it", STOP.signal)
            return "interrupted"
        done = "completed" if t.state.iter_num >= t.total_iters else "time_budget"
        if not t.dist.is_main:
            return done
        summary = self.summarize({"status": done, **t.throughput()}, None, 0.0)
        self.finish(summary)
        return summary.status

    def summarize(self, outcome: dict, gpu: dict | None, wall_seconds: float) -> RunSummary:
        """Write summary.json: the outcome, the final metrics, the costs and the set-up of the run."""
        t = self.trainer
        s, model, st = t.s, t.model, t.state
        # the final metrics are an evaluation of the weights it stopped with, or absent
        final = t.last_eval if t.last_eval and t.last_eval["iter"] == st.iter_num else {}
        measured = {"inference": None, "lm_eval": None}
        if outcome["status"] in FINISHED:
            try:
                with STOP.immediate():  # a stop request ends the measurements at once
                    measured = after_training(model, t.device, t.amp, s)
            except StopRequested as e:
                log.warning("%s received: the after-training measurements are left for a resume to make", e)
                outcome = {**outcome, "status": "interrupted"}
        identity = identity_of(s)
        summary = RunSummary(
            run=t.run_dir.name,
            **outcome,
            iters=st.iter_num,
            planned_iters=t.total_iters,
            tokens=st.iter_num * t.tokens_per_iter,
            train_seconds=t.meter.train_seconds,
            wall_seconds_this_session=wall_seconds,
            final_train_loss=final.get("train_loss"),
            final_val_loss=final.get("val_loss"),
            final_val_ppl=final.get("val_ppl"),
            model_sparsity=final.get("model_sparsity"),
            best_val_loss=st.best_val_loss if math.isfinite(st.best_val_loss) else None,
            best_checkpoint="best.pt" if (t.run_dir / "best.pt").is_file() else None,
            peak_memory_bytes=max(st.peak_memory_bytes, peak_memory_bytes(t.device)),
            **bookkeeping(model, t.optimizer, t.pruner),
            model=s.model.name,
            dataset=s.data.dataset,
            data=t.data.meta,
            optimizer=s.optimizer.name,
            pruning_method=s.pruning.method,
            adamwprune_variant=identity.variant,
            adamwprune_base=identity.base,
            target_sparsity=identity.sparsity,
            seed=s.runtime.seed,
            device=str(t.device),
            world_size=t.dist.world_size,
            global_batch=s.training.batch_size * s.training.gradient_accumulation,
            dtype="float32" if t.amp is None else str(t.amp).removeprefix("torch."),
            compiled=self.compiled,
            gpu=gpu,
            **self.record,
            **measured,
        )
        summary.write(t.run_dir / "summary.json")
        return summary

    def finish(self, summary: RunSummary) -> None:
        """After the summary: the tracker, sparsity per layer, the loss plot, a sample, the closing line."""
        t = self.trainer
        s, run_dir = t.s, t.run_dir
        if t.tracker is not None:
            t.tracker.finish()
        if t.pruner is not None:
            atomic_write_json(run_dir / "sparsity.json", t.pruner.sparsity())
        plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png", f"{run_dir.name} ({s.model.name})")
        if summary.finished and self.sample is not None:
            try:
                with STOP.immediate():  # the results are written; a stop request skips the sample
                    self.sample(run_dir / "sample.txt")
            except StopRequested as e:
                log.warning("%s received: no sample written", e)
        loss, ppl = summary.final_val_loss, summary.final_val_ppl
        log.info(
            "done (%s) | val loss %s | val ppl %s | %s",
            summary.status,
            "n/a" if loss is None else f"{loss:.4f}",
            "n/a" if ppl is None else f"{ppl:.2f}",
            run_dir,
        )
