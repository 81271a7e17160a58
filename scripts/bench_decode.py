"""Generation speed: the full-window path, the cached path, the compiled decoder, and HF's generate.

    python -m scripts.bench_decode --model gpt2 --attention dense --attention mla \\
        --shape 128x1 --shape 128x64 --shape 896x1 --shape 896x16 --hf --out decode.jsonl

Random weights in bf16 on one GPU, PROMPTxBATCH prompts of random tokens, --new tokens sampled
with top-k 50 (every path draws the same number: no early stop). For each shape:

  full       GPT.generate(cache=False): a forward over the whole window for every token
  cache      GPT.generate: the prompt once, then one position a token (eager)
  compiled   gpt2/decode.Decoder: the same, each token one replay of a CUDA graph of the compiled
             step and its sampling (recorded once per shape, untimed), with per-token p50/p95
             from CUDA events
  hf         transformers' GPT2LMHeadModel.generate with its cache, on the same weights exported
             through scripts/export_hf's layout (dense only)

tokens/s is batch x new tokens over the generation's wall time (prompt read included). Each line
also holds the cache's measured bytes per token beside gpt2/model.py's analytic figure.
--capacity finds, per attention, the largest batch whose cache (context = the block size) and one
decode step fit in the GPU's memory, by trying; then it times the compiled decoder serving half
that batch (a cache of the full context, --serve-prompt-token prompts, the rest of the memory left
to the prompt read and the sampling): what a smaller cache buys in tokens/s.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from gpt2.decode import Decoder
from gpt2.model import GPT, GPT2_VOCAB_SIZE, GPTConfig
from lib.measure.inference import percentile

TOP_K = 50


def build(model: str, attention: str, latent: int) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig.from_name(model, ra_mla=attention == "mla", ra_mla_latent_dim=latent)
    return GPT(config).to("cuda", torch.bfloat16).eval()


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def hf_model(model: GPT):
    try:
        from transformers import GPT2LMHeadModel
    except ImportError:
        print("note: transformers is not installed: no HF figures (pip install -e '.[hf]')", flush=True)
        return None

    from gpt2.hf import export_hf

    folder = Path(tempfile.mkdtemp(prefix="bench-decode-hf-"))
    export_hf(model, folder)
    return GPT2LMHeadModel.from_pretrained(folder).to("cuda", torch.bfloat16).eval()


def capacity(model: GPT, limit: int = 1 << 16) -> int:
    """The largest batch whose full-context cache and one decode step fit (0: none)."""

    def fits(batch: int) -> bool:
        try:
            decoder = Decoder(model, batch, dtype=torch.bfloat16, compile=False)
            pos = torch.zeros(1, dtype=torch.long, device="cuda")
            model.cached_step(
                torch.zeros(batch, 1, dtype=torch.long, device="cuda"),
                pos,
                decoder.cache.layers,
                decoder.cache.pad,
            )
            torch.cuda.synchronize()
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            decoder = None
            torch.cuda.empty_cache()

    lo, hi = 0, 1
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def time_shape(
    args, model: GPT, hf, idx: torch.Tensor, base: dict, paths: set, emit, size: int | None = None
) -> None:
    """Every path's figures for one prompt x batch (the compiled decoder's cache: `size` positions,
    default the prompt and the new tokens)."""
    batch, new = idx.size(0), args.new
    tokens = batch * new
    for path in ("full", "cache"):
        if path in paths:
            seconds = timed(
                lambda p=path: model.generate(idx, new, 1.0, TOP_K, cache=p == "cache"), args.repeats
            )
            emit({**base, "path": path, "tokens_per_sec": tokens / seconds, "seconds": seconds})
    if "compiled" in paths:
        size = size or idx.size(1) + new
        decoder = Decoder(model, batch, size, dtype=torch.bfloat16, compile=True)
        started = time.perf_counter()
        decoder.generate(idx, new, 1.0, TOP_K)  # compiles (and records the graph)
        compile_seconds = time.perf_counter() - started
        seconds = timed(lambda: decoder.generate(idx, new, 1.0, TOP_K), args.repeats)
        steps: list[float] = []
        decoder.generate(idx, new, 1.0, TOP_K, timings=steps)
        decode = steps[1:]  # the first is the prompt's read
        emit(
            {
                **base,
                "path": "compiled",
                "tokens_per_sec": tokens / seconds,
                "seconds": seconds,
                "prompt_ms": steps[0],
                "p50_ms_per_token": statistics.median(decode),
                "p95_ms_per_token": percentile(decode, 0.95),
                "decode_tokens_per_sec": 1000 * batch / statistics.median(decode),
                "compile_seconds": compile_seconds,
                "cache_bytes_per_token": decoder.cache.nbytes() / (batch * decoder.cache.size),
                "analytic_bytes_per_token": 2 * model.config.kv_cache_values_per_token(),
            }
        )
    if hf is not None:

        def run_hf():
            hf.generate(
                idx,
                attention_mask=torch.ones_like(idx),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=True,
                top_k=TOP_K,
                use_cache=True,
                pad_token_id=GPT2_VOCAB_SIZE - 1,
            )

        seconds = timed(run_hf, args.repeats)
        emit({**base, "path": "hf", "tokens_per_sec": tokens / seconds, "seconds": seconds})


def bench_model(args, name: str, attention: str, paths: set, emit) -> None:
    model = build(name, attention, args.latent)
    hf = hf_model(model) if "hf" in paths and attention == "dense" else None
    for shape in args.shape or ["128x1"]:
        prompt, batch = map(int, shape.split("x"))
        idx = torch.randint(0, GPT2_VOCAB_SIZE, (batch, prompt), device="cuda")
        base = {"model": name, "attention": attention, "prompt": prompt, "batch": batch, "new": args.new}
        time_shape(args, model, hf, idx, base, paths, emit)
        torch.cuda.empty_cache()
    if args.capacity:
        context = model.config.block_size
        most = capacity(model)
        emit({"model": name, "attention": attention, "context": context, "max_batch": most})
        batch = max(1, most // 2 // 8 * 8)
        idx = torch.randint(0, GPT2_VOCAB_SIZE, (batch, args.serve_prompt), device="cuda")
        base = {"model": name, "attention": attention, "prompt": args.serve_prompt, "batch": batch}
        base |= {"new": args.new, "serving": f"half of the {most} rows that fit a {context}-token cache"}
        time_shape(args, model, None, idx, base, {"compiled"}, emit, size=context)


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", action="append", help="gpt2, gpt2-medium, ... (default gpt2)")
    p.add_argument("--attention", action="append", choices=("dense", "mla"), help="default: dense")
    p.add_argument("--latent", type=int, default=128, help="MLA's latent (RA_MLA_LATENT_DIM)")
    p.add_argument("--shape", action="append", help="PROMPTxBATCH (default 128x1)")
    p.add_argument("--new", type=int, default=128, help="tokens generated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--paths", default="full,cache,compiled,hf", help="which paths to time")
    p.add_argument("--capacity", action="store_true", help="the largest batch that fits, and serving half")
    p.add_argument("--serve-prompt", type=int, default=16, help="--capacity's prompt tokens")
    p.add_argument("--out", help="append JSON lines here")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: bench_decode needs a CUDA GPU", file=sys.stderr)
        return 2
    paths = set(args.paths.split(","))

    def emit(record: dict) -> None:
        print(json.dumps(record), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")

    for name in args.model or ["gpt2"]:
        for attention in args.attention or ["dense"]:
            bench_model(args, name, attention, paths, emit)
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
