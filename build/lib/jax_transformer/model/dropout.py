"""Dropout (§5.4) with a mask that is cheap to draw on a CPU.

`jax.random.bernoulli` draws each mask element from a counter-based cipher (threefry, or XLA's RngBitGenerator for the
'rbg' keys). On XLA:CPU that costs about 40 ns per element: 8.7 M elements, the dropout masks of one training step of
the Multi30k recipe (128 x 24 tokens, 22 dropout sites, d_model 128), took 340-430 ms, a third of the whole step.

This Dropout draws one 32-bit seed per call from the module's own RNG stream (so masks still differ between layers and
steps, and a resumed run draws the same ones), then hashes each element's index with the seed: two rounds of the
MurmurHash3 32-bit finaliser, a few integer multiplies, shifts and xors that XLA fuses into one vectorised loop (53 ms
for the same 8.7 M elements, 7x cheaper). The hash is not a cryptographic generator, but dropout only needs
independent-looking bits: the keep rate and the pairwise statistics of the masks are tested in tests/test_dropout.py.

Indices are global positions in the array, so an array sharded over a device mesh gets the same mask as on one device.
"""

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: every input bit flips each output bit with probability close to 1/2."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def hashed_bits(seed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 bits of `shape`, a pure function of (seed, element index)."""
    index = jnp.zeros(shape, jnp.uint32)
    for axis, size in enumerate(shape):  # row-major flat index, built from per-axis iotas (shards compute their part)
        index = index * jnp.uint32(size) + lax.broadcasted_iota(jnp.uint32, shape, axis)
    # Hash the index first, then mix in the seed and hash again: masks of different seeds are not shifted copies of
    # one another (as they would be with fmix32(index + seed)).
    return _fmix32(_fmix32(index) ^ seed)


def dropout_mask(key: jax.Array, keep_prob: float, shape: tuple[int, ...]) -> jax.Array:
    """Boolean keep-mask of `shape`, True with probability `keep_prob` (resolution 2**-32)."""
    seed = jax.random.bits(key, (), jnp.uint32)  # one draw from the module's stream
    threshold = jnp.uint32(min(round(keep_prob * 2.0**32), 2**32 - 1))
    return hashed_bits(seed, shape) < threshold


class Dropout(nnx.Dropout):
    """`nnx.Dropout` (same constructor, RNG stream, `deterministic` flag and `nnx.reseed` behaviour) with the hashed
    mask above: inputs / keep_prob where kept, 0 elsewhere."""

    def __call__(self, inputs, *, deterministic: bool | None = None, rngs=None) -> jax.Array:
        deterministic = self.deterministic if deterministic is None else deterministic
        if self.rate == 0.0 or deterministic:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        stream = rngs if rngs is not None else self.rngs
        if stream is None:
            raise ValueError("Dropout in training mode needs an RNG stream: build it with rngs=nnx.Rngs(dropout=...)")
        key = stream if isinstance(stream, jax.Array) else (stream() if isinstance(stream, nnx.RngStream) else
                                                            stream[self.rng_collection]())  # fmt: skip
        keep_prob = 1.0 - self.rate
        shape = list(inputs.shape)
        for axis in self.broadcast_dims:
            shape[axis] = 1
        mask = jnp.broadcast_to(dropout_mask(key, keep_prob, tuple(shape)), inputs.shape)
        return lax.select(mask, inputs / jnp.asarray(keep_prob, inputs.dtype), jnp.zeros_like(inputs))

