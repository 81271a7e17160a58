"""A document's log-likelihood under a language model, in windows of the block size, batched.

The model read each class's documents as `<|endoftext|> document <|endoftext|> ...`, so a test
document is scored the same way: after an `<|endoftext|>`, its tokens and the `<|endoftext|>`
that ends it are predicted, n + 1 predictions for n tokens. A document longer than the block
is read in windows `stride` tokens apart; every prediction is counted once, in the first window
that reaches it, so each has at least block - stride tokens of context (the usual strided
perplexity). Windows from many documents share a forward pass; padding is masked out.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

EOT = 50256
VOCAB = 50257
"""GPT-2's real vocabulary: logits of padded rows (GPT2_PAD_VOCAB) are left out of every softmax."""


def windows(num_tokens: int, block: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first) of the windows over a document of `num_tokens` tokens.

    Positions index the inputs [EOT, t1 .. tn] and the targets [t1 .. tn, EOT] (n + 1 each); a
    window reads inputs [start, end) and counts the targets from `first` to `end`.
    """
    if not 1 <= stride <= block:
        raise ValueError(f"stride {stride} is not in 1..block ({block})")
    m, start, counted, out = num_tokens + 1, 0, 0, []
    while True:
        end = min(start + block, m)
        out.append((start, end, counted))
        if end == m:
            return out
        counted, start = end, start + stride


def plan(docs: list[np.ndarray], block: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Every window of every document as (document, start, end, first), the longest first."""
    planned = [(d, *w) for d, tokens in enumerate(docs) for w in windows(len(tokens), block, stride)]
    planned.sort(key=lambda w: w[2] - w[1], reverse=True)  # similar lengths share a batch: little padding
    return planned


@torch.no_grad()
def log_likelihoods(
    model: torch.nn.Module,
    docs: list[np.ndarray],
    *,
    block: int,
    stride: int,
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None = None,
    desc: str = "scoring",
) -> np.ndarray:
    """Each document's summed log-probability (natural log) of its n + 1 predictions under `model`.

    `model(x, all_positions=True)` must return (logits, _) of shape (batch, time, vocab or more).
    """
    model.eval()
    sequences = [np.concatenate([[EOT], d.astype(np.int64), [EOT]]) for d in docs]
    planned = plan(docs, block, stride)
    totals = torch.zeros(len(docs), dtype=torch.float64)
    batches = range(0, len(planned), batch_size)
    for i in tqdm(batches, desc=desc, unit="batch", leave=False, mininterval=2, disable=None):
        batch = planned[i : i + batch_size]
        width = max(end - start for _, start, end, _ in batch)
        x = torch.zeros(len(batch), width, dtype=torch.long)
        y = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.bool)
        for row, (d, start, end, first) in enumerate(batch):
            seq = torch.from_numpy(sequences[d])
            x[row, : end - start] = seq[start:end]
            y[row, : end - start] = seq[start + 1 : end + 1]
            mask[row, first - start : end - start] = True
        x, y, mask = x.to(device), y.to(device), mask.to(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits, _ = model(x, all_positions=True)
        logp = F.log_softmax(logits[..., :VOCAB].float(), dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        sums = (logp * mask).sum(dim=1).double().cpu()
        totals.index_add_(0, torch.tensor([d for d, *_ in batch]), sums)
    out = totals.numpy()
    if not np.isfinite(out).all():
        raise FloatingPointError("a document's log-likelihood is not finite (a diverged model?)")
    return out


def predictions(lengths: np.ndarray) -> np.ndarray:
    """How many predictions each document's score sums (its tokens and the closing <|endoftext|>)."""
    return np.asarray(lengths, dtype=np.int64) + 1


def default_stride(block: int, stride: int) -> int:
    """CLASSIFY_STRIDE, or half the block when it is 0 (at least 1)."""
    return stride if stride else max(1, block // 2)


def nats_to_ppl(nats: float, count: int) -> float:
    return math.exp(-nats / count) if count else float("nan")
