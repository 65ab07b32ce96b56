"""Attention parity (§3.2): JAX `MultiHeadAttention` vs the torch_ref mirror vs `torch.nn.MultiheadAttention` vs
`torch.nn.functional.scaled_dot_product_attention`, fp32, parametrized over shapes, head counts and masks, for self-
and cross-attention. Outputs and per-head attention weights must agree within 1e-5.

Mask conventions differ between the libraries, which is half of what this file checks:
  * ours (JAX and torch_ref): boolean "may attend", broadcast to (batch, heads, q_len, k_len);
  * `F.scaled_dot_product_attention`: boolean attn_mask, True = may attend (same as ours);
  * `nn.MultiheadAttention`: key_padding_mask (batch, k_len) and attn_mask (q_len, k_len) or (batch*heads, q_len,
    k_len), both True = NOT allowed; it averages the weights over heads unless average_attn_weights=False.

Run with `-s` to see the measured max abs differences.
"""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch.nn import functional as F

from jax_transformer.interop import torch_convert as convert
from jax_transformer.model import transformer as jm
from torch_ref import model as tm

ATOL = 1e-5  # fp32 on CPU: every path computes the same sums in a different order, so differences are ~1e-7

# (batch, q_len, k_len, d_model, kind) -> head counts. 'self' passes one sequence as queries and keys (q_len == k_len),
# 'cross' a different, differently long one. Not the full product: every new (shape, heads) pair costs JAX ~0.5 s of
# op compilation on CPU, and each head count (1, 2, 4, 8) appears in both kinds of attention.
SHAPES_HEADS = {
    (2, 5, 5, 32, "self"): [1, 4, 8],
    (3, 7, 7, 16, "self"): [2],
    (2, 4, 9, 32, "cross"): [2, 8],
    (1, 6, 3, 16, "cross"): [1, 4],
}
SELF_MASKS = ["none", "padding", "causal", "padding_causal", "random"]
CROSS_MASKS = ["none", "padding", "random"]

CASES = [
    pytest.param(shape, heads, mask, id=f"{shape[4]}-b{shape[0]}q{shape[1]}k{shape[2]}d{shape[3]}-h{heads}-{mask}")
    for shape, head_counts in SHAPES_HEADS.items()
    for heads in head_counts
    for mask in (SELF_MASKS if shape[4] == "self" else CROSS_MASKS)
]


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def make_mask(kind: str, batch: int, q_len: int, k_len: int, rs: np.random.RandomState):
    """Our 'may attend' mask (numpy bool, broadcastable to (batch, heads, q, k)) plus the nn.MultiheadAttention
    arguments meaning the same thing (True = NOT allowed). No query row is fully masked here: nn.MultiheadAttention
    and F.scaled_dot_product_attention give NaN for such rows (see test_fully_masked_row below)."""
    if kind == "none":
        return None, {}
    if kind in ("padding", "padding_causal"):
        lengths = rs.randint(1, k_len + 1, size=batch)
        lengths[0] = max(1, k_len - 2)  # at least one row really padded
        pad = np.arange(k_len)[None, :] < lengths[:, None]  # (batch, k_len) True = real token
        mask = pad[:, None, None, :]
        torch_args = {"key_padding_mask": torch.from_numpy(~pad)}
        if kind == "padding":
            return mask, torch_args
        causal = np.tril(np.ones((q_len, k_len), dtype=bool))
        torch_args["attn_mask"] = torch.from_numpy(~causal)
        return mask & causal[None, None], torch_args  # right padding + causal: key 0 is always visible
    if kind == "causal":
        causal = np.tril(np.ones((q_len, k_len), dtype=bool))
        return causal[None, None], {"attn_mask": torch.from_numpy(~causal)}
    if kind == "random":
        mask = rs.rand(batch, 1, q_len, k_len) > 0.4
        mask[..., 0] |= ~mask.any(axis=-1)  # every query row sees at least one key
        return mask, {"mask_per_head": mask}  # expanded to (batch*heads, q, k) once heads are known
    raise ValueError(kind)


def build_modules(d_model: int, heads: int, seed: int):
    """torch_ref MHA with random weights (biases too), the JAX MHA and an nn.MultiheadAttention holding copies."""
    torch.manual_seed(seed)
    ref = tm.MultiHeadAttention(d_model, heads).eval()
    with torch.no_grad():
        for p in ref.parameters():
            if p.ndim == 1:
                p.normal_(0.0, 0.1)  # nn.Linear biases start uniform; make them clearly non-trivial
    ours = jm.MultiHeadAttention(d_model, heads, rngs=nnx.Rngs(seed))
    convert.load_state_dict(ours, ref.state_dict(), source="torch_ref attention")  # torch names: query.weight, ...
    ours.eval()
    mha = torch.nn.MultiheadAttention(d_model, heads, bias=True, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([ref.query.weight, ref.key.weight, ref.value.weight], dim=0))
        mha.in_proj_bias.copy_(torch.cat([ref.query.bias, ref.key.bias, ref.value.bias], dim=0))
        mha.out_proj.weight.copy_(ref.out.weight)
        mha.out_proj.bias.copy_(ref.out.bias)
    return ours, ref, mha


@pytest.mark.parametrize("shape, heads, mask_kind", CASES)
def test_attention_parity(shape, heads, mask_kind):
    batch, q_len, k_len, d_model, kind = shape
    rs = np.random.RandomState(zlib.crc32(f"{shape}{heads}{mask_kind}".encode()))  # deterministic across runs
    ours, ref, mha = build_modules(d_model, heads, seed=heads * 100 + d_model)
    x = rs.randn(batch, q_len, d_model).astype(np.float32)
    memory = x if kind == "self" else rs.randn(batch, k_len, d_model).astype(np.float32)
    mask, torch_args = make_mask(mask_kind, batch, q_len, k_len, rs)
    if "mask_per_head" in torch_args:  # nn.MultiheadAttention wants a 3-D mask as (batch*heads, q, k), batch-major
        per_head = np.broadcast_to(torch_args.pop("mask_per_head"), (batch, heads, q_len, k_len))
        torch_args["attn_mask"] = torch.from_numpy(~per_head.reshape(batch * heads, q_len, k_len))

    # JAX
    out_jax, w_jax = ours(jnp.asarray(x), jnp.asarray(memory), None if mask is None else jnp.asarray(mask))
    # torch_ref
    xt, mt = torch.from_numpy(x), torch.from_numpy(memory)
    mask_t = None if mask is None else torch.from_numpy(mask)
    with torch.no_grad():
        out_ref, w_ref = ref(xt, mt, mask_t)
        # nn.MultiheadAttention, per-head weights and head-averaged weights
        out_mha, w_mha = mha(xt, mt, mt, need_weights=True, average_attn_weights=False, **torch_args)
        _, w_mha_avg = mha(xt, mt, mt, need_weights=True, average_attn_weights=True, **torch_args)
        # F.scaled_dot_product_attention on the torch_ref projections, and both of our kernels on the same heads
        q = ref.split_heads(ref.query(xt))
        k, v = ref.project_key_value(mt)
        heads_sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_t)
        heads_ref, _ = tm.scaled_dot_product_attention(q, k, v, mask_t)
    heads_jax, _ = jm.scaled_dot_product_attention(
        jnp.asarray(q.numpy()),
        jnp.asarray(k.numpy()),
        jnp.asarray(v.numpy()),
        None if mask is None else jnp.asarray(mask),
    )

    assert out_jax.shape == (batch, q_len, d_model) and w_jax.shape == (batch, heads, q_len, k_len)
    diffs = {
        "out jax~torch_ref": max_diff(out_jax, out_ref),
        "out jax~nn.MHA": max_diff(out_jax, out_mha),
        "out torch_ref~nn.MHA": max_diff(out_ref, out_mha),
        "weights jax~torch_ref": max_diff(w_jax, w_ref),
        "weights jax~nn.MHA": max_diff(w_jax, w_mha),
        "avg weights jax~nn.MHA": max_diff(np.asarray(w_jax).mean(axis=1), w_mha_avg),
        "heads jax~F.sdpa": max_diff(heads_jax, heads_sdpa),
        "heads torch_ref~F.sdpa": max_diff(heads_ref, heads_sdpa),
    }
    print(f"\nattention {kind} b{batch} q{q_len} k{k_len} d{d_model} h{heads} {mask_kind}: "
          + ", ".join(f"{k}={v:.2e}" for k, v in diffs.items()))  # fmt: skip
    for name, diff in diffs.items():
        assert diff <= ATOL, f"{name}: max abs diff {diff:.3e} > {ATOL}"
    # the weights are a distribution over the visible keys and exactly zero on masked keys
    np.testing.assert_allclose(np.asarray(w_jax).sum(-1), 1.0, atol=1e-6)
    if mask is not None:
        assert np.all(np.asarray(w_jax)[~np.broadcast_to(mask, w_jax.shape)] == 0.0)


@pytest.mark.parametrize("d_k", [4, 8])
def test_scaled_dot_product_attention_matches_numpy(d_k):
    """Both kernels against Eq. 1 written out in numpy (float64)."""
    rs = np.random.RandomState(d_k)
    q, k, v = (rs.randn(2, 3, n, d_k).astype(np.float32) for n in (5, 6, 6))
    mask = rs.rand(2, 1, 5, 6) > 0.3
    mask[..., 0] = True
    scores = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k) / np.sqrt(d_k)
    scores = np.where(mask, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    expected = weights @ v
    out_jax, w_jax = jm.scaled_dot_product_attention(*map(jnp.asarray, (q, k, v, mask)))
    out_ref, w_ref = tm.scaled_dot_product_attention(*map(torch.from_numpy, (q, k, v, mask)))
    print(
        f"\nsdpa vs numpy d_k={d_k}: jax={max_diff(out_jax, expected):.2e} torch_ref={max_diff(out_ref, expected):.2e}"
    )
    for out, w in ((out_jax, w_jax), (out_ref.numpy(), w_ref.numpy())):
        assert max_diff(out, expected) <= ATOL and max_diff(w, weights) <= ATOL


def test_fully_masked_query_row_gives_zeros_not_nan():
    """A query that may attend to nothing (e.g. a padding query under a left-padded causal mask) gets zero weights
    and a zero head output in both frameworks, and finite gradients; the other rows are unaffected."""
    rs = np.random.RandomState(0)
    q, k, v = (rs.randn(2, 2, 4, 8).astype(np.float32) for _ in range(3))
    mask = np.ones((2, 1, 4, 4), dtype=bool)
    mask[0, :, 1, :] = False  # batch 0, query 1 sees nothing
    out_jax, w_jax = jm.scaled_dot_product_attention(*map(jnp.asarray, (q, k, v, mask)))
    out_ref, w_ref = tm.scaled_dot_product_attention(*map(torch.from_numpy, (q, k, v, mask)))
    for out, w in ((np.asarray(out_jax), np.asarray(w_jax)), (out_ref.numpy(), w_ref.numpy())):
        assert np.all(np.isfinite(out)) and np.all(np.isfinite(w))
        assert np.all(w[0, :, 1] == 0.0) and np.all(out[0, :, 1] == 0.0)
    rows = np.ones((2, 2, 4), dtype=bool)
    rows[0, :, 1] = False
    assert max_diff(np.asarray(out_jax)[rows], out_ref.numpy()[rows]) <= ATOL
    # the unmasked rows equal attention without any mask
    out_free, _ = jm.scaled_dot_product_attention(*map(jnp.asarray, (q, k, v)))
    assert max_diff(np.asarray(out_jax)[1], np.asarray(out_free)[1]) <= ATOL

    def loss(q, k, v):
        return jnp.sum(jm.scaled_dot_product_attention(q, k, v, jnp.asarray(mask))[0] ** 2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*map(jnp.asarray, (q, k, v)))  # one compile, not ~50
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    qt, kt, vt = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
    (tm.scaled_dot_product_attention(qt, kt, vt, torch.from_numpy(mask))[0] ** 2).sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (qt, kt, vt))
    for g, t in zip(grads, (qt, kt, vt), strict=True):
        assert max_diff(g, t.grad) <= 1e-4


def test_module_mask_none_equals_all_true_mask():
    """mask=None and an all-True mask are the same attention (the two code paths agree)."""
    ours, _, _ = build_modules(16, 4, seed=1)
    x = jnp.asarray(np.random.RandomState(1).randn(2, 5, 16).astype(np.float32))
    out_none, w_none = ours(x, x, None)
    out_true, w_true = ours(x, x, jnp.ones((2, 1, 5, 5), dtype=bool))
    assert max_diff(out_none, out_true) == 0.0 and max_diff(w_none, w_true) == 0.0
