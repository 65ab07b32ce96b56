"""Fresh torch_ref models start where fresh Flax models start: the same initialisers, compared per parameter by
their statistics (mean and standard deviation; the values themselves come from different random generators), the
same config fields, and the same length-bound error.

Tolerance: for a parameter of n values drawn with standard deviation s, each framework's sample mean has standard
error s / sqrt(n) and its sample standard deviation a relative standard error of at most about 1 / sqrt(n) (uniform
and normal draws); the test allows 6 standard errors of the difference of two such samples (6 sqrt(2/n) for both),
with n >= 32 for every random parameter of the configs below. Constant parameters (biases 0, LayerNorm 1 and 0)
must agree exactly.
"""

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jax_transformer import config as jax_config
from jax_transformer.config import model_preset
from jax_transformer.interop import torch_convert as convert
from jax_transformer.model import transformer as jm
from torch_ref import model as tm

CONFIGS = {
    "paper-like": dict(vocab_size=500, d_model=64, num_heads=4, d_ff=128),
    "unshared-untied-learned-pre": dict(
        vocab_size=300, target_vocab_size=200, share_embeddings=False, tie_output=False, positional="learned",
        norm_position="pre", d_model=64, num_heads=4, d_ff=128, max_len=64,
    ),
}  # fmt: skip


def _statistics_agree(name, ours, theirs):
    ours, theirs = np.asarray(ours, np.float64).ravel(), np.asarray(theirs, np.float64).ravel()
    assert ours.shape == theirs.shape, name
    if np.all(theirs == theirs[0]):  # a constant initialiser (zeros, ones)
        np.testing.assert_array_equal(ours, theirs, err_msg=name)
        return
    n, s = ours.size, theirs.std()
    tolerance = 6 * math.sqrt(2 / n)
    assert abs(ours.mean() - theirs.mean()) <= tolerance * s, (name, ours.mean(), theirs.mean(), s)
    assert abs(ours.std() / s - 1) <= tolerance, (name, ours.std(), s)


@pytest.mark.parametrize("variant", list(CONFIGS))
def test_fresh_torch_model_has_the_flax_initialisers(variant):
    config = model_preset("test", **CONFIGS[variant])
    flax_params = convert.to_state_dict(jm.Transformer(config, rngs=nnx.Rngs(0)))  # torch names and layouts
    torch.manual_seed(0)
    torch_params = {k: v.detach().numpy() for k, v in tm.Transformer(config).state_dict().items()}
    assert sorted(torch_params) == sorted(flax_params)
    for name, value in flax_params.items():
        _statistics_agree(name, torch_params[name], value)


def test_fresh_torch_classifier_has_the_flax_initialisers():
    config = model_preset("test", vocab_size=400, d_model=64, num_heads=4, type_vocab_size=2, embedding_norm=True)
    flax_params = convert.to_state_dict(jm.EncoderClassifier(config, 3, rngs=nnx.Rngs(0)))
    torch.manual_seed(0)
    torch_params = {k: v.detach().numpy() for k, v in tm.EncoderClassifier(config, 3).state_dict().items()}
    assert sorted(torch_params) == sorted(flax_params)
    for name, value in flax_params.items():
        if value.size >= 32:
            _statistics_agree(name, torch_params[name], value)


def test_torch_config_has_the_fields_and_defaults_of_the_jax_config():
    ours = {f.name: f.default for f in dataclasses.fields(tm.ModelConfig)}
    theirs = {f.name: f.default for f in dataclasses.fields(jax_config.ModelConfig)}
    assert ours == theirs


def test_torch_config_accepts_the_old_forms():
    import types

    jax_cfg = model_preset("test", vocab_size=30)
    for form in (jax_cfg, types.SimpleNamespace(**dataclasses.asdict(jax_cfg)), dataclasses.asdict(jax_cfg)):
        assert tm.as_config(form) == tm.ModelConfig(**dataclasses.asdict(jax_cfg))
    older = {k: v for k, v in dataclasses.asdict(jax_cfg).items() if k != "embedding_norm"}  # before the option
    assert tm.load_config({"model": older}).embedding_norm is False
    model = tm.Transformer(types.SimpleNamespace(**dataclasses.asdict(jax_cfg)))
    assert isinstance(model.config, tm.ModelConfig)


def test_same_length_bound_error():
    config = model_preset("test", vocab_size=30, max_len=8)
    src = np.ones((1, 9), np.int32)
    with pytest.raises(ValueError) as jax_error:
        jm.Transformer(config, rngs=nnx.Rngs(0))(jnp.asarray(src), jnp.asarray(src[:, :2]))
    with pytest.raises(ValueError) as torch_error:
        tm.Transformer(config)(torch.from_numpy(src).long(), torch.from_numpy(src[:, :2]).long())
    assert str(torch_error.value) == str(jax_error.value) == "positions up to 0 + 9 exceed model.max_len=8"
