"""The JAX model on its own: shapes, masks (by perturbation), §3.5 positions, parameter counts, Eq. 1, dropout modes,
bf16 compute. Framework parity with torch lives in parity_tests/."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jax_transformer.config import model_preset
from jax_transformer.model import transformer as jm
from torch_ref import model as tm

VOCAB, TGT_VOCAB, PAD = 29, 23, 0
# One small config for most tests, so that they share one compiled forward pass. Dropout is on (eval() turns it off),
# embeddings unshared and untied so that source and target vocabularies (and pad rows) are distinguishable.
CONFIG = model_preset(
    "test", vocab_size=VOCAB, target_vocab_size=TGT_VOCAB, share_embeddings=False, tie_output=False, max_len=16,
    dropout=0.3, attention_dropout=0.1,
)  # fmt: skip

# XLA's backend optimisations are irrelevant for these tiny models and cost most of the compile time.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


@functools.partial(jax.jit, static_argnums=(0, 2), compiler_options=_FAST_COMPILE)
def _apply(graphdef, state, method, *args):
    model = nnx.merge(graphdef, state)
    out = getattr(model, method)(*args)
    return out, nnx.state(model)  # the state carries the advanced dropout RNG counters back out


def apply(model, method, *args):
    """model.method(*args), jit-compiled once per (model structure, method, shapes); updates the model's RNG state."""
    graphdef, state = nnx.split(model)
    out, state = _apply(graphdef, state, method, *args)
    nnx.update(model, state)
    return out


def forward(model, src, tgt):
    return np.asarray(apply(model, "__call__", jnp.asarray(src), jnp.asarray(tgt)))


@functools.cache
def eval_model(seed=0):
    model = jm.Transformer(CONFIG, rngs=nnx.Rngs(seed))
    model.eval()
    return model


def make_ids(rs, shape, vocab, lengths=None):
    ids = rs.randint(1, vocab, size=shape).astype(np.int32)  # never the pad id
    if lengths is not None:
        for row, length in enumerate(lengths):
            ids[row, length:] = PAD
    return ids


# --- shapes ---------------------------------------------------------------------------------------------------------


def test_output_shapes():
    model = eval_model()
    rs = np.random.RandomState(0)
    src, tgt = make_ids(rs, (2, 7), VOCAB, [7, 4]), make_ids(rs, (2, 6), TGT_VOCAB, [6, 2])
    memory, src_mask = apply(model, "encode", jnp.asarray(src))
    assert memory.shape == (2, 7, CONFIG.d_model) and memory.dtype == jnp.float32
    assert src_mask.shape == (2, 1, 1, 7) and src_mask.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(src_mask)[:, 0, 0], src != PAD)
    logits = apply(model, "decode", jnp.asarray(tgt), memory, src_mask)
    assert logits.shape == (2, 6, TGT_VOCAB) and logits.dtype == jnp.float32
    full = forward(model, src, tgt)
    assert full.shape == (2, 6, TGT_VOCAB)
    np.testing.assert_allclose(full, np.asarray(logits), atol=1e-6)  # __call__ == decode(encode)
    assert np.all(np.isfinite(full))


def test_mask_helpers():
    ids = jnp.asarray([[5, 6, 0], [7, 0, 0]])
    np.testing.assert_array_equal(jm.padding_mask(ids, 0)[:, 0, 0], [[True, True, False], [True, False, False]])
    assert jm.padding_mask(ids, 0).shape == (2, 1, 1, 3)
    causal = jm.causal_mask(4)
    assert causal.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(causal[0, 0], np.tril(np.ones((4, 4), dtype=bool)))  # row i sees keys <= i


# --- masks, by perturbation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("position", [1, 3, 5])
def test_future_target_tokens_do_not_change_earlier_logits(position):
    """§3.2.3: logits at positions < j do not depend on the target token at j (nor on later ones)."""
    model = eval_model()
    rs = np.random.RandomState(position)
    src, tgt = make_ids(rs, (2, 7), VOCAB, [7, 5]), make_ids(rs, (2, 6), TGT_VOCAB)
    changed = tgt.copy()
    changed[:, position:] = (tgt[:, position:] % (TGT_VOCAB - 1)) + 1  # a different non-pad token at and after j
    assert np.all(changed[:, position:] != tgt[:, position:])
    before, after = forward(model, src, tgt), forward(model, src, changed)
    np.testing.assert_allclose(after[:, :position], before[:, :position], atol=1e-6, rtol=0)
    # ...while the position itself does see its own (changed) input, so the test can fail
    assert np.abs(after[:, position] - before[:, position]).max() > 1e-3


def perturb_pad_rows(model, scale=5.0):
    """Overwrite the pad rows of both embeddings with large noise: that changes what sits at every padded position."""
    rs = np.random.RandomState(1)
    for embedding in (model.source_embedding, model.target_embedding):
        table = np.array(embedding.embedding.get_value())
        table[PAD] = rs.normal(0, scale, size=table.shape[1])
        embedding.embedding.set_value(jnp.asarray(table))


def padded_batch():
    """Source: right-padded rows. Target: one right-padded and one LEFT-padded row, so that pads precede real tokens
    and only the padding mask (not the causal mask) hides them."""
    rs = np.random.RandomState(3)
    src = make_ids(rs, (3, 7), VOCAB, [7, 4, 2])
    tgt = make_ids(rs, (3, 6), TGT_VOCAB, [6, 3, 6])
    tgt[2, :2] = PAD  # left padding
    return src, tgt


def test_padding_is_invisible_to_real_positions():
    """Changing what is at padded source and target positions leaves every non-pad output unchanged."""
    src, tgt = padded_batch()
    reference = forward(eval_model(), src, tgt)
    model = jm.Transformer(CONFIG, rngs=nnx.Rngs(0))  # the same weights as eval_model(0)...
    model.eval()
    perturb_pad_rows(model)  # ...except the pad embeddings
    perturbed = forward(model, src, tgt)
    real = tgt != PAD
    diff = np.abs(perturbed - reference).max(axis=-1)  # (batch, tgt_len)
    assert diff[real].max() <= 1e-6, diff
    assert diff[~real].max() > 1e-2  # the pad positions themselves did change: the perturbation was real


def test_extra_padding_changes_nothing():
    """More trailing padding on the source (and target) leaves the logits at real positions unchanged."""
    model = eval_model()
    src, tgt = padded_batch()
    longer_src = np.pad(src, ((0, 0), (0, 3)), constant_values=PAD)
    longer_tgt = np.pad(tgt, ((0, 0), (0, 2)), constant_values=PAD)
    reference, padded = forward(model, src, tgt), forward(model, longer_src, longer_tgt)
    real = tgt != PAD
    # 1e-5, the fp32 parity tolerance: longer rows change the matrix products' blocking, hence their rounding (up to
    # 1.4e-6 on an AMD EPYC with AVX2 only); a leak through the mask moves logits by far more (next test: > 1e-3)
    np.testing.assert_allclose(padded[:, :6][real], reference[real], atol=1e-5, rtol=0)


def test_real_source_token_changes_only_its_own_row():
    """A non-pad source token does reach the output (so the tests above can fail), and only in its own batch row."""
    model = eval_model()
    src, tgt = padded_batch()
    changed = src.copy()
    changed[1, 2] = src[1, 2] % (VOCAB - 1) + 1
    assert changed[1, 2] != src[1, 2] and changed[1, 2] != PAD
    before, after = forward(model, src, tgt), forward(model, changed, tgt)
    real = tgt != PAD
    assert np.abs(after[1][real[1]] - before[1][real[1]]).max() > 1e-3
    np.testing.assert_allclose(after[[0, 2]], before[[0, 2]], atol=1e-6, rtol=0)  # batch rows are independent


# --- positional encoding (§3.5) --------------------------------------------------------------------------------------

POINTS = [(0, 0), (1, 0), (1, 1), (3, 2), (7, 5), (50, 1), (99, 3)]


@pytest.mark.parametrize("d_model", [32, 7])
@pytest.mark.parametrize("layout", ["interleaved", "concatenated"])
def test_sinusoidal_positions_follow_the_paper_formula(layout, d_model):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)), computed here
    with math.sin/cos; 'interleaved' stores them at features 2i and 2i+1, 'concatenated' at i and ceil(d/2) + i."""
    table = jm.sinusoidal_positions(100, d_model, layout)
    assert table.shape == (100, d_model) and table.dtype == np.float32
    half = (d_model + 1) // 2
    for pos, i in POINTS:
        if 2 * i >= d_model:
            continue
        angle = pos / 10000 ** (2 * i / d_model)
        sin_at, cos_at = (2 * i, 2 * i + 1) if layout == "interleaved" else (i, half + i)
        assert table[pos, sin_at] == pytest.approx(math.sin(angle), abs=1e-6)
        if cos_at < d_model and (layout == "interleaved" or i < d_model // 2):
            assert table[pos, cos_at] == pytest.approx(math.cos(angle), abs=1e-6)
    np.testing.assert_array_equal(table, tm.sinusoidal_positions(100, d_model, layout))  # torch_ref: same table
    assert np.abs(table).max() <= 1.0


def test_layouts_are_permutations_of_each_other():
    interleaved = jm.sinusoidal_positions(20, 16, "interleaved")
    concatenated = jm.sinusoidal_positions(20, 16, "concatenated")
    np.testing.assert_array_equal(concatenated, np.concatenate([interleaved[:, 0::2], interleaved[:, 1::2]], axis=1))


@pytest.mark.parametrize("offset", [0, 5])
def test_encoder_adds_the_table_at_the_right_offset(offset):
    model = eval_model()
    zeros = jnp.zeros((1, 4, CONFIG.d_model))
    added = np.asarray(model.encoder.embed_positions(zeros, offset=offset))[0]
    table = jm.sinusoidal_positions(CONFIG.max_len, CONFIG.d_model, CONFIG.sinusoidal_layout)
    np.testing.assert_array_equal(added, table[offset : offset + 4])


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_sequences_longer_than_max_len_raise(positional):
    config = model_preset("test", vocab_size=VOCAB, max_len=8, positional=positional)
    model = jm.Transformer(config, rngs=nnx.Rngs(0))
    model.eval()
    ok = jnp.ones((1, 8), jnp.int32)
    too_long = jnp.ones((1, 9), jnp.int32)
    with pytest.raises(ValueError, match="max_len"):
        apply(model, "__call__", too_long, ok)  # source too long (raises while tracing: nothing is compiled)
    with pytest.raises(ValueError, match="max_len"):
        apply(model, "__call__", ok, too_long)  # target too long


# --- parameter counts -------------------------------------------------------------------------------------------------


def expected_parameters(
    d_model, d_ff, layers, vocab, tgt_vocab=None, *, shared=True, tied=True, bias=True, pre_norm=False
):
    """Counted by hand from §3: four d_model x d_model attention projections (+ biases), a two-layer FFN, LayerNorms."""
    tgt_vocab = tgt_vocab or vocab
    attention = 4 * d_model * d_model + (4 * d_model if bias else 0)
    ffn = d_model * d_ff + d_ff + d_ff * d_model + d_model
    norm = 2 * d_model
    encoder_layer = attention + ffn + 2 * norm
    decoder_layer = 2 * attention + ffn + 3 * norm
    embeddings = vocab * d_model + (0 if shared else tgt_vocab * d_model) + (0 if tied else tgt_vocab * d_model)
    final_norms = 2 * norm if pre_norm else 0
    return embeddings + layers * (encoder_layer + decoder_layer) + final_norms


def count_without_allocating(config):
    """Parameter counts of both frameworks from shapes alone (nnx.eval_shape; torch's meta device)."""
    abstract = nnx.eval_shape(lambda: jm.Transformer(config, rngs=nnx.Rngs(0)))
    with torch.device("meta"):
        torch_model = tm.Transformer(config)
    return jm.count_parameters(abstract), tm.count_parameters(torch_model)


def test_base_model_parameter_count():
    """Table 3 lists 65M for the base model; with a 37k shared vocabulary it is 63,082,496."""
    config = model_preset("base", vocab_size=37000)
    jax_count, torch_count = count_without_allocating(config)
    assert 63_000_000 <= jax_count <= 65_000_000
    assert jax_count == torch_count == expected_parameters(512, 2048, 6, 37000) == 63_082_496


def test_big_model_parameter_count():
    """Table 3 lists 213M for the big model; with a 37k shared vocabulary it is 214,245,376."""
    config = model_preset("big", vocab_size=37000)
    jax_count, torch_count = count_without_allocating(config)
    assert 205_000_000 <= jax_count <= 220_000_000
    assert jax_count == torch_count == expected_parameters(1024, 4096, 6, 37000) == 214_245_376


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        dict(share_embeddings=False, tie_output=False),
        dict(norm_position="pre", use_bias=False),
        dict(share_embeddings=False, target_vocab_size=TGT_VOCAB, tie_output=True),
    ],
    ids=["shared-tied", "unshared-untied", "prenorm-nobias", "unshared-tied-tgtvocab"],
)
def test_small_parameter_counts_match_the_formula(overrides):
    config = model_preset("test", vocab_size=VOCAB, **overrides)
    model = jm.Transformer(config, rngs=nnx.Rngs(0))
    expected = expected_parameters(
        config.d_model, config.d_ff, 2, VOCAB, config.target_vocab_size, shared=config.share_embeddings,
        tied=config.tie_output, bias=config.use_bias, pre_norm=config.norm_position == "pre",
    )  # fmt: skip
    assert jm.count_parameters(model) == expected == tm.count_parameters(tm.Transformer(config))


# --- attention (Eq. 1) ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_mask", [False, True])
def test_scaled_dot_product_attention_is_eq1(with_mask):
    rs = np.random.RandomState(int(with_mask))
    q, k, v = (rs.randn(2, 3, n, 8).astype(np.float32) for n in (4, 5, 5))
    mask = rs.rand(2, 1, 4, 5) > 0.4
    mask[..., 0] = True
    scores = q.astype(np.float64) @ k.transpose(0, 1, 3, 2) / np.sqrt(8)  # Q K^T / sqrt(d_k)
    if with_mask:
        scores = np.where(mask, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)  # softmax
    out, w = jm.scaled_dot_product_attention(
        jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), mask if with_mask else None
    )
    np.testing.assert_allclose(np.asarray(w), weights, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out), weights @ v, atol=1e-5)


# --- dropout and dtypes -----------------------------------------------------------------------------------------------


def test_dropout_is_active_in_train_mode_only():
    model = jm.Transformer(CONFIG, rngs=nnx.Rngs(0))  # dropout 0.3
    src, tgt = padded_batch()
    model.eval()
    eval_a, eval_b = forward(model, src, tgt), forward(model, src, tgt)
    np.testing.assert_array_equal(eval_a, eval_b)  # deterministic
    np.testing.assert_array_equal(eval_a, forward(eval_model(), src, tgt))  # and equal to a fresh eval model
    model.train()
    train_a, train_b = forward(model, src, tgt), forward(model, src, tgt)
    assert np.abs(train_a - eval_a).max() > 1e-2  # dropout changes the output...
    assert np.abs(train_a - train_b).max() > 1e-2  # ...with a fresh mask on every call
    model.eval()
    np.testing.assert_array_equal(forward(model, src, tgt), eval_a)  # and eval() switches it off again


def test_bf16_compute_keeps_fp32_parameters():
    config = model_preset("test", vocab_size=VOCAB, max_len=16, dtype="bfloat16")
    model = jm.Transformer(config, rngs=nnx.Rngs(0))
    model.eval()
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    src, tgt = padded_batch()
    logits = forward(model, src, tgt)
    assert logits.dtype == np.float32 and np.all(np.isfinite(logits))
    memory = jax.eval_shape(lambda ids: model.encode(ids)[0], jnp.asarray(src))  # traced, not compiled
    assert memory.dtype == jnp.bfloat16  # the computation itself runs in bf16


def test_bf16_parameters():
    config = model_preset("test", vocab_size=VOCAB, param_dtype="bfloat16", dtype="bfloat16")
    model = jm.Transformer(config, rngs=nnx.Rngs(0))
    assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_bf16_matmul_and_its_gradients_agree_with_fp32():
    """`bf16_matmul` (bf16 operands, fp32 result, custom VJP) against the fp32 product and its autodiff gradients, to
    bf16 rounding, element by element: the backward pass rounds the incoming gradient g to bf16 (relative error at
    most 2^-9), sums exact products in fp32, and rounds its result to bf16 (2^-9 again), so each entry of
    grad_x = g @ w^T is off by at most 2^-8 (|g| @ |w|^T) and each of grad_w = x^T @ g by 2^-8 (|x|^T @ |g|)."""
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(3, 5, 16)).astype(np.float32), rng.normal(size=(16, 8)).astype(np.float32)
    # operands exactly representable in bf16, so only the gradients' rounding remains
    x, w = (jnp.asarray(a).astype(jnp.bfloat16).astype(jnp.float32) for a in (x, w))

    def loss(matmul, x, w):
        return jnp.sum(jnp.sin(matmul(x, w)))

    mixed = lambda x, w: jm.bf16_matmul(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
    assert mixed(x, w).dtype == jnp.float32
    np.testing.assert_allclose(mixed(x, w), x @ w, rtol=1e-6, atol=1e-5)  # exact products, fp32 sums
    got = jax.grad(functools.partial(loss, mixed), argnums=(0, 1))(x, w)
    want = jax.grad(functools.partial(loss, jnp.matmul), argnums=(0, 1))(x, w)
    g = np.abs(np.cos(np.asarray(x @ w)))  # |d loss / d (x @ w)|, the same on both paths (the products are exact)
    bounds = (2**-8 * g @ np.abs(np.asarray(w)).T,
              2**-8 * np.abs(np.asarray(x)).reshape(-1, 16).T @ g.reshape(-1, 8))  # fmt: skip
    for got_grad, want_grad, bound in zip(got, want, bounds, strict=True):
        assert got_grad.dtype == jnp.float32 and got_grad.shape == want_grad.shape
        error = np.abs(np.asarray(got_grad) - np.asarray(want_grad))
        assert np.all(error <= bound + 1e-7), f"worst error / bound {np.max(error / bound):.2f}"
        assert error.max() > 0  # the backward pass really rounded to bf16


@pytest.mark.parametrize("use_bias", [True, False])
def test_linear_is_nnx_linear_with_an_fp32_accumulating_bf16_path(use_bias):
    """Same parameters as nnx.Linear; fp32 compute is nnx.Linear's; bf16 compute returns bf16 close to it."""
    kwargs = dict(use_bias=use_bias, bias_init=nnx.initializers.normal(1.0))
    ours, reference = jm.Linear(16, 8, **kwargs, rngs=nnx.Rngs(0)), nnx.Linear(16, 8, **kwargs, rngs=nnx.Rngs(0))
    assert jax.tree.structure(nnx.state(ours)) == jax.tree.structure(nnx.state(reference))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 16)), jnp.float32)
    np.testing.assert_array_equal(ours(x), reference(x))
    ours_bf16 = jm.Linear(16, 8, dtype=jnp.bfloat16, **kwargs, rngs=nnx.Rngs(0))
    y = ours_bf16(x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float32), reference(x), atol=0.05, rtol=0.02)


def test_attention_precision_policy_depends_on_dtype_only():
    """Attention's products run in fp32 under bf16 compute on every backend; other dtypes keep their own."""
    from jax_transformer.model.precision import attention_compute_dtype

    assert attention_compute_dtype(jnp.bfloat16) == jnp.float32
    assert attention_compute_dtype("float32") == jnp.float32
    assert attention_compute_dtype(jnp.float16) == jnp.float16
    q, k, v = (jnp.ones((1, 2, 3, 4), jnp.bfloat16) for _ in range(3))
    out, _ = jm.scaled_dot_product_attention(q, k, v)
    assert out.dtype == jnp.bfloat16
