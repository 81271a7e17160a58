"""GPT-2: the network, and nothing else.

Pre-LayerNorm transformer blocks (attention, then a 4x GELU MLP), learned
position embeddings, and an output head tied to the token embedding, in the
shapes of OpenAI's four released sizes plus a tiny one for CPUs. Read top to
bottom: GPTConfig, CausalSelfAttention, LatentAttention (the RA+MLA option), MLP,
Block, GPT.
"""

import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lib.convert.fused_loss import linear_cross_entropy
from lib.train.settings import ModelSettings

GPT2_VOCAB_SIZE = 50257
"""Tokens of the GPT-2 BPE (tiktoken "gpt2"); token 50256 is <|endoftext|>."""
DEFAULT_MODEL = ModelSettings()

SIZES = {
    # name: (n_layer, n_head, n_embd)
    "gpt2-tiny": (4, 4, 128),
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class GPTConfig(ModelSettings):
    """The network: what the user chose for it (ModelSettings, lib/train/settings.py: block size,
    dropout, bias, weight tying, flash attention, activation checkpointing, fused loss, RA+MLA; one
    field, one name, from the Kconfig symbol to here) and the shape those choices name.

    from_name and from_settings take the shape from SIZES; an HF folder's config (gpt2/hf.py) gives
    its own, and the shape fields, not `name`, are what the network is. `vocab_size` may exceed
    GPT2_VOCAB_SIZE (padding, never sampled)."""

    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int = 50304

    def __post_init__(self) -> None:
        ModelSettings.__post_init__(self)  # slots=True: no zero-argument super()
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head}")
        if self.vocab_size < GPT2_VOCAB_SIZE:
            raise ValueError(f"vocab_size={self.vocab_size} < GPT-2's {GPT2_VOCAB_SIZE} tokens")

    @property
    def latent(self) -> int:
        """MLA's latent width (RA_MLA_LATENT_DIM), 0 for plain attention."""
        return self.ra_mla_latent_dim if self.ra_mla else 0

    def kv_cache_values_per_token(self) -> int:
        """Values a generation cache keeps per token: keys and values, or MLA's shared latent."""
        return self.n_layer * (self.latent or 2 * self.n_embd)

    @classmethod
    def from_settings(cls, m: ModelSettings) -> "GPTConfig":
        """The network `m` (a run's Settings.model) describes: its fields as they are, its shape
        from its size name (GPT2_MODEL_NAME) and GPT2_PAD_VOCAB."""
        return cls.from_name(**{f.name: getattr(m, f.name) for f in fields(m)})

    @classmethod
    def from_name(cls, name: str, **kwargs) -> "GPTConfig":
        """The config of a named size, other fields as `kwargs` give them; pad_vocab (the default)
        rounds the vocabulary up to a multiple of 64."""
        if name not in SIZES:
            raise ValueError(f"unknown model size {name!r}; choose one of {', '.join(SIZES)}")
        n_layer, n_head, n_embd = SIZES[name]
        pad = kwargs.get("pad_vocab", DEFAULT_MODEL.pad_vocab)
        vocab = 64 * math.ceil(GPT2_VOCAB_SIZE / 64) if pad else GPT2_VOCAB_SIZE
        return cls(name=name, n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab, **kwargs)


@dataclass
class KVCache:
    """What incremental decoding keeps of the tokens seen so far, per layer, for `batch` rows of up
    to `size` positions: keys and values (dense attention), or MLA's latent (and, with reciprocal
    attention, the queries the reciprocal scores of a new token need). Rows are left-padded to one
    length: row b's first `pad[b]` positions are padding, masked from every real token."""

    layers: list[dict[str, torch.Tensor]]
    pad: torch.Tensor  # (batch,) long
    length: int = 0  # positions filled, the same for every row

    @property
    def size(self) -> int:
        return next(iter(self.layers[0].values())).size(-2)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.layers for t in layer.values())


def cached_mask(pad: torch.Tensor, pos: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 1, T, size) booleans: which cache position j each new query at pos[t] may see: itself and
    earlier, but no padding (a padding query sees itself only, so its softmax stays finite).
    Shapes depend on T and the cache's size only, never on the position: one compiled step serves
    every position."""
    i = pos[:, None]
    j = torch.arange(size, device=pos.device)[None, :]
    real = j[None] >= pad[:, None, None]
    return ((j <= i)[None] & (real | (j == i)[None]))[:, None]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which a token sees only itself and earlier tokens."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.flash = config.flash_attention
        # One matmul yields queries, keys and values for all heads at once.
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        if not self.flash:
            mask = torch.tril(torch.ones(config.block_size, config.block_size, dtype=torch.bool))
            self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        dropout = self.dropout if self.training else 0.0
        if self.flash:
            # Fused kernels (flash / memory-efficient): the T x T matrix never exists.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
            att = att.masked_fill(~self.causal_mask[:T, :T], float("-inf"))
            att = F.dropout(F.softmax(att, dim=-1), p=dropout, training=self.training)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def new_cache(self, batch: int, size: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
        D = self.c_attn.in_features // self.n_head
        shape = (batch, self.n_head, size, D)
        return {
            "k": torch.zeros(shape, dtype=dtype, device=device),
            "v": torch.zeros(shape, dtype=dtype, device=device),
        }

    def forward_cached(
        self, x: torch.Tensor, cache: dict, pos: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """x (B, T, C): the tokens at positions `pos`, written into the cache, attending to it."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        cache["k"].index_copy_(2, pos, k.to(cache["k"].dtype))
        cache["v"].index_copy_(2, pos, v.to(cache["v"].dtype))
        keys, values = cache["k"].to(q.dtype), cache["v"].to(q.dtype)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


def reciprocal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, alpha: float, window: int, dropout: float = 0.0
) -> torch.Tensor:
    """Causal attention whose score of (i, j) inside the window is (1 - alpha) S_ij + alpha S_ji.

    S_ji = q_j . k_i is the reciprocal score: how much the earlier token j's query
    looks for token i. For j <= i both depend on tokens up to i only, and every j > i
    is masked after mixing, so no token sees the future. q, k, v: (B, H, T, D).
    """
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    i = torch.arange(T, device=q.device)[:, None]
    j = torch.arange(T, device=q.device)[None, :]
    local = (j <= i) & (i - j < window)
    mixed = torch.where(local, (1.0 - alpha) * scores + alpha * scores.transpose(-2, -1), scores)
    att = F.softmax(mixed.masked_fill(j > i, float("-inf")), dim=-1)
    return F.dropout(att, p=dropout, training=dropout > 0) @ v


class LatentAttention(nn.Module):
    """Multi-head latent attention: keys and values come from one low-rank latent of the input.

    A cache for generation needs only the latent's RA_MLA_LATENT_DIM values per token and layer
    instead of 2 x n_embd. With ra_mla_ra_alpha > 0 the scores near the diagonal are mixed
    with their reciprocals (reciprocal_attention), which needs the explicit T x T
    scores; ra_mla_ra_alpha = 0 is plain MLA through the fused kernels.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        C, L = config.n_embd, config.latent
        self.n_head, self.head_dim = config.n_head, C // config.n_head
        self.dropout = config.dropout
        self.alpha, self.window = config.ra_mla_ra_alpha, config.ra_mla_ra_window
        self.kv_down = nn.Linear(C, L, bias=config.bias)
        self.k_up = nn.Linear(L, C, bias=config.bias)
        self.v_per_head = config.ra_mla_per_head_v_up
        self.v_up = nn.Linear(L, C if self.v_per_head else self.head_dim, bias=config.bias)
        if config.ra_mla_per_head_q_latent:
            self.q_down = nn.Linear(C, L, bias=config.bias)
            self.q_up = nn.Linear(L, C, bias=config.bias)
        else:
            self.q_proj = nn.Linear(C, C, bias=config.bias)
        self.c_proj = nn.Linear(C, C, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        H, D = self.n_head, self.head_dim
        latent = self.kv_down(x)  # (B, T, L): all a KV cache would keep
        k = self.k_up(latent).view(B, T, H, D).transpose(1, 2)
        v = self.v_up(latent)
        v = (v.view(B, T, H, D) if self.v_per_head else v.view(B, T, 1, D).expand(B, T, H, D)).transpose(1, 2)
        q = self.q_up(self.q_down(x)) if hasattr(self, "q_up") else self.q_proj(x)
        q = q.view(B, T, H, D).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        if self.alpha > 0:
            y = reciprocal_attention(q, k, v, self.alpha, self.window, dropout)
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def _query_source(self, x: torch.Tensor) -> torch.Tensor:
        """What a cache keeps of a token's query: its latent (q_down), or the query itself."""
        return self.q_down(x) if hasattr(self, "q_up") else self.q_proj(x)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, _ = t.shape
        return t.view(B, T, self.n_head, self.head_dim).transpose(1, 2)

    def new_cache(self, batch: int, size: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
        cache = {"latent": torch.zeros(batch, size, self.kv_down.out_features, dtype=dtype, device=device)}
        if self.alpha > 0:  # a new token's reciprocal scores need the queries of the window before it
            width = self.q_down.out_features if hasattr(self, "q_up") else self.q_proj.out_features
            cache["query"] = torch.zeros(batch, size, width, dtype=dtype, device=device)
        return cache

    def forward_cached(
        self, x: torch.Tensor, cache: dict, pos: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """x (B, T, C): the tokens at positions `pos`. Attention is computed in the latent space
        (the up-projections absorbed into the queries and outputs), so a step reads the latent's
        values a cached token, not the 2 x n_embd of its keys and values."""
        B, T, C = x.shape
        H, D, L = self.n_head, self.head_dim, self.kv_down.out_features
        cache["latent"].index_copy_(1, pos, self.kv_down(x).to(cache["latent"].dtype))
        latent = cache["latent"].to(x.dtype)  # (B, S, L)
        source = self._query_source(x)
        q = self._heads(self.q_up(source) if hasattr(self, "q_up") else source)  # (B, H, T, D)
        w_k = self.k_up.weight.view(H, D, L)
        q_latent = torch.einsum("bhtd,hdl->bhtl", q, w_k)  # q . k_up(l) = (q W_k) . l
        scale = 1.0 / math.sqrt(D)
        S = latent.size(1)

        def over_cache(a: torch.Tensor, cached: torch.Tensor) -> torch.Tensor:
            """(B, H, T, X) x (B, S, X) -> (B, H, T, S), heads folded into one batched matmul: the
            cache is read once a row, never copied per head."""
            return (a.reshape(B, H * T, -1) @ cached.transpose(1, 2)).view(B, H, T, S)

        scores = over_cache(q_latent, latent) * scale  # (B, H, T, S)
        if self.alpha > 0:
            if self.k_up.bias is not None:  # q . b_k: the same for every key of a row, kept for RA
                scores = scores + (q * self.k_up.bias.view(H, D)[:, None]).sum(-1, keepdim=True) * scale
            cache["query"].index_copy_(1, pos, source.to(cache["query"].dtype))
            sources = cache["query"].to(x.dtype)  # (B, S, Lq or C)
            k_new = self._heads(self.k_up(self.kv_down(x)))  # the new tokens' keys (B, H, T, D)
            if hasattr(self, "q_up"):  # q_j . k_i = s_j . (W_q^T k_i) + b_q . k_i
                w_q = self.q_up.weight.view(H, D, -1)
                reciprocal = over_cache(torch.einsum("bhtd,hdl->bhtl", k_new, w_q), sources)
                if self.q_up.bias is not None:
                    reciprocal = reciprocal + (k_new * self.q_up.bias.view(H, D)[:, None]).sum(
                        -1, keepdim=True
                    )
            else:
                reciprocal = k_new @ self._heads(sources).transpose(-2, -1)
            i = pos[:, None]
            j = torch.arange(S, device=x.device)[None, :]
            local = (j <= i) & (i - j < self.window)
            scores = torch.where(local, (1.0 - self.alpha) * scores + self.alpha * reciprocal * scale, scores)
        att = F.softmax(scores.masked_fill(~mask, float("-inf")).float(), dim=-1).to(latent.dtype)
        out_latent = (att.view(B, H * T, S) @ latent).view(B, H, T, L)
        # out_latent (B, H, T, L): the attention-weighted latents; v_up applied after (rows sum to 1)
        if self.v_per_head:
            y = torch.einsum("bhtl,hdl->bhtd", out_latent, self.v_up.weight.view(H, D, L))
            if self.v_up.bias is not None:
                y = y + self.v_up.bias.view(H, D)[:, None]
        else:
            y = self.v_up(out_latent)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    """The position-wise feed-forward network: expand 4x, GELU, project back."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's own GELU approximation
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """A pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = LatentAttention(config) if config.ra_mla else CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def forward_cached(
        self, x: torch.Tensor, cache: dict, pos: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        x = x + self.attn.forward_cached(self.ln_1(x), cache, pos, mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """The GPT-2 language model (parameter names follow HF's GPT2LMHeadModel)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.weight_tying:
            # One matrix embeds tokens and scores them (Press & Wolf, 2017).
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2 scales the init of each residual branch's output projection by
        # 1/sqrt(2 * n_layer) so the residual stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once); non_embedding drops the position table."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, all_positions: bool = False
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """idx (B, T) token ids -> (logits, loss).

        With targets (B, T): (None, mean loss). The logits stay inside: returned from
        a compiled graph they would be kept as a 16-bit copy beside what backward
        needs (6 GB more at 32 x 1024 tokens, docs/benchmarks.md).
        Without targets: (logits, None), of the last position only (B, 1, vocab),
        all generation needs, or of every position (B, T, vocab) with all_positions.
        """
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        recompute = self.config.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.transformer.h:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x if all_positions else x[:, [-1], :]), None
        if self.config.fused_loss:
            return None, linear_cross_entropy(x, self.lm_head.weight, targets)
        logits = self.lm_head(x)
        return None, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12 L H Q T."""
        c = self.config
        return 6 * self.num_params(non_embedding=True) + 12 * c.n_layer * c.n_embd * c.block_size

    def new_cache(
        self,
        batch: int,
        size: int | None = None,
        dtype: torch.dtype | None = None,
        pad: torch.Tensor | None = None,
    ) -> KVCache:
        """An empty KVCache for `batch` rows of up to `size` positions (default block_size), in
        `dtype` (default the weights'); `pad` (batch,): left-padding positions of each row."""
        size = self.config.block_size if size is None else size
        if size > self.config.block_size:
            raise ValueError(f"a cache of {size} positions exceeds block_size {self.config.block_size}")
        weight = self.lm_head.weight
        dtype = weight.dtype if dtype is None else dtype
        layers = [block.attn.new_cache(batch, size, dtype, weight.device) for block in self.transformer.h]
        pad = (
            torch.zeros(batch, dtype=torch.long, device=weight.device)
            if pad is None
            else pad.to(weight.device)
        )
        return KVCache(layers, pad)

    def forward_cached(self, idx: torch.Tensor, cache: KVCache, step=None) -> torch.Tensor:
        """idx (B, T): the next T tokens of every row, after the cache's; their logits at the last
        position (B, vocab). The cache takes them in. `step`: cached_step or a compiled copy."""
        T = idx.size(1)
        if cache.length + T > cache.size:
            raise ValueError(f"{cache.length + T} positions do not fit a cache of {cache.size}")
        pos = torch.arange(cache.length, cache.length + T, device=idx.device)
        logits = (step or self.cached_step)(idx, pos, cache.layers, cache.pad)
        cache.length += T
        return logits

    def cached_step(
        self, idx: torch.Tensor, pos: torch.Tensor, layers: list[dict], pad: torch.Tensor
    ) -> torch.Tensor:
        """forward_cached's computation, of tensors only (positions `pos` (T,) included): its shapes
        never depend on the position, so torch.compile makes one graph (CUDA graphs: one replay a
        token) for every decode step."""
        positions = (pos[None, :] - pad[:, None]).clamp(min=0)
        x = self.transformer.wte(idx) + self.transformer.wpe(positions)
        mask = cached_mask(pad, pos, next(iter(layers[0].values())).size(-2))
        for block, layer in zip(self.transformer.h, layers, strict=True):
            x = block.forward_cached(x, layer, pos, mask)
        return self.lm_head(self.transformer.ln_f(x[:, -1, :]))

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        *,
        cache: bool = True,
        pad: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend idx (B, T) by max_new_tokens, sampled (temperature 0: the most likely token);
        padded vocabulary rows are never drawn.

        With `cache` (default) the prompt is read once and each new token is one position of
        work (KVCache); without it every token is a forward over the whole window. Both give the
        same tokens. Past block_size the window slides and is recomputed for every token (a
        cache cannot slide: positions are learned). `pad` (B,) left-padding of each row (prompts
        of different lengths, padded on the left to one length; cache only).
        """
        if pad is not None and not cache:
            raise ValueError("left-padded prompts (pad) need the cache")
        block = self.config.block_size
        state = None
        if cache and idx.size(1) < block:
            state = self.new_cache(idx.size(0), min(block, idx.size(1) + max_new_tokens), pad=pad)
        logits = None
        for _ in range(max_new_tokens):
            if state is not None and state.length < state.size:
                logits = self.forward_cached(idx[:, state.length :], state)
            else:
                logits = self(idx[:, -block:])[0][:, -1, :]
            next_id = sample_next(logits, temperature, top_k, generator)
            idx = torch.cat((idx, next_id), dim=1)
        return idx


def sample_next(
    logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, 1) next tokens from last-position logits (B, vocab): the padded vocabulary rows never.

    The draw is torch.multinomial's for one sample (probabilities over exponential noise, argmax:
    the same tokens from the same generator state) without multinomial's host-side check of the
    probabilities, so it never waits for the GPU and a CUDA graph can hold it (gpt2/decode.py)."""
    logits = logits[:, :GPT2_VOCAB_SIZE].float()
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    noise = torch.empty_like(probs).exponential_(1, generator=generator)
    return (probs / noise).argmax(dim=-1, keepdim=True)


def attention_sizes(config: GPTConfig) -> dict:
    """Parameters and generation-cache bytes per token (16-bit) of this shape and of the dense GPT-2's."""
    dense = replace(config, ra_mla=False)
    with torch.device("meta"):
        params, dense_params = GPT(config).num_params(), GPT(dense).num_params()
    return {
        "kind": "ra_mla" if config.ra_mla else "dense",
        "params": params,
        "dense_params": dense_params,
        "kv_cache_bytes_per_token": 2 * config.kv_cache_values_per_token(),
        "dense_kv_cache_bytes_per_token": 2 * dense.kv_cache_values_per_token(),
    }
