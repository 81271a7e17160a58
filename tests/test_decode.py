"""Incremental decoding with a KVCache: token for token what the full-window path generates."""

import io

import pytest
import torch

from gpt2.decode import Decoder
from gpt2.model import GPT, GPT2_VOCAB_SIZE, GPTConfig

ATTENTIONS = {
    "dense": {},
    "mla": {"ra_mla": True, "ra_mla_latent_dim": 16},
    "ra_mla": {"ra_mla": True, "ra_mla_latent_dim": 16, "ra_mla_ra_alpha": 0.5, "ra_mla_ra_window": 4},
    "ra_mla_shared": {
        "ra_mla": True,
        "ra_mla_latent_dim": 16,
        "ra_mla_ra_alpha": 0.3,
        "ra_mla_per_head_q_latent": False,
        "ra_mla_per_head_v_up": False,
    },
}


def model_of(kind: str, seed: int = 0) -> GPT:
    """A small model whose attention is far from uniform (GPT-2's init gives near-zero scores, under
    which any mistake in them, a missing reciprocal term say, would not show in the logits)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=24, **ATTENTIONS[kind])).eval()
    with torch.no_grad():
        for block in model.transformer.h:
            for name, p in block.attn.named_parameters():
                if not name.startswith("c_proj"):
                    p.mul_(6.0)
    return model


def both(model: GPT, idx: torch.Tensor, new: int, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    out = []
    for cache in (False, True):
        out.append(model.generate(idx, new, cache=cache, generator=torch.Generator().manual_seed(7), **kw))
    return out[0], out[1]


def test_a_sampled_token_is_the_one_torch_multinomial_draws_from_the_same_generator():
    """sample_next's sync-free draw (which a CUDA graph can hold) is multinomial's own, token for
    token: generations seeded before it came are the same."""
    from gpt2.model import sample_next

    logits = torch.randn(6, GPT2_VOCAB_SIZE + 47, generator=torch.Generator().manual_seed(1)) * 3
    for temperature, top_k in [(1.0, 0), (0.7, 50), (1.3, 5)]:
        for seed in range(5):
            got = sample_next(logits, temperature, top_k, torch.Generator().manual_seed(seed))
            scaled = logits[:, :GPT2_VOCAB_SIZE] / temperature
            if top_k:
                kth = torch.topk(scaled, top_k).values[:, -1:]
                scaled = scaled.masked_fill(scaled < kth, float("-inf"))
            probs = torch.softmax(scaled, dim=-1)
            want = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))
            assert torch.equal(got, want)
            assert (got < GPT2_VOCAB_SIZE).all()


@pytest.mark.parametrize("kind", ATTENTIONS)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cached_generation_is_the_full_window_generation_token_for_token(kind, temperature):
    model = model_of(kind)
    idx = torch.randint(0, GPT2_VOCAB_SIZE, (3, 5), generator=torch.Generator().manual_seed(1))
    # 30 new tokens: past the 24-token block the window slides (recomputed) in both paths
    plain, cached = both(model, idx, 30, temperature=temperature, top_k=40)
    assert torch.equal(plain, cached)
    assert plain.shape == (3, 35) and int(plain.max()) < GPT2_VOCAB_SIZE


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_the_cache_gives_the_full_forwards_logits_at_every_step(kind):
    model = model_of(kind)
    idx = torch.randint(0, GPT2_VOCAB_SIZE, (2, 24), generator=torch.Generator().manual_seed(2))
    cache = model.new_cache(2)
    with torch.no_grad():
        got = [model.forward_cached(idx[:, :6], cache)]
        got += [model.forward_cached(idx[:, t : t + 1], cache) for t in range(6, 24)]
        want = [model(idx[:, : t + 1])[0][:, -1] for t in range(5, 24)]
    for t, (a, b) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=f"position {t + 5}")
    assert cache.length == cache.size == 24
    with pytest.raises(ValueError, match="do not fit a cache of 24"):
        model.forward_cached(idx[:, :1], cache)


@pytest.mark.parametrize("kind", ["dense", "ra_mla"])
def test_prompts_of_different_lengths_left_padded_decode_as_each_alone(kind):
    model = model_of(kind)
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, GPT2_VOCAB_SIZE, (n,), generator=gen) for n in (7, 2, 5)]
    width = max(len(p) for p in prompts)
    pad = torch.tensor([width - len(p) for p in prompts])
    batch = torch.stack([torch.cat([torch.full((width - len(p),), 50256), p]) for p in prompts])
    out = model.generate(batch, 12, temperature=0.0, pad=pad)
    for row, p in enumerate(prompts):
        alone = model.generate(p[None], 12, temperature=0.0, cache=False)
        assert torch.equal(out[row, pad[row] :], alone[0]), f"row {row}"


def test_a_pruned_model_read_back_from_a_checkpoint_decodes_exactly_and_stays_pruned():
    model = model_of("ra_mla")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "wte" not in name and "wpe" not in name:
                p.mul_(p.abs() > p.abs().median())  # 50% magnitude pruning
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    loaded = model_of("ra_mla", seed=1)
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    zeros = {n: (p == 0).clone() for n, p in loaded.named_parameters()}
    idx = torch.randint(0, GPT2_VOCAB_SIZE, (2, 4), generator=torch.Generator().manual_seed(4))
    plain, cached = both(loaded, idx, 15, temperature=0.8, top_k=20)
    assert torch.equal(plain, cached)
    assert all(torch.equal(p == 0, zeros[n]) for n, p in loaded.named_parameters())


@pytest.mark.parametrize("kind", ["dense", "ra_mla"])
def test_a_bf16_cache_stays_within_bf16_of_the_full_forward(kind):
    model = model_of(kind).to(torch.bfloat16)
    idx = torch.randint(0, GPT2_VOCAB_SIZE, (2, 8), generator=torch.Generator().manual_seed(5))
    cache = model.new_cache(2)
    with torch.no_grad():
        model.forward_cached(idx[:, :7], cache)
        step = model.forward_cached(idx[:, 7:], cache).float()
        full = model(idx)[0][:, -1].float()
    assert cache.layers[0][next(iter(cache.layers[0]))].dtype == torch.bfloat16
    torch.testing.assert_close(step, full, rtol=0, atol=0.05)


def test_the_cache_holds_what_the_analytic_figure_says():
    for kind in ("dense", "mla"):
        model = model_of(kind)
        cache = model.new_cache(3, 10, dtype=torch.bfloat16)
        per_token = cache.nbytes() / (3 * 10)
        assert per_token == 2 * model.config.kv_cache_values_per_token()


@pytest.mark.parametrize("kind", ["dense", "mla", "ra_mla"])
def test_the_decoder_generates_what_generate_does_and_is_reusable(kind):
    """The serving path (gpt2/decode.py; compiled on a GPU, tests/test_gpu.py) takes the same
    steps: one prompt read, one cached_step a token, the sliding window past the cache."""
    model = model_of(kind)
    decoder = Decoder(model, batch=3, compile=False)
    gen = torch.Generator().manual_seed(6)
    for new in (10, 30):  # 30: past the 24-token block
        idx = torch.randint(0, GPT2_VOCAB_SIZE, (3, 6), generator=gen)
        want = model.generate(idx, new, temperature=1.0, top_k=30, generator=torch.Generator().manual_seed(8))
        got = decoder.generate(
            idx, new, temperature=1.0, top_k=30, generator=torch.Generator().manual_seed(8)
        )
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="2 prompts for a decoder of batch 3"):
        decoder.generate(idx[:2], 4)
