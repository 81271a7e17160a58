"""Serving-speed generation: a static KVCache and one compiled decode step, replayed each token.

    decoder = Decoder(model, batch=16, size=1024, dtype=torch.bfloat16, compile=True)
    out = decoder.generate(prompts, 128, temperature=1.0, top_k=50)

GPT.generate (gpt2/model.py) already reads the prompt once and each new token against a cache.
At batch 1 that is still bound by kernel launches (a 124M step is hundreds of small kernels), so
here the step (GPT.cached_step: positions are a tensor, every shape fixed by the batch and the
cache's size) is compiled with torch.compile's "reduce-overhead" mode: on a GPU each token is one
CUDA-graph replay. The prompt is read by one eager call (a prompt length would be a graph of its
own). Tokens are those of GPT.generate; past the cache's size the window slides with a full
forward per token, as there.
"""

import torch

from gpt2.model import GPT, KVCache, sample_next


class Decoder:
    """Batched generation for `model` with a cache of `batch` rows x `size` positions in `dtype`."""

    def __init__(
        self,
        model: GPT,
        batch: int,
        size: int | None = None,
        dtype: torch.dtype | None = None,
        compile: bool = True,
    ):
        self.model = model.eval()
        self.cache: KVCache = model.new_cache(batch, size, dtype=dtype)
        self.dtype = dtype
        self.compiled = compile and self.model.lm_head.weight.device.type == "cuda"
        self.step = model.cached_step
        if self.compiled:
            for layer in self.cache.layers:  # the graphs write into these: fixed addresses
                for t in layer.values():
                    torch._dynamo.mark_static_address(t)
            self.step = torch.compile(
                model.cached_step, mode="reduce-overhead", fullgraph=True, dynamic=False
            )

    def _autocast(self):
        device = self.model.lm_head.weight.device.type
        enabled = self.dtype is not None and self.dtype != self.model.lm_head.weight.dtype
        return torch.autocast(device, dtype=self.dtype, enabled=enabled)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        *,
        pad: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        timings: list | None = None,
    ) -> torch.Tensor:
        """Extend idx (batch, T) by max_new_tokens (left-padded rows: `pad`), as GPT.generate does.
        `timings` (a list, on CUDA): gets each new token's milliseconds (the first: the prompt's
        read), from CUDA events, so timing adds no host synchronisation to the loop."""
        cache, model = self.cache, self.model
        B, T = idx.shape
        if B != cache.pad.numel():
            raise ValueError(f"{B} prompts for a decoder of batch {cache.pad.numel()}")
        if T >= cache.size:
            raise ValueError(f"a prompt of {T} tokens leaves no room in a cache of {cache.size}")
        cache.length = 0
        cache.pad.copy_(torch.zeros(B, dtype=torch.long) if pad is None else pad)
        for layer in cache.layers:  # a fresh cache: nothing of an earlier call is visible anyway
            for t in layer.values():
                t.zero_()
        events = [] if timings is not None and idx.device.type == "cuda" else None
        if events is not None:
            events.append(torch.cuda.Event(enable_timing=True))
            events[-1].record()
        with self._autocast():
            logits = model.forward_cached(idx, cache)
        pos = torch.full((1,), cache.length, dtype=torch.long, device=idx.device)
        out = [idx]
        for step in range(max_new_tokens):
            next_id = sample_next(logits, temperature, top_k, generator)
            out.append(next_id)
            if events is not None:
                events.append(torch.cuda.Event(enable_timing=True))
                events[-1].record()
            if step == max_new_tokens - 1:
                break
            if cache.length < cache.size:
                with self._autocast():
                    logits = self.step(next_id, pos, cache.layers, cache.pad).clone()
                cache.length += 1
                pos += 1
            else:  # past the cache: the window slides, recomputed (learned positions cannot slide)
                window = torch.cat(out, dim=1)[:, -model.config.block_size :]
                with self._autocast():
                    logits = model(window)[0][:, -1, :]
        if events is not None:
            torch.cuda.synchronize()
            timings.extend(a.elapsed_time(b) for a, b in zip(events, events[1:], strict=False))
        return torch.cat(out, dim=1)
