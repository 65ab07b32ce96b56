"""Full-model parity: the JAX Transformer vs the torch_ref mirror, weights converted by `interop.torch_convert`.

For every architecture variant (pre/post-norm, shared/unshared embeddings, tied/untied output, interleaved/
concatenated sinusoids or learned positions, ReLU/GELU, head counts) and both directions of conversion (JAX init ->
torch, torch init -> JAX), on a padded batch with dropout configured but switched off by `eval()`:
  * fp32 logits agree within 1e-5 (max abs);
  * the gradients of a padded cross-entropy loss agree within 1e-5 of each parameter's largest gradient entry;
  * bf16 compute agrees within the tolerance measured and explained at BF16_ATOL.
Plus the converter's error paths and bitwise-exact safetensors round trips.

Run with `-s` to see the measured max abs differences.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch
from flax import nnx
from torch.nn import functional as F

from jax_transformer.config import UserError, model_preset
from jax_transformer.interop import torch_convert as convert
from jax_transformer.model import transformer as jm
from torch_ref import model as tm

LOGITS_ATOL = 1e-5
GRAD_RTOL = 1e-5  # per parameter: max |g_jax - g_torch| <= GRAD_RTOL * max |g_torch|
VOCAB, TGT_VOCAB = 29, 23

# Every option appears at least once (head count 1 is covered by the attention tests). Each variant costs one XLA
# compile of forward + backward (~2 s of CPU), so this is a covering set, not the full product.
VARIANTS = {
    "post-shared-tied-interleaved-relu-h4": dict(num_heads=4),  # the paper's model
    "pre-unshared-untied-concatenated-gelu-h2-nobias-noscale": dict(
        norm_position="pre", share_embeddings=False, target_vocab_size=TGT_VOCAB, tie_output=False,
        sinusoidal_layout="concatenated", activation="gelu", num_heads=2, use_bias=False, scale_embeddings=False,
    ),
    "post-unshared-tied-learned-gelu_tanh-h8": dict(
        share_embeddings=False, target_vocab_size=TGT_VOCAB, positional="learned", activation="gelu_tanh", num_heads=8,
    ),
}  # fmt: skip
DIRECTIONS = ["jax_to_torch", "torch_to_jax"]


def make_config(variant: str, **overrides):
    # dropout everywhere, so that the test also checks that eval() switches all of it off on both sides
    base = dict(vocab_size=VOCAB, max_len=16, dropout=0.1, attention_dropout=0.1, ffn_dropout=0.1)
    return model_preset("test", **{**base, **VARIANTS[variant], **overrides})


def make_batch(config, seed=0):
    """A right-padded batch: src (3, 7), decoder input and labels (3, 6), pad id 0, one short row each."""
    rs = np.random.RandomState(seed)
    src_lengths, tgt_lengths = [7, 5, 2], [6, 3, 1]
    src = rs.randint(1, config.vocab_size, size=(3, 7))
    tgt = rs.randint(1, config.tgt_vocab_size, size=(3, 6))
    labels = rs.randint(1, config.tgt_vocab_size, size=(3, 6))
    for row, (s, t) in enumerate(zip(src_lengths, tgt_lengths, strict=True)):
        src[row, s:] = config.pad_id
        tgt[row, t:] = config.pad_id
        labels[row, t:] = config.pad_id
    return src.astype(np.int32), tgt.astype(np.int32), labels.astype(np.int64)


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


# --- the two frameworks -----------------------------------------------------------------------------------------------


def jax_cross_entropy(logits, labels, pad_id):
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    weights = (labels != pad_id).astype(jnp.float32)
    return jnp.sum(nll * weights) / jnp.sum(weights)


# XLA's backend optimisations do nothing useful for models this small but cost ~40% of the compile time.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


@functools.partial(jax.jit, static_argnums=0, compiler_options=_FAST_COMPILE)
def _jax_loss_logits_grads(graphdef, params, rest, src, tgt, labels):
    def loss_fn(params):
        model = nnx.merge(graphdef, params, rest)
        logits = model(src, tgt)
        return jax_cross_entropy(logits, labels, model.config.pad_id), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return loss, logits, grads


def jax_loss_logits_grads(model, src, tgt, labels):
    """Loss, logits and parameter gradients; compiled once per model structure (the graphdef is the cache key)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return _jax_loss_logits_grads(graphdef, params, rest, *map(jnp.asarray, (src, tgt, labels)))


@functools.partial(jax.jit, static_argnums=0, compiler_options=_FAST_COMPILE)
def _jax_logits(graphdef, state, src, tgt):
    return nnx.merge(graphdef, state)(src, tgt)


def jax_logits(model, src, tgt):
    graphdef, state = nnx.split(model)
    return np.asarray(_jax_logits(graphdef, state, jnp.asarray(src), jnp.asarray(tgt)))


def torch_loss_logits_grads(model, src, tgt, labels):
    model.zero_grad()
    logits = model(torch.from_numpy(src).long(), torch.from_numpy(tgt).long())
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), torch.from_numpy(labels).reshape(-1), ignore_index=model.config.pad_id
    )
    loss.backward()
    grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    return loss.item(), logits.detach().numpy(), grads


def jax_grads_by_torch_name(grads: nnx.State) -> dict:
    """Gradient State -> {torch name: array in torch layout} (kernels transposed), via convert.torch_name."""
    out = {}
    for path, value in grads.flat_state():
        array = np.asarray(value.get_value() if hasattr(value, "get_value") else value)
        out[convert.torch_name(path)] = array.T if str(path[-1]) == "kernel" else array
    return out


def randomize_jax(model, seed):
    """Init leaves LayerNorm scales at 1 and biases at 0, which would hide a swapped or untransposed vector: add noise
    to every 1-D parameter."""
    rs = np.random.RandomState(seed)
    noisy = jax.tree.map(
        lambda x: x + rs.normal(0, 0.1, x.shape).astype(np.float32) if x.ndim == 1 else x, nnx.state(model, nnx.Param)
    )
    nnx.update(model, noisy)


def randomize_torch(model, seed):
    """torch's default nn.Embedding init is N(0, 1), not the N(0, d_model^-0.5) that jax_transformer uses (torch_ref
    is only ever loaded with converted weights, so it does not copy the JAX initialisers). With a tied output that
    gives logits ~10x too large (|logits| ~35 instead of ~3), and fp32 rounding alone then exceeds 1e-5 absolute.
    Re-draw the embeddings at the model's own scale, and add noise to every 1-D parameter as in randomize_jax."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embedding" in name:
                p.normal_(0.0, model.config.d_model**-0.5, generator=generator)
            elif p.ndim == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=generator))


def build_pair(config, direction, seed=0):
    """A JAX and a torch_ref model holding the same weights, initialised by one side and converted to the other."""
    if direction == "jax_to_torch":
        jax_model = jm.Transformer(config, rngs=nnx.Rngs(seed))
        randomize_jax(jax_model, seed)
        assert not np.allclose(np.asarray(jax_model.decoder.layers[0].cross_attn_norm.scale.get_value()), 1.0)
        torch.manual_seed(seed + 1)  # a different init, overwritten below
        torch_model = tm.Transformer(config)
        state_dict = {k: torch.tensor(v) for k, v in convert.to_state_dict(jax_model).items()}
        torch_model.load_state_dict(state_dict, strict=True)
    else:
        torch.manual_seed(seed)
        torch_model = tm.Transformer(config)
        randomize_torch(torch_model, seed)
        jax_model = jm.Transformer(config, rngs=nnx.Rngs(seed + 1))  # a different init, overwritten below
        convert.load_state_dict(jax_model, torch_model.state_dict(), source="torch_ref")
    jax_model.eval()
    torch_model.eval()
    return jax_model, torch_model


@functools.cache
def run_pair(variant, direction):
    """Loss, logits and gradients of both frameworks (cached: the logits and gradient tests share one run)."""
    config = make_config(variant)
    jax_model, torch_model = build_pair(config, direction)
    src, tgt, labels = make_batch(config)
    loss_j, logits_j, grads_j = jax_loss_logits_grads(jax_model, src, tgt, labels)
    loss_t, logits_t, grads_t = torch_loss_logits_grads(torch_model, src, tgt, labels)
    return (float(loss_j), np.asarray(logits_j), jax_grads_by_torch_name(grads_j)), (loss_t, logits_t, grads_t)


def compare_gradients(grads_j: dict, grads_t: dict) -> tuple[dict, str]:
    """Per parameter, max |g_jax - g_torch| relative to that parameter's largest torch entry (an absolute bound would
    let small gradients drift); returns ({name: relative diff}, the worst name).

    The key projections' biases get zero gradient in exact arithmetic (softmax is invariant to adding q . b_k to all
    of a query's scores), so both frameworks return rounding noise there; those are checked to be noise on both sides
    (below 1e-6 of the model's largest gradient) instead of compared."""
    largest = max(float(np.abs(g).max()) for g in grads_t.values())
    diffs = {}
    for name, g in grads_t.items():
        if name.endswith("key.bias"):
            assert max(float(np.abs(g).max()), float(np.abs(grads_j[name]).max())) < 1e-6 * largest, name
            continue
        diffs[name] = max_diff(grads_j[name], g) / max(float(np.abs(g).max()), 1e-12)
    return diffs, max(diffs, key=diffs.get)


# --- fp32 parity ------------------------------------------------------------------------------------------------------

PAIRS = [pytest.param(v, d, id=f"{v}-{d}") for v in VARIANTS for d in DIRECTIONS]


@pytest.mark.parametrize("variant, direction", PAIRS)
def test_logits_parity(variant, direction):
    (loss_j, logits_j, _), (loss_t, logits_t, _) = run_pair(variant, direction)
    config = make_config(variant)
    assert logits_j.shape == logits_t.shape == (3, 6, config.tgt_vocab_size)
    assert np.all(np.isfinite(logits_j))
    diff = max_diff(logits_j, logits_t)
    print(f"\nlogits {variant} {direction}: max abs diff {diff:.2e} (|logits| <= {np.abs(logits_t).max():.1f}), "
          f"loss diff {abs(loss_j - loss_t):.2e}")  # fmt: skip
    assert diff <= LOGITS_ATOL
    assert abs(loss_j - loss_t) <= LOGITS_ATOL


@pytest.mark.parametrize("variant, direction", PAIRS)
def test_gradient_parity(variant, direction):
    (_, _, grads_j), (_, _, grads_t) = run_pair(variant, direction)
    assert sorted(grads_j) == sorted(grads_t)  # the same parameters, by torch name
    diffs, worst = compare_gradients(grads_j, grads_t)
    print(f"\ngrads {variant} {direction}: {len(diffs)} params, max relative diff {diffs[worst]:.2e} ({worst})")
    bad = {name: d for name, d in diffs.items() if d > GRAD_RTOL}
    assert not bad, f"gradients differ by more than {GRAD_RTOL} of their parameter's largest entry: {bad}"
    # no parameter is silently disconnected: every one gets a gradient somewhere (pad-row embeddings excepted)
    assert all(np.abs(g).max() > 0 for name, g in grads_t.items() if "embedding" not in name)


# --- packed rows ------------------------------------------------------------------------------------------------------


def make_packed_batch(config, seed=0):
    """Two packed rows of 12 tokens per side: three pairs, then two (and padding), with segment ids and positions."""
    rs = np.random.RandomState(seed)
    layout = [[(4, 3), (5, 6), (2, 2)], [(7, 5), (3, 6)]]  # (source, target) lengths of each row's pairs
    names = ("src", "tgt", "labels", "src_segments", "tgt_segments", "src_positions", "tgt_positions")
    batch = {name: np.zeros((2, 12), np.int64) for name in names}
    for row, pairs in enumerate(layout):
        s = t = 0
        for segment, (src_len, tgt_len) in enumerate(pairs, start=1):
            batch["src"][row, s : s + src_len] = rs.randint(1, config.vocab_size, src_len)
            batch["tgt"][row, t : t + tgt_len] = rs.randint(1, config.tgt_vocab_size, tgt_len)
            batch["labels"][row, t : t + tgt_len] = rs.randint(1, config.tgt_vocab_size, tgt_len)
            for side, start, length in (("src", s, src_len), ("tgt", t, tgt_len)):
                batch[f"{side}_segments"][row, start : start + length] = segment
                batch[f"{side}_positions"][row, start : start + length] = np.arange(length)
            s, t = s + src_len, t + tgt_len
    return batch


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_packed_rows_parity(variant):
    """Packed rows (segment masks in encoder, decoder and cross-attention; positions per sentence): logits within
    LOGITS_ATOL and gradients within GRAD_RTOL per parameter, as for padded batches."""
    config = make_config(variant)
    jax_model, torch_model = build_pair(config, "jax_to_torch")
    batch = make_packed_batch(config)
    packing = ("src_segments", "tgt_segments", "src_positions", "tgt_positions")
    graphdef, params, rest = nnx.split(jax_model, nnx.Param, ...)

    def loss_fn(params):
        model = nnx.merge(graphdef, params, rest)
        segments = {k: jnp.asarray(batch[k]) for k in packing}
        logits = model(jnp.asarray(batch["src"]), jnp.asarray(batch["tgt"]), **segments)
        return jax_cross_entropy(logits, jnp.asarray(batch["labels"]), config.pad_id), logits

    (_, logits_j), grads_j = jax.value_and_grad(loss_fn, has_aux=True)(params)
    logits_t = torch_model(*(torch.from_numpy(batch[k]) for k in ("src", "tgt", *packing)))
    loss_t = F.cross_entropy(logits_t.reshape(-1, logits_t.shape[-1]), torch.from_numpy(batch["labels"]).reshape(-1),
                             ignore_index=config.pad_id)  # fmt: skip
    loss_t.backward()
    grads_t = {name: p.grad.numpy().copy() for name, p in torch_model.named_parameters()}
    diff = max_diff(logits_j, logits_t.detach().numpy())
    diffs, worst = compare_gradients(jax_grads_by_torch_name(grads_j), grads_t)
    print(f"\npacked {variant}: logits max abs diff {diff:.2e}, grads max relative diff {diffs[worst]:.2e} ({worst})")
    assert diff <= LOGITS_ATOL
    assert diffs[worst] <= GRAD_RTOL, worst


# --- bf16 compute -----------------------------------------------------------------------------------------------------

# bf16 keeps 8 significant bits: relative rounding 2^-9, and one ulp is 2^-5 = 0.031 for values in [4, 8). The two
# frameworks round at different places: JAX with dtype='bfloat16' keeps the residual stream, embeddings, LayerNorm
# outputs and the logits themselves in bf16 (cast to fp32 only at the end), while torch.autocast runs only the matmuls
# (nn.Linear, einsum) in bf16 and keeps embeddings, residual adds, LayerNorm and softmax in fp32. So they cannot agree
# better than either agrees with fp32. Measured on these tiny models (|logits| <= ~6.5), maximum over the 4 variants x
# 6 seeds: JAX bf16 vs torch autocast 0.031 (one bf16 ulp of a logit in [4, 8)), JAX bf16 vs fp32 0.033, torch
# autocast vs fp32 0.020; this run's values are printed. The tolerance, 0.08, is ~2.5x the worst measured value and
# still ~1% of the logits' range, so a real error (a wrong mask, a missing sqrt(d_model), dropout left on) fails it.
BF16_ATOL = 0.08


@pytest.mark.parametrize("variant", list(VARIANTS)[:2])
def test_bf16_compute_parity(variant):
    config = make_config(variant)
    _, torch_model = build_pair(config, "torch_to_jax")
    jax_bf16 = jm.Transformer(dataclasses.replace(config, dtype="bfloat16"), rngs=nnx.Rngs(1))
    convert.load_state_dict(jax_bf16, torch_model.state_dict())
    jax_bf16.eval()
    src, tgt, _ = make_batch(config)
    logits_jax = jax_logits(jax_bf16, src, tgt)
    src_t, tgt_t = torch.from_numpy(src).long(), torch.from_numpy(tgt).long()
    with torch.no_grad():
        reference = torch_model(src_t, tgt_t).numpy()  # fp32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits_torch = torch_model(src_t, tgt_t).float().numpy()
    assert logits_jax.dtype == np.float32  # logits come back in fp32
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(jax_bf16, nnx.Param)))
    diffs = {
        "jax_bf16~torch_autocast": max_diff(logits_jax, logits_torch),
        "jax_bf16~fp32": max_diff(logits_jax, reference),
        "torch_autocast~fp32": max_diff(logits_torch, reference),
    }
    print(f"\nbf16 {variant}: " + ", ".join(f"{k}={v:.3e}" for k, v in diffs.items())
          + f" (|logits| <= {np.abs(reference).max():.1f}, tolerance {BF16_ATOL})")  # fmt: skip
    assert all(d <= BF16_ATOL for d in diffs.values()), diffs
    assert diffs["jax_bf16~fp32"] > 0  # bf16 really was used


# --- conversion errors ------------------------------------------------------------------------------------------------


def corrupt_missing(sd):
    del sd["decoder.layers.1.cross_attn.key.bias"]
    return "decoder.layers.1.cross_attn.key.bias"


def corrupt_extra(sd):
    sd["encoder.layers.0.self_attn.rotary.weight"] = np.zeros((4, 4), np.float32)
    return "encoder.layers.0.self_attn.rotary.weight"


def corrupt_shape(sd):
    sd["encoder.layers.1.feed_forward.linear1.weight"] = np.zeros((64, 31), np.float32)
    return "encoder.layers.1.feed_forward.linear1.weight"


def corrupt_transposed(sd):
    sd["decoder.layers.0.feed_forward.linear2.weight"] = sd["decoder.layers.0.feed_forward.linear2.weight"].T.copy()
    return "decoder.layers.0.feed_forward.linear2.weight"


@pytest.mark.parametrize("corrupt", [corrupt_missing, corrupt_extra, corrupt_shape, corrupt_transposed])
def test_conversion_errors_name_the_parameter(corrupt):
    config = make_config("post-shared-tied-interleaved-relu-h4")
    model = jm.Transformer(config, rngs=nnx.Rngs(0))
    state_dict = convert.to_state_dict(model)
    name = corrupt(state_dict)
    with pytest.raises(convert.ConversionError, match=name.replace(".", r"\.")):
        convert.load_state_dict(jm.Transformer(config, rngs=nnx.Rngs(1)), state_dict)
    assert issubclass(convert.ConversionError, UserError)  # entry points print it as one line


@pytest.mark.parametrize(
    "saved, loaded, name",
    [
        ({}, dict(share_embeddings=False), "target_embedding.weight"),  # missing
        ({}, dict(tie_output=False), "output_projection.weight"),  # missing
        ({}, dict(positional="learned"), "position_embedding.weight"),  # missing
        (dict(norm_position="pre"), {}, "final_norm"),  # unused
        ({}, dict(vocab_size=VOCAB + 2), "source_embedding.weight"),  # mis-shaped
        ({}, dict(d_ff=48), "linear1"),  # mis-shaped
    ],
    ids=["unshared", "untied", "learned", "prenorm-into-postnorm", "vocab", "d_ff"],
)
def test_conversion_between_different_configs_fails(saved, loaded, name):
    """A torch_ref checkpoint of one config does not load into a model of another; the error names a parameter."""
    torch_model = tm.Transformer(make_config("post-shared-tied-interleaved-relu-h4", **saved))
    model = jm.Transformer(make_config("post-shared-tied-interleaved-relu-h4", **loaded), rngs=nnx.Rngs(0))
    with pytest.raises(convert.ConversionError, match=name):
        convert.load_state_dict(model, torch_model.state_dict())


def test_loaded_parameters_do_not_alias_the_source():
    """Loading copies: training the torch model on afterwards (an in-place optimizer step) must not change the JAX
    model, and the loaded parameters are jax arrays like those of a freshly built model."""
    config = make_config("post-shared-tied-interleaved-relu-h4")
    torch_model = tm.Transformer(config)
    model = jm.Transformer(config, rngs=nnx.Rngs(0))
    convert.load_state_dict(model, torch_model.state_dict())
    before = {name: array.copy() for name, array in convert.to_state_dict(model).items()}
    with torch.no_grad():
        for p in torch_model.parameters():
            p.add_(1.0)
    after = convert.to_state_dict(model)
    changed = [name for name in before if not np.array_equal(before[name], after[name])]
    assert not changed, f"changing the torch model changed the loaded JAX parameters {changed[:3]}..."
    assert all(isinstance(v.get_value(), jax.Array) for _, v in nnx.state(model, nnx.Param).flat_state())


def test_torch_name():
    assert convert.torch_name(("encoder", "layers", 0, "self_attn", "query", "kernel")) == (
        "encoder.layers.0.self_attn.query.weight"
    )
    assert convert.torch_name(("decoder", "final_norm", "scale")) == "decoder.final_norm.weight"
    assert convert.torch_name(("source_embedding", "embedding")) == "source_embedding.weight"
    with pytest.raises(convert.ConversionError, match="encoder.mystery"):
        convert.torch_name(("encoder", "mystery"))


def test_jax_parameter_names_are_torch_ref_names():
    """Every variant: to_state_dict has exactly torch_ref's state_dict keys, with the same shapes."""
    for variant in VARIANTS:
        config = make_config(variant)
        ours = {k: v.shape for k, v in convert.to_state_dict(jm.Transformer(config, rngs=nnx.Rngs(0))).items()}
        theirs = {k: tuple(v.shape) for k, v in tm.Transformer(config).state_dict().items()}
        assert ours == theirs, variant


# --- safetensors ------------------------------------------------------------------------------------------------------


def jax_params(model) -> dict:
    return {path: np.asarray(v.get_value()) for path, v in nnx.state(model, nnx.Param).flat_state()}


def test_safetensors_round_trip_is_bitwise_exact(tmp_path):
    config = make_config("pre-unshared-untied-concatenated-gelu-h2-nobias-noscale")
    model = jm.Transformer(config, rngs=nnx.Rngs(0))
    randomize_jax(model, 0)
    path = str(tmp_path / "model.safetensors")
    convert.save_safetensors(model, path, metadata={"note": "test"})

    fresh = jm.Transformer(config, rngs=nnx.Rngs(7))
    assert not all(
        np.array_equal(a, b) for a, b in zip(jax_params(model).values(), jax_params(fresh).values(), strict=True)
    )
    convert.load_safetensors(fresh, path)
    before, after = jax_params(model), jax_params(fresh)
    assert before.keys() == after.keys()
    for path_key in before:
        assert before[path_key].dtype == after[path_key].dtype
        assert np.array_equal(before[path_key], after[path_key]), path_key  # bitwise
    model.eval()
    fresh.eval()
    src, tgt, labels = make_batch(config)
    logits = np.asarray(jax_loss_logits_grads(model, src, tgt, labels)[1])  # compiled already by the parity tests
    assert np.array_equal(logits, np.asarray(jax_loss_logits_grads(fresh, src, tgt, labels)[1]))

    # the file is a torch_ref checkpoint as it stands
    torch_model = tm.Transformer(config)
    torch_model.load_state_dict(safetensors.torch.load_file(path), strict=True)
    torch_model.eval()
    for name, p in torch_model.state_dict().items():
        assert np.array_equal(p.numpy(), convert.to_state_dict(model)[name]), name
    with torch.no_grad():
        logits_t = torch_model(torch.from_numpy(src).long(), torch.from_numpy(tgt).long()).numpy()
    diff = max_diff(logits, logits_t)
    print(f"\nsafetensors -> torch_ref logits max abs diff {diff:.2e}")
    assert diff <= LOGITS_ATOL


def test_torch_safetensors_file_loads_into_jax_exactly(tmp_path):
    config = make_config("post-unshared-tied-learned-gelu_tanh-h8")
    torch_model = tm.Transformer(config)
    randomize_torch(torch_model, 3)
    path = str(tmp_path / "torch.safetensors")
    safetensors.torch.save_file(torch_model.state_dict(), path)
    model = jm.Transformer(config, rngs=nnx.Rngs(0))
    convert.load_safetensors(model, path)
    exported = convert.to_state_dict(model)
    for name, p in torch_model.state_dict().items():
        assert np.array_equal(exported[name], p.numpy()), name


def test_bf16_parameters_round_trip_exactly(tmp_path):
    config = make_config("post-shared-tied-interleaved-relu-h4", param_dtype="bfloat16")
    model = jm.Transformer(config, rngs=nnx.Rngs(0))
    path = str(tmp_path / "bf16.safetensors")
    convert.save_safetensors(model, path)
    fresh = jm.Transformer(config, rngs=nnx.Rngs(1))
    convert.load_safetensors(fresh, path)
    for (key, a), b in zip(jax_params(model).items(), jax_params(fresh).values(), strict=True):
        assert a.dtype == b.dtype == jnp.bfloat16 and np.array_equal(a, b), key


def test_load_safetensors_bad_files(tmp_path):
    model = jm.Transformer(make_config("post-shared-tied-interleaved-relu-h4"), rngs=nnx.Rngs(0))
    with pytest.raises(UserError, match="no weights file"):
        convert.load_safetensors(model, str(tmp_path / "missing.safetensors"))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="garbage.safetensors"):
        convert.load_safetensors(model, str(garbage))
