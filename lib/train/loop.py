"""The training loop: accumulate, step, log, evaluate, checkpoint, resume.

The loop reads nothing from the device except on logging and evaluation steps:
losses and gradient norms stay tensors until then. It knows nothing about any
particular optimizer; `gpt2/train.py` builds the parts and hands them over.

Under torchrun every rank runs this loop on its share of each step's
micro-batches (`TokenData.step_batches`); DDP averages the gradients, so every
rank holds the same weights, optimizer states and pruning masks. Ranks agree on
losses, stopping and evaluation through collectives at logging and evaluation
steps only; rank 0 alone writes metrics and checkpoints.
"""

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

from lib.measure.meter import IntervalMeter
from lib.measure.metrics import MetricsWriter, model_sparsity, peak_flops, peak_memory_bytes
from lib.pruning.pruner import Pruner
from lib.runtime.device import autocast, overflow_flag, rng_state, set_rng_state
from lib.runtime.distributed import Dist, all_reduce, any_rank, check_replicas, gather, no_sync
from lib.train.checkpoint import BEST_FILE, CHECKPOINT_FILE, CheckpointError, save_checkpoint
from lib.train.data import TokenData
from lib.train.lr_schedule import learning_rate_at
from lib.train.settings import RESUMABLE, Settings, upgrade_settings_dict
from lib.train.stop import STOP

log = logging.getLogger("train")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def planned_iters(settings: Settings, train_tokens: int) -> int:
    """Optimizer steps the schedule spans: GPT2_MAX_ITERS or NUM_EPOCHS, whichever is shorter."""
    t = settings.training
    tokens_per_iter = t.batch_size * t.gradient_accumulation * settings.model.block_size
    limits = [t.max_iters] if t.max_iters else []
    if t.num_epochs:
        limits.append(math.ceil(t.num_epochs * train_tokens / tokens_per_iter))
    return min(limits)


def settings_changes(saved: dict, current: dict) -> list[str]:
    """Dotted names of the settings that differ between two Settings.to_dict() results (the saved
    one of any version: fields that moved sections are read in their new place)."""
    saved = upgrade_settings_dict(saved)
    return sorted(
        f"{section}.{name}"
        for section, values in current.items()
        for name, value in values.items()
        if saved.get(section, {}).get(name) != value
    )


def resume_conflicts(saved: dict, current: dict) -> list[str]:
    """The settings that differ and may not change on resume (they change what is computed)."""
    return [c for c in settings_changes(saved, current) if c not in RESUMABLE]


STOP_CHECK_BATCHES = 8  # evaluation batches between the ranks' agreement on a stop request
STOP_GRACE_SECONDS = 30  # Slurm's default KillWait: SIGTERM to SIGKILL


@dataclass
class TrainState:
    """Progress that a checkpoint carries besides the model and optimizer."""

    iter_num: int = 0
    best_val_loss: float = math.inf
    # The logging interval in progress: its summed step losses (its steps and seconds are the
    # meter's, lib/measure/meter.py; a resume picks it up where it stopped).
    interval_loss_sum: float = 0.0
    # The largest peak device memory of any session of this run (a resume keeps the earlier one).
    peak_memory_bytes: int = 0
    # An evaluation due at iter_num that a stop request cut short: a resume makes it first.
    eval_pending: bool = False

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """From a checkpoint's flat keys; one written before a field existed keeps its default."""
        for f in dataclasses.fields(self):
            if f.name in state:
                setattr(self, f.name, state[f.name])


class Trainer:
    """One run: the model, its optimizer and data, driven for `total_iters` steps."""

    def __init__(
        self,
        settings: Settings,
        run_dir: Path,
        device: torch.device,
        model: nn.Module,
        train_model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data: TokenData,
        amp: torch.dtype | None,
        pruner: Pruner | None = None,
        tracker=None,
        dist: Dist = Dist(),
    ):
        self.s = settings
        self.run_dir = run_dir
        self.device = device
        self.model = model  # the nn.Module whose state is saved
        self.train_model = train_model  # the same, possibly compiled
        self.optimizer = optimizer
        # The optimizer's two optional hooks, found once (AdamWSPAM has both; torch's AdamW neither):
        # observe_grad_norm(norm) takes the unclipped norm for spike detection, log_stats() adds
        # to a logging step's record.
        self._observe_grad_norm = getattr(optimizer, "observe_grad_norm", None)
        self._log_stats = getattr(optimizer, "log_stats", None)
        if hasattr(optimizer, "count_clipped_every"):  # AdamWSPAM: count its clipped entries when logged
            optimizer.count_clipped_every = settings.training.log_interval
        self.data = data
        self.amp = amp
        self.pruner = pruner
        self.tracker = tracker
        self.dist = dist
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
        # fp16 steps GradScaler skipped for an overflow, counted on the device (logged, never synced per step)
        self.skipped_steps = torch.zeros((), device=device)
        self.total_iters = planned_iters(settings, data.num_tokens("train"))
        if settings.training.lr_warmup_steps >= self.total_iters > 0:
            log.warning(
                "GPT2_WARMUP_STEPS (%d) is not below the run's %d steps: the learning rate never reaches "
                "LEARNING_RATE (%g); it ends at %.3g. Lower --lr-warmup-steps if that is not meant.",
                settings.training.lr_warmup_steps,
                self.total_iters,
                settings.training.learning_rate,
                learning_rate_at(self.total_iters - 1, settings.training, self.total_iters),
            )
        t = settings.training
        self.tokens_per_iter = t.batch_size * t.gradient_accumulation * settings.model.block_size
        self.state = TrainState()
        self.meter = IntervalMeter(device)  # training time by logging interval
        self.metrics = MetricsWriter(run_dir / "metrics.jsonl") if dist.is_main else None
        self.params = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapters only
        self.peak = peak_flops(device, amp if device.type == "cuda" else None)
        self.without_optimizer = False  # restored from a finished run's checkpoint kept without it
        self.last_eval: dict | None = None  # with "iter", the step it evaluated
        self._slow_save_said = False  # the warning that a checkpoint outlasts a grace period, once
        self._loss_acc: torch.Tensor | None = None  # summed step losses of the open logging interval

    # -- checkpoints -------------------------------------------------------------------------

    def checkpoint_state(self) -> dict:
        """What ckpt.pt keeps; a finished run without its optimizer's state where the settings say
        so (GPT2_CHECKPOINT_FINAL_OPTIMIZER=n: it cannot be trained further, only used)."""
        finished = self.state.iter_num >= self.total_iters
        keep_optimizer = self.s.training.final_optimizer or not finished
        parts = self._parts()
        if not keep_optimizer:
            parts["optimizer"] = None
        return {
            **self.state.state_dict(),  # progress and clock: flat keys, as checkpoints have always had
            **self.meter.state_dict(),
            **{name: None if part is None else part.state_dict() for name, part in parts.items()},
            "skipped_steps": int(self.skipped_steps.item()),
            "rng": gather(self.dist, rng_state(self.device)),  # one per rank
            "settings": self.s.to_dict(),
        }

    def _parts(self) -> dict:
        """The checkpoint's parts that save and load themselves (state_dict / load_state_dict), by
        key; None where the run has none (dense training's pruner)."""
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "scaler": self.scaler,
            "data": self.data,
            "pruner": self.pruner,
        }

    def save(self, best: bool = False) -> None:
        """The latest checkpoint (for resume); with `best`, first best.pt (weights at the lowest val
        loss): a death between the two writes leaves ckpt.pt older than best.pt, so a resume redoes
        that evaluation and finds the same best, and ckpt.pt never records a best that best.pt lacks."""
        if not self.s.training.save_checkpoint:
            return
        if self._loss_acc is not None:  # the open logging interval's loss sum travels with it
            self.state.interval_loss_sum = all_reduce(self.dist, self._loss_acc.float(), "avg").item()
        state = self.checkpoint_state()  # a collective: every rank takes part
        if not self.dist.is_main:
            return
        started = time.perf_counter()
        if best:
            record = {"iter_num": self.state.iter_num, "val_loss": self.state.best_val_loss}
            save_checkpoint(
                self.run_dir / BEST_FILE,
                {**record, "model": self.model.state_dict(), "settings": self.s.to_dict()},
            )
        save_checkpoint(self.run_dir / CHECKPOINT_FILE, state)
        seconds = time.perf_counter() - started
        size = (self.run_dir / CHECKPOINT_FILE).stat().st_size + (
            (self.run_dir / BEST_FILE).stat().st_size if best else 0
        )
        log.info("checkpoint written: %.2f GB in %.1f s", size / 1e9, seconds)
        if seconds > STOP_GRACE_SECONDS and not self._slow_save_said:
            self._slow_save_said = True
            log.warning(
                "warning: writing the checkpoint took %.0f s, more than the %d s a cluster usually leaves "
                "between SIGTERM and SIGKILL (Slurm's KillWait): a preempted run may lose the steps since "
                "its last checkpoint. Ask for an early signal (the matrix's Slurm tasks do: "
                "TEST_MATRIX_SLURM_SIGNAL), or write checkpoints to a faster disk.",
                seconds,
                STOP_GRACE_SECONDS,
            )

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint of this run; refuse one whose computation differed."""
        changed = resume_conflicts(state["settings"], self.s.to_dict())
        if changed:
            raise CheckpointError(
                f"cannot resume {self.run_dir}: the checkpoint was made with different settings: "
                + ", ".join(changed)
                + ". A resume keeps the run's own settings: leave out the flags that change these, or start "
                "a new run."
            )
        if state["optimizer"] is None and state["iter_num"] < self.total_iters:
            raise CheckpointError(
                f"cannot train {self.run_dir} further: it finished at iter {state['iter_num']} with "
                "GPT2_CHECKPOINT_FINAL_OPTIMIZER=n, so its checkpoint keeps the weights but not the "
                "optimizer's state. Start a new run from its weights (GPT2_INIT_FROM) or train it anew."
            )
        self.without_optimizer = state["optimizer"] is None  # a finished run kept without it
        parts = self._parts()
        if self.without_optimizer:
            parts["optimizer"] = None
        for name, part in parts.items():
            if part is not None:
                part.load_state_dict(state[name])
        self.skipped_steps.fill_(state.get("skipped_steps", 0))
        rng = state["rng"]
        if isinstance(rng, list):  # one state per rank; a new rank count reuses rank 0's
            if len(rng) != self.dist.world_size:
                log.warning("the checkpoint has %d rank(s) and this run %d", len(rng), self.dist.world_size)
            rng = rng[self.dist.rank] if self.dist.rank < len(rng) else rng[0]
        set_rng_state(self.device, rng)
        self.state.load_state_dict(state)
        self.meter.load_state_dict(state)
        last = self.metrics.truncate_after(self.state.iter_num) if self.metrics is not None else 0
        log.info("resumed at iter %d of %d", self.state.iter_num, self.total_iters)
        if last > self.state.iter_num:  # output.log keeps what the stopped session logged after it
            log.info(
                "steps %d-%d, logged above by the session that stopped after its last checkpoint, are "
                "taken again from here (metrics.jsonl keeps only the new records)",
                self.state.iter_num + 1,
                last,
            )

    # -- evaluation --------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict | None:
        """Mean loss over GPT2_EVAL_SAMPLES batches of each split; the same batches every time.

        With several ranks each evaluates every world_size-th batch and the sums are added.
        A stop request (SIGINT/SIGTERM) abandons it between batches: None, nothing recorded.
        Ranks decide that together every STOP_CHECK_BATCHES batches.
        """
        t, T, d = self.s.training, self.s.model.block_size, self.dist
        self.train_model.eval()
        out = {}
        try:
            for i, split in enumerate(("train", "val")):
                gen = torch.Generator().manual_seed(self.s.runtime.seed + 1 + i)
                starts = self.data.starts(split, t.eval_samples * t.batch_size, T, gen).view(
                    t.eval_samples, -1
                )
                total = torch.zeros((), device=self.device)
                for j, row in enumerate(starts[d.rank :: d.world_size]):
                    if self._eval_stopped(j):
                        return None
                    x, y = self.data.windows(split, row, T, self.device)
                    with autocast(self.device, self.amp):
                        _, loss = self.train_model(x, y)
                    total += loss.float()
                out[f"{split}_loss"] = all_reduce(d, total).item() / t.eval_samples
        finally:
            self.train_model.train()
        check_replicas(d, self.params)
        out["val_ppl"] = math.exp(min(out["val_loss"], 700.0))
        out["model_sparsity"] = model_sparsity(self.model)
        if self.pruner is not None:
            out["sparsity"] = self.pruner.sparsity()["prunable"]
        return out

    def _eval_stopped(self, batch: int) -> bool:
        """Whether a stop request ends the evaluation before this batch (every rank the same)."""
        if not self.dist.enabled:
            return STOP.signal is not None
        if batch % STOP_CHECK_BATCHES:
            return False
        if any_rank(self.dist, STOP.signal is not None, self.device):
            STOP.request("signal on a peer")
            return True
        return False

    def evaluate_final(self) -> dict | None:
        """Evaluate the weights as they are, for the summary of a run that finished training without
        one, and keep it as the last evaluation; None when a stop request cut it short."""
        result = self.evaluate()
        if result is not None:
            self.last_eval = {"iter": self.state.iter_num, **result}
        return result

    def _record_eval(self) -> bool | None:
        """Evaluate, record, and say whether this is the best validation loss so far; None when a
        stop request cut the evaluation short (nothing recorded; it is due again on resume)."""
        result = self.evaluate()
        if result is None:
            log.warning(
                "evaluation at iter %d abandoned (%s); it is made on resume", self.state.iter_num, STOP.signal
            )
            self.state.eval_pending = True
            return None
        self.state.eval_pending = False
        if not all(math.isfinite(result[k]) for k in ("train_loss", "val_loss")):
            raise TrainingDiverged(
                f"evaluation at iter {self.state.iter_num} gave train loss {result['train_loss']} "
                f"and val loss {result['val_loss']}"
            )
        improved = result["val_loss"] < self.state.best_val_loss
        self.state.best_val_loss = min(self.state.best_val_loss, result["val_loss"])
        self.last_eval = {"iter": self.state.iter_num, **result}
        self._record({"kind": "eval", "iter": self.state.iter_num, **result})
        log.info(
            "eval iter %d | train loss %.4f | val loss %.4f | val ppl %.2f%s",
            self.state.iter_num,
            result["train_loss"],
            result["val_loss"],
            result["val_ppl"],
            f" | sparsity {100 * result['sparsity']:.2f}%" if "sparsity" in result else "",
        )
        return improved

    # -- the loop ----------------------------------------------------------------------------

    def _step(self, learning_rate: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimizer step over GPT2_GRADIENT_ACCUMULATION micro-batches; returns device tensors.

        The micro-batches are shared out over the ranks; gradients are all-reduced
        once, after the last micro-batch (DDP's no_sync on the others).
        """
        t, d = self.s.training, self.dist
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        loss_sum = torch.zeros((), device=self.device)
        batches = self.data.step_batches(
            t.gradient_accumulation, t.batch_size, self.s.model.block_size, self.device, d.rank, d.world_size
        )
        for j, (x, y) in enumerate(batches):
            with no_sync(self.train_model) if j < len(batches) - 1 else contextlib.nullcontext():
                with autocast(self.device, self.amp):
                    _, loss = self.train_model(x, y)
                    loss = loss / len(batches)
                self.scaler.scale(loss).backward()
            loss_sum += loss.detach()
        self.scaler.unscale_(self.optimizer)  # no-op without fp16 loss scaling
        found_inf = overflow_flag(self.scaler, self.optimizer)  # nonzero: this step will be skipped
        if found_inf is not None:
            self.skipped_steps += found_inf
        if self.pruner is not None:
            self.pruner.before_step(found_inf)
        grad_norm = None
        if t.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, t.grad_clip, foreach=True)
            if self._observe_grad_norm is not None:
                self._observe_grad_norm(grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.pruner is not None:
            self.pruner.after_step(self.state.iter_num + 1)
        return loss_sum, grad_norm

    def fit(self) -> dict:
        """Train to the planned step count (or the time budget, or a signal); returns the outcome.

        Each log line covers the steps since the previous one: its loss is their mean and its
        ms/iter their training time, evaluations excluded, wherever the evaluations fall.
        """
        t = self.s.training
        st = self.state
        budget = t.max_time_seconds or math.inf
        own_handlers = not STOP.installed  # gpt2.train installs them for the run's whole life
        if own_handlers:
            STOP.install()
        status = "completed"
        try:
            if st.iter_num == 0 or st.eval_pending:
                # the untrained baseline (best.pt starts with the first trained eval), or the one a
                # stop request cut short, made before the next step as it would have been
                improved = self._record_eval()
                if improved is None or STOP.signal is not None:
                    self.save(best=bool(improved) and st.iter_num > 0)
                    log.warning("stopped at iter %d of %d (%s)", st.iter_num, self.total_iters, STOP.signal)
                    return {"status": "interrupted", **self.throughput()}
                if st.iter_num > 0:
                    self.save(best=improved)
            self.train_model.train()
            self._loss_acc = torch.full((), st.interval_loss_sum, device=self.device)
            meter = self.meter
            meter.start()
            bar = tqdm(
                total=self.total_iters,
                initial=st.iter_num,
                unit="it",
                dynamic_ncols=True,
                disable=None if self.dist.is_main else True,
            )
            while st.iter_num < self.total_iters:
                learning_rate = learning_rate_at(st.iter_num, self.s.training, self.total_iters)
                loss_sum, grad_norm = self._step(learning_rate)
                self._loss_acc += loss_sum
                st.iter_num += 1
                meter.step()
                bar.update(1)
                last = st.iter_num == self.total_iters
                log_step = st.iter_num % t.log_interval == 0 or last
                if log_step:
                    seconds, steps, compiled = meter.close()
                    self._log_train(
                        self._loss_acc / steps, grad_norm, learning_rate, seconds, steps, compiled, bar
                    )
                    self._loss_acc.zero_()
                stop = self._should_stop(budget, log_step)
                due = st.iter_num % t.eval_interval == 0 or last
                if due or stop:
                    meter.pause(stopping=bool(stop))  # the interval's clock resumes after the evaluation
                    if stop is None or stop == "time budget":  # a time budget's stop evaluates there
                        improved = self._record_eval()  # None: a stop request came during it
                    else:  # a stop request (ranks agreed) waits for no evaluation: one due is made on resume
                        improved, st.eval_pending = None, due
                    if improved is None and STOP.signal is not None:
                        stop = STOP.signal
                    self.save(best=bool(improved))
                    meter.resume()
                if stop:
                    status = "interrupted" if STOP.signal else "time_budget"
                    log.warning("stopped at iter %d of %d (%s)", st.iter_num, self.total_iters, stop)
                    if STOP.signal:
                        log.warning(
                            "resume it with `make RESUME=%s` (or python -m gpt2.train --resume %s)",
                            self.run_dir,
                            self.run_dir,
                        )
                    break
            bar.close()
        except TrainingDiverged as e:
            log.error(
                "%s. Training diverged; the last good checkpoint (if any) is kept in %s. "
                "Lower LEARNING_RATE or raise GPT2_WARMUP_STEPS, then start a new run.",
                e,
                self.run_dir,
            )
            status = "diverged"
        finally:
            if own_handlers:
                STOP.uninstall()
        return {"status": status, **self.throughput()}

    def _should_stop(self, budget: float, log_step: bool) -> str | None:
        """Why to stop now (a signal, the time budget), or None.

        Ranks must stop at the same step, so under torchrun they decide together,
        on logging steps only (a signal waits up to GPT2_LOG_INTERVAL steps).
        """
        signalled = STOP.signal
        over_budget = self.meter.train_seconds >= budget
        if self.dist.enabled:
            if not log_step:
                return None
            signalled = any_rank(self.dist, bool(signalled), self.device) and (
                signalled or "signal on a peer"
            )
            over_budget = any_rank(self.dist, over_budget, self.device)
        if signalled:
            STOP.request(signalled)
            return signalled
        return "time budget" if over_budget else None

    def _log_train(self, loss_t, grad_norm, learning_rate, seconds, steps, compiled, bar) -> None:
        loss = all_reduce(self.dist, loss_t.float(), "avg").item()
        if not math.isfinite(loss):
            raise TrainingDiverged(f"training loss is {loss} at iter {self.state.iter_num}")
        ms_per_iter = 1000 * seconds / steps
        tok_s = self.tokens_per_iter * steps / seconds
        mfu = self._mfu(tok_s)
        mem = peak_memory_bytes(self.device)
        if self.dist.enabled:  # the largest over the ranks
            mem = int(all_reduce(self.dist, torch.tensor(float(mem), device=self.device), "max").item())
        self.state.peak_memory_bytes = max(self.state.peak_memory_bytes, mem)
        record = {
            "kind": "train",
            "iter": self.state.iter_num,
            "loss": loss,
            "lr": learning_rate,
            "grad_norm": None if grad_norm is None else grad_norm.item(),
            "ms_per_iter": ms_per_iter,
            "tokens_per_sec": tok_s,
            "mfu": mfu,
            "peak_memory_bytes": mem,
            "includes_compile": compiled,
            **(self._log_stats() if self._log_stats is not None else {}),
        }
        if self.scaler.is_enabled():  # fp16: the loss scale, and the steps skipped for an overflow
            record["loss_scale"] = self.scaler.get_scale()
            record["skipped_steps"] = int(self.skipped_steps.item())
        self._record(record)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        log.info(
            "iter %d | loss %.4f | lr %.2e | %.1f ms/iter%s | %s tok/s%s | mem %.2f GiB",
            self.state.iter_num,
            loss,
            learning_rate,
            ms_per_iter,
            " (compiling)" if compiled else "",
            f"{tok_s:,.0f}",
            "" if mfu is None else f" | MFU {100 * mfu:.1f}%",
            mem / 2**30,
        )

    def _record(self, record: dict) -> None:
        """One metrics record to metrics.jsonl, and to the tracker as <kind>/<name> values (rank 0)."""
        if self.metrics is None:
            return
        self.metrics.write(record)
        if self.tracker is not None:
            values = {f"{record['kind']}/{k}": v for k, v in record.items() if k not in ("kind", "iter")}
            self.tracker.log(
                {k: v for k, v in values.items() if isinstance(v, (int, float))}, step=record["iter"]
            )

    def _mfu(self, tokens_per_sec: float) -> float | None:
        """Model FLOPs utilisation of each device (tokens_per_sec counts all ranks)."""
        if self.peak is None:
            return None
        return self.model.flops_per_token() * tokens_per_sec / (self.peak * self.dist.world_size)

    def throughput(self) -> dict:
        """Steady-state speed: the logged intervals after the first in which nothing compiled."""
        seconds, steps = self.meter.throughput()
        if steps == 0:
            return {"ms_per_iter": None, "tokens_per_sec": None, "mfu": None}
        tok_s = self.tokens_per_iter * steps / seconds
        return {"ms_per_iter": 1000 * seconds / steps, "tokens_per_sec": tok_s, "mfu": self._mfu(tok_s)}
