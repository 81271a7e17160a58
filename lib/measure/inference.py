"""Serving cost of the final model: forward latency percentiles and tokens/s after training.

For each (batch, sequence length) the model, in eval mode and the run's autocast,
runs `repeats` timed forward passes after `warmup` untimed ones:

  prefill   a forward over all B x T tokens that returns every position's logits
            (scoring a prompt): p50/p95 ms and B*T/p50 tokens/s;
  decode    one generation step at that context: the B rows' next token read against a
            KVCache holding the T - 1 before it (gpt2/model.py's forward_cached, the cache in
            the autocast dtype), as generate runs it: p50/p95 ms, B/p50 new tokens/s, and the
            cache's bytes per token as measured. (Records written before the cache existed,
            without "cache_bytes_per_token", timed a forward over the whole window instead.)

Pruned weights are exact zeros in dense tensors, so unstructured sparsity makes no
kernel faster: comparing these figures across a matrix shows exactly that.
"""

import statistics
import time

import torch

from lib.runtime.device import autocast, synchronize


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between order statistics."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _timed(fn, device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Milliseconds of each of `repeats` calls of fn(), after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(1000 * (time.perf_counter() - start))
    return times


@torch.no_grad()
def measure_latency(
    model: torch.nn.Module,
    device: torch.device,
    amp: torch.dtype | None,
    shapes: list[tuple[int, int]],
    repeats: int,
    warmup: int = 3,
    vocab: int = 50257,
) -> list[dict]:
    """One record per (batch, length, mode) with p50/p95 ms and tokens/s (see the module doc)."""
    was_training = model.training
    model.eval()
    out = []
    try:
        gen = torch.Generator().manual_seed(0)
        for batch, length in shapes:
            idx = torch.randint(0, vocab, (batch, length), generator=gen).to(device)

            def prefill(idx=idx):
                with autocast(device, amp):
                    model(idx, all_positions=True)

            cache = model.new_cache(batch, length, dtype=amp)
            with autocast(device, amp):
                model.forward_cached(idx[:, :-1], cache)

            def decode(idx=idx, cache=cache, length=length):
                cache.length = length - 1  # the same step each time: the last position is rewritten
                with autocast(device, amp):
                    model.forward_cached(idx[:, -1:], cache)

            for mode, fn, tokens in (("prefill", prefill, batch * length), ("decode", decode, batch)):
                times = _timed(fn, device, repeats, warmup)
                p50 = statistics.median(times)
                record = {
                    "mode": mode,
                    "batch_size": batch,
                    "seq_len": length,
                    "p50_ms": p50,
                    "p95_ms": percentile(times, 0.95),
                    "tokens_per_sec": 1000 * tokens / p50,
                }
                if mode == "decode":
                    record["cache_bytes_per_token"] = cache.nbytes() // (batch * length)
                out.append(record)
            del cache
    finally:
        model.train(was_training)
    return out


def latency_table(rows: list[dict]) -> str:
    """The records as log lines."""
    lines = [f"{'mode':<8} {'batch':>5} {'tokens':>6} {'p50 ms':>9} {'p95 ms':>9} {'tokens/s':>12}"]
    lines += [
        f"{r['mode']:<8} {r['batch_size']:>5} {r['seq_len']:>6} {r['p50_ms']:>9.2f} {r['p95_ms']:>9.2f} "
        f"{r['tokens_per_sec']:>12,.0f}"
        for r in rows
    ]
    return "\n".join(lines)
