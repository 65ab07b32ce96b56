"""Train-mode parity: with dropout on, the JAX model and torch_ref compute the same logits and gradients when both are
given the same dropout masks.

Each framework draws its masks its own way, so the test gives both one mask provider: the i-th dropout call of a
forward pass (in the order the mirrored modules run it) gets mask i, drawn from seed i for the call's shape and rate,
and applies it as inverted dropout (kept / keep_prob, dropped 0), which is what both Dropout layers compute. If a
dropout site is missing, extra, or in another place on one side, the calls' shapes or order disagree and the logits
differ. Checked for post-norm and pre-norm models (self- and cross-attention, attention-weight, feed-forward and
residual/embedding dropout all on): logits within 1e-5 and every parameter's gradient within 1e-5 relative to that
parameter's largest gradient entry (fp32). Run with `-s` to see the measured differences.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from test_model_parity import (
    build_pair,
    compare_gradients,
    jax_cross_entropy,
    jax_grads_by_torch_name,
    make_batch,
    make_config,
    max_diff,
)

from jax_transformer.model import dropout as jax_dropout

LOGITS_ATOL = 1e-5
GRAD_RTOL = 1e-5  # per parameter: max |g_jax - g_torch| <= GRAD_RTOL * max |g_torch|


class SharedMasks:
    """Dropout masks by call order: call i gets mask i (a function of i, the shape and the rate only)."""

    def __init__(self):
        self.calls = []

    def reset(self):
        self.calls = []

    def keep(self, shape: tuple, rate: float) -> np.ndarray:
        self.calls.append((tuple(shape), rate))
        return np.random.default_rng(1000 + len(self.calls)).random(shape) >= rate


@pytest.fixture
def masks(monkeypatch):
    provider = SharedMasks()

    def jax_call(self, inputs, *, deterministic=None, rngs=None):
        deterministic = self.deterministic if deterministic is None else deterministic
        if self.rate == 0.0 or deterministic:
            return inputs
        keep = jnp.asarray(provider.keep(inputs.shape, self.rate))
        return jnp.where(keep, inputs / (1.0 - self.rate), 0.0).astype(inputs.dtype)

    def torch_forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = torch.from_numpy(provider.keep(tuple(x.shape), self.p))
        return torch.where(keep, x / (1.0 - self.p), torch.zeros((), dtype=x.dtype))

    monkeypatch.setattr(jax_dropout.Dropout, "__call__", jax_call)
    monkeypatch.setattr(torch.nn.Dropout, "forward", torch_forward)
    return provider


VARIANTS = ["post-shared-tied-interleaved-relu-h4", "pre-unshared-untied-concatenated-gelu-h2-nobias-noscale"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_train_mode_logits_and_gradients_match(variant, masks):
    config = make_config(variant, dropout=0.2, attention_dropout=0.3, ffn_dropout=0.25)
    jax_model, torch_model = build_pair(config, "jax_to_torch")
    jax_model.train()
    torch_model.train()
    src, tgt, labels = make_batch(config)

    masks.reset()
    graphdef, params, rest = nnx.split(jax_model, nnx.Param, ...)

    def loss_fn(params):
        logits = nnx.merge(graphdef, params, rest)(jnp.asarray(src), jnp.asarray(tgt))
        return jax_cross_entropy(logits, jnp.asarray(labels), config.pad_id), logits

    (_, logits_j), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)  # traced once: one mask per call
    jax_calls = masks.calls

    masks.reset()
    torch_model.zero_grad()
    logits_t = torch_model(torch.from_numpy(src).long(), torch.from_numpy(tgt).long())
    loss_t = torch.nn.functional.cross_entropy(
        logits_t.reshape(-1, logits_t.shape[-1]), torch.from_numpy(labels).reshape(-1), ignore_index=config.pad_id
    )
    loss_t.backward()
    torch_calls = masks.calls

    assert jax_calls == torch_calls  # the same dropout sites, shapes and rates, in the same order
    sites = len(jax_calls)
    # both stacks' embeddings; per attention its weights + the residual; per feed-forward its activation + the residual
    assert sites == 2 + 4 * config.num_encoder_layers + 6 * config.num_decoder_layers, jax_calls

    logits_t = logits_t.detach().numpy()
    diff = max_diff(logits_j, logits_t)
    masks.reset()
    torch_model.eval()
    eval_logits = torch_model(torch.from_numpy(src).long(), torch.from_numpy(tgt).long()).detach().numpy()
    assert max_diff(eval_logits, logits_t) > 0.1  # dropout really changed the function
    grads_j = jax_grads_by_torch_name(grads)
    grads_t = {name: p.grad.numpy() for name, p in torch_model.named_parameters()}
    assert sorted(grads_j) == sorted(grads_t)
    relative, worst = compare_gradients(grads_j, grads_t)  # (key biases: zero in exact arithmetic, see there)
    print(f"\n{variant}: {sites} dropout sites; logits max |diff| {diff:.2e}; gradients max relative diff "
          f"{relative[worst]:.2e} ({worst})")  # fmt: skip
    assert diff <= LOGITS_ATOL
    assert relative[worst] <= GRAD_RTOL, {n: r for n, r in relative.items() if r > GRAD_RTOL}
