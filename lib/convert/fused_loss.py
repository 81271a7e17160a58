"""Output head and cross-entropy in one pass over token chunks: the full logits never exist.

The usual path materialises (tokens x vocab) logits in bf16, their fp32 copy for
the softmax, and the same again for the gradient: for GPT-2 at 32 x 1024 tokens
that is 3.3 GB per copy, most of a 124M model's activation memory. Here the
forward pass walks the tokens in chunks; for each chunk it forms the logits,
takes the loss, and at once turns them into the gradients of the head's input
and weight (softmax minus one-hot), so only one chunk of logits is alive at a
time and nothing is recomputed. Backward just scales the stored gradients.
"""

import torch

DEFAULT_CHUNK_TOKENS = 4096


class LinearCrossEntropy(torch.autograd.Function):
    """mean_i CE(x_i @ weight.T, target_i), computing its input gradients during forward."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int
    ) -> torch.Tensor:
        n = x.shape[0]
        w = weight.to(x.dtype)
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros_like(weight, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        with torch.autocast(device_type=x.device.type, enabled=False):
            for start in range(0, n, chunk):
                xc, tc = x[start : start + chunk], targets[start : start + chunk]
                logits = (xc @ w.t()).float()
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, tc[:, None]).squeeze(1)).sum()
                probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                probs[torch.arange(len(tc), device=x.device), tc] -= 1.0
                g = probs.to(x.dtype)
                grad_x[start : start + chunk] = g @ w
                grad_w += (g.t() @ xc).float()
        ctx.save_for_backward(grad_x, grad_w)
        ctx.n = n
        ctx.weight_dtype = weight.dtype
        return total / n

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_x, grad_w = ctx.saved_tensors
        scale = grad_out / ctx.n
        return grad_x * scale.to(grad_x.dtype), (grad_w * scale).to(ctx.weight_dtype), None, None


def linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = DEFAULT_CHUNK_TOKENS
) -> torch.Tensor:
    """Mean cross-entropy of the logits x @ weight.T against targets, chunk tokens at a time.

    x is (..., C) and targets (...); under autocast the matmuls run in the autocast
    dtype and the softmax in fp32, as in the plain path.
    """
    x = x.reshape(-1, x.shape[-1])
    if torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    targets = targets.reshape(-1)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return LinearCrossEntropy.apply(x, weight, targets, chunk)
    # Evaluation: the loss alone, still one chunk of logits at a time.
    w = weight.to(x.dtype)
    total = torch.zeros((), dtype=torch.float32, device=x.device)
    for start in range(0, x.shape[0], chunk):
        logits = (x[start : start + chunk] @ w.t()).float()
        total += torch.nn.functional.cross_entropy(logits, targets[start : start + chunk], reduction="sum")
    return total / x.shape[0]
