"""Decoding over the key/value cache: greedy search (beam search: see `beam_search`).

All functions take a `Transformer` in eval mode and run under `jax.jit` (static output length, preallocated cache).
Outputs are token ids (batch, max_len) without BOS, EOS included where generated, padded with `pad_id`.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx


def greedy_search(model, src_ids, max_len: int, bos_id: int, eos_id: int):
    """Pick the most probable next token at every step until every sentence emitted EOS (or max_len tokens)."""
    batch = src_ids.shape[0]
    pad_id = model.config.pad_id
    memory, src_mask = model.encode(src_ids)
    cross = model.cross_key_values(memory)
    cache = model.init_cache(batch, max_len)
    output = jnp.full((batch, max_len), pad_id, dtype=jnp.int32)

    def cond(carry):
        index, _, _, _, done = carry
        return (index < max_len) & ~jnp.all(done)

    def body(carry):
        index, last, cache, output, done = carry
        logits, cache = model.decode_step(last, index, cache, cross, src_mask)  # (batch, vocab)
        token = jnp.where(done, pad_id, jnp.argmax(logits, axis=-1).astype(jnp.int32))
        output = output.at[:, index].set(token)
        return index + 1, token, cache, output, done | (token == eos_id)

    start = jnp.full((batch,), bos_id, dtype=jnp.int32)
    init = (jnp.array(0), start, cache, output, jnp.zeros((batch,), dtype=bool))
    return jax.lax.while_loop(cond, body, init)[3]


@functools.partial(jax.jit, static_argnames=("graphdef", "max_len", "bos_id", "eos_id"))
def jit_greedy_search(graphdef, params, src_ids, *, max_len: int, bos_id: int, eos_id: int):
    """`greedy_search` compiled for a (graphdef, params) split of an eval-mode model."""
    return greedy_search(nnx.merge(graphdef, params), src_ids, max_len, bos_id, eos_id)
