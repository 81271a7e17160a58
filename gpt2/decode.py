"""Serving-speed generation: a static KVCache and one decode step recorded as a CUDA graph.

    decoder = Decoder(model, batch=16, size=1024, dtype=torch.bfloat16, compile=True)
    out = decoder.generate(prompts, 128, temperature=1.0, top_k=50)

GPT.generate (gpt2/model.py) already reads the prompt once and each new token against a cache.
At batch 1 that is still bound by the host: a 124M step is hundreds of small kernels, each
launched from Python. So here, on a GPU, one decode step (GPT.cached_step, compiled by Inductor,
then the sampling) is recorded once as a CUDA graph, and each new token is one replay of it: the
graph reads its token and position from fixed buffers, writes the cache, draws the next token,
stores it and advances the position, with no Python between two tokens. The prompt is read by one
call of the same step compiled for any prompt length (dynamic shapes, no CUDA graph: a prompt
length would be a graph of its own).

Tokens are those of GPT.generate, also when sampled: the graph's draws come from the default CUDA
generator's stream as eager ones do (an explicit `generator` is drawn from eagerly, step by step).
Past the cache's size the window slides with a full forward per token, as there.
"""

import torch

from gpt2.model import GPT, KVCache, sample_next

RECOMPILE_LIMIT = 256  # compilations of GPT.cached_step a process may make (Decoders x 2)


class Decoder:
    """Batched generation for `model` with a cache of `batch` rows x `size` positions in `dtype`.

    `compile` (on a GPU): Inductor compiles the step and each (temperature, top_k) gets one CUDA
    graph, recorded on first use (that call's untimed set-up)."""

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
        device = self.model.lm_head.weight.device
        self.graphed = compile and device.type == "cuda"
        self.step = model.cached_step
        if self.graphed:
            # Every Decoder compiles GPT.cached_step again (its model, batch and cache size, and a
            # prompt read): Dynamo's default of 8 compilations of one function would refuse the
            # ninth Decoder of a process with an error.
            limit = torch._dynamo.config.recompile_limit
            torch._dynamo.config.recompile_limit = max(limit, RECOMPILE_LIMIT)
            self.step = torch.compile(model.cached_step, fullgraph=True, dynamic=False)
            self.prefill = torch.compile(model.cached_step, fullgraph=True, dynamic=True)
            # What the graph reads and writes besides the cache: the token it is given, the
            # cache position of that token, and every token it draws (column = that position).
            self.token = torch.zeros(batch, 1, dtype=torch.long, device=device)
            self.pos = torch.zeros(1, dtype=torch.long, device=device)
            self.drawn = torch.zeros(batch, self.cache.size, dtype=torch.long, device=device)
            self.graphs: dict[tuple[float, int], torch.cuda.CUDAGraph] = {}
            self.pool = torch.cuda.graph_pool_handle()

    def _autocast(self):
        device = self.model.lm_head.weight.device.type
        enabled = self.dtype is not None and self.dtype != self.model.lm_head.weight.dtype
        return torch.autocast(device, dtype=self.dtype, enabled=enabled)

    def _decode_one(self, temperature: float, top_k: int) -> None:
        """The graph's body: one token in at self.pos, the next one drawn and stored, pos + 1."""
        cache = self.cache
        with self._autocast():
            logits = self.step(self.token, self.pos, cache.layers, cache.pad)
        next_id = sample_next(logits, temperature, top_k)
        self.drawn.index_copy_(1, self.pos, next_id)
        self.token.copy_(next_id)
        self.pos.add_(1)

    def _graph(self, temperature: float, top_k: int) -> torch.cuda.CUDAGraph:
        """The recorded step for these sampling settings. Recording runs the step (compiling it)
        on scratch positions and draws random numbers: the generator's state and the cache are
        put back, so nothing of it shows in what generate returns."""
        key = (float(temperature), int(top_k))
        if key in self.graphs:
            return self.graphs[key]
        rng = torch.cuda.get_rng_state()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # compile, then settle Inductor's and cuBLAS's work spaces
                self.pos.zero_()
                self._decode_one(*key)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self._decode_one(*key)
        torch.cuda.synchronize()
        torch.cuda.set_rng_state(rng)
        self.graphs[key] = graph
        return graph

    def _reset(self, pad: torch.Tensor | None) -> None:
        cache = self.cache
        cache.length = 0
        B = cache.pad.numel()
        cache.pad.copy_(torch.zeros(B, dtype=torch.long) if pad is None else pad)
        for layer in cache.layers:  # a fresh cache: nothing of an earlier call is visible anyway
            for t in layer.values():
                t.zero_()

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
        if max_new_tokens <= 0:
            return idx
        graph = self._graph(temperature, top_k) if self.graphed and generator is None else None
        self._reset(pad)
        events = [] if timings is not None and idx.device.type == "cuda" else None

        def mark() -> None:
            if events is not None:
                events.append(torch.cuda.Event(enable_timing=True))
                events[-1].record()

        mark()
        with self._autocast():
            logits = model.forward_cached(idx, cache, self.prefill if graph is not None else None)
        out = [idx, sample_next(logits, temperature, top_k, generator)]
        mark()
        steps = min(max_new_tokens - 1, cache.size - cache.length)  # those within the cache
        if graph is not None:
            self.token.copy_(out[-1])
            self.pos.fill_(cache.length)
            for _ in range(steps):
                graph.replay()
                mark()
            out.append(self.drawn[:, cache.length : cache.length + steps].clone())
        else:
            pos = torch.full((1,), cache.length, dtype=torch.long, device=idx.device)
            for _ in range(steps):
                with self._autocast():
                    logits = self.step(out[-1], pos, cache.layers, cache.pad)
                out.append(sample_next(logits, temperature, top_k, generator))
                pos += 1
                mark()
        cache.length += steps
        for _ in range(max_new_tokens - 1 - steps):  # past the cache: the window slides, recomputed
            window = torch.cat(out, dim=1)[:, -model.config.block_size :]  # (learned positions)
            with self._autocast():
                logits = model(window)[0][:, -1, :]
            out.append(sample_next(logits, temperature, top_k, generator))
            mark()
        if events is not None:
            torch.cuda.synchronize()
            timings.extend(a.elapsed_time(b) for a, b in zip(events, events[1:], strict=False))
        return torch.cat(out, dim=1)
