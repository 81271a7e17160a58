"""GPT-2 shapes, sizes, causality, attention paths and sampling."""

import dataclasses

import pytest
import torch

from gpt2.model import GPT, GPT2_VOCAB_SIZE, SIZES, GPTConfig


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, **kw))


def test_gpt2_124m_has_hf_parameter_count():
    model = GPT(GPTConfig.from_name("gpt2", pad_vocab=False))
    assert model.num_params() == 124_439_808


@pytest.mark.parametrize(
    "name, millions", [("gpt2-medium", 354.8), ("gpt2-large", 774.0), ("gpt2-xl", 1557.6)]
)
def test_larger_sizes_have_official_shapes(name, millions):
    n_layer, n_head, n_embd = SIZES[name]
    c = GPTConfig.from_name(name, pad_vocab=False)
    # Count analytically: building 1.5B parameters on a CI runner would take minutes.
    per_block = 12 * n_embd**2 + 13 * n_embd
    total = n_layer * per_block + (GPT2_VOCAB_SIZE + c.block_size) * n_embd + 2 * n_embd
    assert (c.n_layer, c.n_head, c.n_embd) == (n_layer, n_head, n_embd)
    assert total / 1e6 == pytest.approx(millions, abs=0.1)


def test_padded_vocab_is_a_multiple_of_64():
    assert GPTConfig.from_name("gpt2").vocab_size == 50304


def test_shapes_and_loss():
    model = tiny()
    idx = torch.randint(0, GPT2_VOCAB_SIZE, (3, 16))
    logits, loss = model(idx, idx)
    assert logits is None  # a loss call keeps its logits inside
    assert loss.shape == () and 9 < loss.item() < 12  # ~ln(50304) at init
    logits, loss = model(idx)
    assert logits.shape == (3, 1, 50304) and loss is None
    logits, _ = model(idx, all_positions=True)
    assert logits.shape == (3, 16, 50304)
    expected = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), idx.view(-1))
    assert torch.allclose(expected, model(idx, idx)[1])


def test_weight_tying_shares_one_matrix():
    model = tiny()
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    untied = tiny(weight_tying=False)
    assert untied.num_params() == model.num_params() + 50304 * 32


@pytest.mark.parametrize("flash", [True, False])
def test_future_tokens_never_change_past_logits(flash):
    model = tiny(flash_attention=flash).eval()
    a = torch.randint(0, GPT2_VOCAB_SIZE, (1, 16))
    b = a.clone()
    b[0, 10:] = torch.randint(0, GPT2_VOCAB_SIZE, (6,))
    la, _ = model(a, all_positions=True)
    lb, _ = model(b, all_positions=True)
    torch.testing.assert_close(la[0, :10], lb[0, :10])
    assert not torch.allclose(la[0, 10:], lb[0, 10:])


def test_fused_and_explicit_attention_agree():
    fused, explicit = tiny(flash_attention=True).eval(), tiny(flash_attention=False).eval()
    idx = torch.randint(0, GPT2_VOCAB_SIZE, (2, 16))
    torch.testing.assert_close(fused(idx, idx)[0], explicit(idx, idx)[0], rtol=1e-4, atol=1e-4)


def test_sequences_longer_than_the_block_are_refused():
    with pytest.raises(ValueError, match="exceeds block_size 16"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


def test_generation_never_samples_padding_rows():
    model = tiny().eval()
    # Make the padded rows overwhelmingly likely: they must still never be drawn.
    model.lm_head.register_forward_hook(
        lambda m, i, out: out.index_fill(-1, torch.arange(GPT2_VOCAB_SIZE, 50304), 1e4)
    )
    out = model.generate(torch.zeros(2, 1, dtype=torch.long), 20, temperature=1.0, top_k=0)
    assert out.shape == (2, 21) and int(out.max()) < GPT2_VOCAB_SIZE


def _loss_and_grads(config: GPTConfig, idx, targets, **changes):
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(config, **changes))
    _, loss = model(idx, targets)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("change", [{"fused_loss": True}, {"activation_checkpointing": True}])
def test_memory_savers_give_the_plain_loss_and_gradients(change):
    """Fused head + loss (chunked, gradients formed in forward) and recomputed blocks change no result."""
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=GPT2_VOCAB_SIZE)
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(GPT2_VOCAB_SIZE, (3, 16), generator=gen)
    targets = torch.randint(GPT2_VOCAB_SIZE, (3, 16), generator=gen)
    loss, grads = _loss_and_grads(config, idx, targets)
    loss2, grads2 = _loss_and_grads(config, idx, targets, **change)
    assert torch.allclose(loss, loss2, rtol=1e-5, atol=1e-6)
    for name, g in grads.items():
        assert torch.allclose(g, grads2[name], rtol=1e-4, atol=1e-7), name


def test_fused_loss_chunks_agree_with_one_pass():
    from lib.convert.fused_loss import linear_cross_entropy

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(50, 8, generator=gen, requires_grad=True)
    w = torch.randn(300, 8, generator=gen, requires_grad=True)
    t = torch.randint(300, (50,), generator=gen)
    plain = torch.nn.functional.cross_entropy(x @ w.t(), t)
    gx, gw = torch.autograd.grad(plain, (x, w))
    for chunk in (7, 50, 64):  # uneven, exact and larger than the tokens
        fused = linear_cross_entropy(x, w, t, chunk=chunk)
        fx, fw = torch.autograd.grad(2.0 * fused, (x, w))  # the upstream gradient is applied
        assert torch.allclose(fused, plain, atol=1e-6)
        assert torch.allclose(fx, 2 * gx, atol=1e-6) and torch.allclose(fw, 2 * gw, atol=1e-6)


def test_fused_loss_evaluates_without_gradients():
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=GPT2_VOCAB_SIZE)
    torch.manual_seed(0)
    plain, fused = GPT(config).eval(), GPT(dataclasses.replace(config, fused_loss=True)).eval()
    fused.load_state_dict(plain.state_dict())
    idx = torch.randint(GPT2_VOCAB_SIZE, (2, 8))
    with torch.no_grad():
        assert torch.allclose(plain(idx, idx)[1], fused(idx, idx)[1], atol=1e-6)
