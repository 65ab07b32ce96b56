"""The hashed dropout mask (jax_transformer/dropout.py): rate, independence, determinism, nnx.Dropout contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_transformer.model.dropout import Dropout, dropout_mask, hashed_bits

N = 1 << 20  # 1M elements: the standard error of a rate is about 5e-4


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.9])
def test_keep_rate(rate):
    mask = np.asarray(dropout_mask(jax.random.key(0), 1.0 - rate, (N,)))
    assert abs(mask.mean() - (1.0 - rate)) < 3e-3


def test_masks_of_different_keys_and_neighbours_are_independent():
    a = np.asarray(dropout_mask(jax.random.key(1), 0.7, (N,)))
    b = np.asarray(dropout_mask(jax.random.key(2), 0.7, (N,)))
    assert not np.array_equal(a, b)
    assert abs((a & b).mean() - 0.49) < 3e-3  # P(both kept) = 0.7^2 when independent
    assert abs((a[1:] & a[:-1]).mean() - 0.49) < 3e-3  # neighbouring elements
    rows = a.reshape(1024, 1024)  # neighbouring rows (the same feature of the next token)
    assert abs((rows[1:] & rows[:-1]).mean() - 0.49) < 3e-3


def test_bits_are_uniform_and_a_pure_function_of_seed_and_index():
    bits = np.asarray(hashed_bits(jnp.uint32(7), (512, 2048)))
    np.testing.assert_array_equal(bits, np.asarray(hashed_bits(jnp.uint32(7), (512, 2048))))
    assert not np.array_equal(bits, np.asarray(hashed_bits(jnp.uint32(8), (512, 2048))))
    # each of the 32 bits is set half of the time
    ones = np.unpackbits(bits.view(np.uint8)).reshape(-1, 8).mean(axis=0)
    assert np.all(np.abs(ones - 0.5) < 3e-3)
    # the index is row-major: element (i, j) of a (512, 2048) array equals element i * 2048 + j of a flat one
    flat = np.asarray(hashed_bits(jnp.uint32(7), (512 * 2048,)))
    np.testing.assert_array_equal(bits.reshape(-1), flat)


def test_module_scales_kept_units_and_is_identity_in_eval():
    layer = Dropout(0.3, rngs=nnx.Rngs(dropout=0))
    x = jnp.ones((256, 1024))
    y = np.asarray(layer(x))
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    assert abs(y.mean() - 1.0) < 1e-2  # expectation preserved
    assert not np.array_equal(y, np.asarray(layer(x)))  # the stream advances: a new mask per call
    layer.eval()
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(Dropout(0.0, rngs=nnx.Rngs(0))(x)), np.asarray(x))


def test_same_stream_state_gives_the_same_mask():
    a = Dropout(0.5, rngs=nnx.Rngs(dropout=3))
    b = Dropout(0.5, rngs=nnx.Rngs(dropout=3))
    x = jnp.ones((64, 64))
    np.testing.assert_array_equal(np.asarray(a(x)), np.asarray(b(x)))


def test_bf16_inputs_stay_bf16():
    y = Dropout(0.3, rngs=nnx.Rngs(dropout=0))(jnp.ones((8, 16), jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
