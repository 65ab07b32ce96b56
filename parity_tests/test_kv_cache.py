"""The key/value cache, in both frameworks: incremental decoding (one token per step over the cache) gives the logits
of the full teacher-forced decoder at every position, and the JAX and torch_ref caches agree step by step.

Models with every parameter random (post-norm and pre-norm), a batch whose targets have different lengths (right-padded:
the full decoder masks the padding; the cached one sees only the positions written so far, which at every real
position are real tokens, and its outputs at padded positions are never used, so only real positions are compared):
  * fp32: cached = full within 1e-5 at every real position, in JAX and in torch_ref; JAX cache = torch_ref cache
    (logits and the cached keys/values) within 1e-5 at every step;
  * bf16 compute (JAX `dtype='bfloat16'`, the cache itself in bf16): the cached and full paths could round in
    different places, so the stated bound is bf16 precision, BF16_CACHE_ATOL (about one bf16 ulp of these logits,
    |logits| <= 4); measured: identical (0.000) on both models, printed with `-s`.
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from test_export_torch import randomize_every_parameter
from test_model_parity import build_pair, make_config, max_diff

from jax_transformer.model import transformer as jm

ATOL = 1e-5
BF16_CACHE_ATOL = 0.03  # one bf16 ulp of a logit in [2, 4); measured 0.000 (the two paths round alike here)
VARIANTS = ["post-shared-tied-interleaved-relu-h4", "pre-unshared-untied-concatenated-gelu-h2-nobias-noscale"]


def batch(config):
    """Sources and BOS-first targets of different lengths, right-padded (3 rows; target lengths 6, 4, 2)."""
    rng = np.random.default_rng(0)
    src = rng.integers(4, config.vocab_size, size=(3, 7)).astype(np.int32)
    src[1, 5:], src[2, 3:] = config.pad_id, config.pad_id
    tgt = rng.integers(4, config.tgt_vocab_size, size=(3, 6)).astype(np.int32)
    tgt[:, 0] = 2  # BOS
    tgt[1, 4:], tgt[2, 2:] = config.pad_id, config.pad_id
    return src, tgt


def jax_stepped(model, src, tgt):
    memory, src_mask = model.encode(jnp.asarray(src))
    cross, cache = model.cross_key_values(memory), model.init_cache(len(src), tgt.shape[1] + 2)
    logits, caches = [], []
    for index in range(tgt.shape[1]):
        step, cache = model.decode_step(jnp.asarray(tgt[:, index]), index, cache, cross, src_mask)
        logits.append(np.asarray(step, np.float32))
        caches.append([{k: np.asarray(v, np.float32) for k, v in layer.items()} for layer in cache])
    return np.stack(logits, 1), caches


def torch_stepped(model, src, tgt):
    with torch.no_grad():
        memory, src_mask = model.encode(torch.as_tensor(src, dtype=torch.long))
        cross, cache = model.cross_key_values(memory), model.init_cache(len(src), tgt.shape[1] + 2)
        logits, caches = [], []
        for index in range(tgt.shape[1]):
            step, cache = model.decode_step(torch.as_tensor(tgt[:, index]).long(), index, cache, cross, src_mask)
            logits.append(step.float().numpy())
            caches.append([{k: v.float().numpy().copy() for k, v in layer.items()} for layer in cache])
    return np.stack(logits, 1), caches


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_equals_full_in_both_frameworks_fp32(variant):
    config = make_config(variant)
    jax_model, torch_model = build_pair(config, "jax_to_torch")
    src, tgt = batch(config)
    real = tgt != config.pad_id
    jax_full = np.asarray(jax_model(jnp.asarray(src), jnp.asarray(tgt)))
    with torch.no_grad():
        torch_full = torch_model(torch.as_tensor(src, dtype=torch.long), torch.as_tensor(tgt, dtype=torch.long)).numpy()
    jax_cached, jax_caches = jax_stepped(jax_model, src, tgt)
    torch_cached, torch_caches = torch_stepped(torch_model, src, tgt)

    diffs = {
        "JAX cached vs full": max_diff(jax_cached[real], jax_full[real]),
        "torch_ref cached vs full": max_diff(torch_cached[real], torch_full[real]),
        "JAX vs torch_ref cached logits": max_diff(jax_cached[real], torch_cached[real]),
        "JAX vs torch_ref cache contents": max(
            max_diff(j[name], t[name]) for js, ts in zip(jax_caches, torch_caches, strict=True)
            for j, t in zip(js, ts, strict=True) for name in ("key", "value")
        ),
    }  # fmt: skip
    print(f"\n{variant}: " + "; ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    assert all(d <= ATOL for d in diffs.values()), diffs
    assert np.abs(jax_full[real]).max() > 1.0  # random weights: the logits are not near zero, so 1e-5 means something


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_equals_full_in_bf16(variant):
    config = make_config(variant)
    fp32_model = jm.Transformer(config, rngs=nnx.Rngs(0))
    randomize_every_parameter(fp32_model, seed=3)
    model = jm.Transformer(dataclasses.replace(config, dtype="bfloat16"), rngs=nnx.Rngs(0))
    nnx.update(model, nnx.state(fp32_model, nnx.Param))  # the same fp32 parameters, bf16 compute
    model.eval()
    src, tgt = batch(config)
    real = tgt != config.pad_id
    full = np.asarray(model(jnp.asarray(src), jnp.asarray(tgt)), np.float32)
    cached, caches = jax_stepped(model, src, tgt)
    assert model.init_cache(1, 1)[0]["key"].dtype == jnp.bfloat16  # the cache really is bf16
    diff = max_diff(cached[real], full[real])
    print(f"\n{variant} bf16: cached vs full max |diff| {diff:.3f} (|logits| <= {np.abs(full[real]).max():.1f})")
    assert diff <= BF16_CACHE_ATOL
