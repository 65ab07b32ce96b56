"""Translating text with a trained model: loading a run (or an averaged / exported model), batching, searching.

`load_translator(path)` accepts a run directory (`--step latest|best|N`), an averaged checkpoint directory written by
`average`, a directory exported with `export --to torch` (config.json + model.safetensors + spm.model), or one
exported with `export --to ct2` (translated by CTranslate2, interop/ct2.py).
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from jax_transformer.config import Config, UserError
from jax_transformer.data import pipeline as data_lib
from jax_transformer.data.tokenizer import Tokenizer
from jax_transformer.decode.search import beam_search, greedy_search, output_limits
from jax_transformer.model.transformer import Transformer
from jax_transformer.train.checkpoint import Checkpointer


class Translator:
    """A model in eval mode + its tokenizer, with searches compiled once per batch shape."""

    def __init__(self, config: Config, model: Transformer, tokenizer: Tokenizer, mesh=None, params_sharding=None):
        """With a `mesh` (and the parameters' shardings on it, e.g. the trainer's), the search is compiled with
        explicit in/out shardings: parameters as laid out for training, batches and outputs replicated."""
        self.config, self.tokenizer = config, tokenizer
        model.eval()
        self.graphdef, self.params, self.rest = nnx.split(model, nnx.Param, ...)
        static = (4, 5, 6, 7, 8)  # beam_size, max_len, alpha, min_len, no_repeat_ngram_size (positional: jit with
        # in_shardings takes no keywords)
        if mesh is None:
            self._search = jax.jit(self._search_impl, static_argnums=static)
        else:
            from jax_transformer.train import sharding

            whole = sharding.replicated(mesh)
            self._search = jax.jit(
                self._search_impl, static_argnums=static, out_shardings=whole,
                in_shardings=(params_sharding, whole, whole, whole),
            )  # fmt: skip

    def _search_impl(self, params, rest, src_ids, limits, beam_size, max_len, alpha, min_len, no_repeat):
        model = nnx.merge(self.graphdef, params, jax.tree.map(jnp.asarray, rest))
        bos, eos = self.tokenizer.bos_id, self.tokenizer.eos_id
        if beam_size == 1:
            return greedy_search(model, src_ids, max_len, bos, eos, limits, min_len, no_repeat)
        return beam_search(model, src_ids, beam_size, max_len, bos, eos, alpha, limits, min_len, no_repeat)[0]

    def search(self, src_ids: np.ndarray, beam_size: int, alpha: float, params=None) -> np.ndarray:
        """Token ids (batch, max_len) for a padded batch of source ids (batch, src_len)."""
        dcfg = self.config.decode
        max_len = min(src_ids.shape[1] + dcfg.max_extra_len, self.config.model.max_len)
        limits = output_limits(jnp.asarray(src_ids), self.config.model.pad_id, dcfg.max_extra_len, max_len)
        params = self.params if params is None else params
        options = (dcfg.min_len, dcfg.no_repeat_ngram_size)
        out = self._search(params, self.rest, src_ids, limits, beam_size, max_len, alpha, *options)
        return np.asarray(out)

    def translate_examples(self, examples, beam_size=None, alpha=None, params=None, progress=False) -> list[str]:
        """Translations of encoded (source ids, _) examples, in input order, batched by the decode token budget."""
        dcfg = self.config.decode
        beam_size = dcfg.beam_size if beam_size is None else beam_size
        alpha = dcfg.alpha if alpha is None else alpha
        outputs = [""] * len(examples)
        cfg = self.config.data
        budget = decode_token_budget(self.config, beam_size)
        batches = data_lib.eval_batches(examples, budget, cfg.length_bucket_step, cfg.min_bucket_batches)
        bar = tqdm(total=len(examples), unit="sent", disable=not progress, dynamic_ncols=True)
        for batch, indices in batches:
            tokens = self.search(batch["src"], beam_size, alpha, params)
            for row, text in zip(indices, self.tokenizer.decode(tokens.tolist()), strict=True):
                if row >= 0:
                    outputs[row] = text
            bar.update(int((indices >= 0).sum()))
        bar.close()
        return outputs

    def translate(self, sentences: list[str], beam_size=None, alpha=None, progress=False) -> list[str]:
        """Translate raw sentences (empty lines give empty translations). Sources longer than data.max_source_len
        tokens (when set) are truncated as in training."""
        eos = self.tokenizer.eos_id
        sources = prepare_sources(self.tokenizer, sentences, self.config)
        examples = [(np.array(s + [eos], np.int32), None) for s in sources]
        return self.translate_examples(examples, beam_size, alpha, progress=progress)


def decode_token_budget(config: Config, beam_size: int) -> int:
    """Source tokens per decoding batch: decode.max_tokens shared by the beams (they multiply the rows the decoder
    sees), but at least one sentence of data.max_len."""
    return max(config.decode.max_tokens // beam_size, config.data.max_len)


def prepare_sources(tokenizer: Tokenizer, sentences: list[str], config: Config) -> list[list[int]]:
    """Token ids of each sentence (without EOS), cut so that ids + EOS fit data.max_source_len (when set, as in
    training) and the model's positions (model.max_len); says on stderr how many were cut."""
    limit = min(config.data.max_source_len or config.model.max_len, config.model.max_len)
    sources, cut = [], 0
    for ids in tokenizer.encode(sentences):
        ids, was_cut = data_lib.truncate_source(ids, limit, tokenizer.eos_id)
        sources.append(ids)
        cut += was_cut
    if cut:
        print(f"note: {cut} of {len(sentences)} source line(s) were longer than {limit} tokens (EOS included) and were "
              f"cut to their first {limit - 1} tokens", file=sys.stderr)  # fmt: skip
    return sources


def load_translator(path: str, step: str = "latest") -> Translator:
    """A Translator from a run directory, an averaged checkpoint, or an exported (safetensors) directory; for a
    CTranslate2 directory (`export --to ct2`), a `CT2Translator` with the same `translate`."""
    from jax_transformer.interop.ct2 import CT2Translator, is_ct2_dir

    if is_ct2_dir(path):
        return CT2Translator(path)
    config_path = os.path.join(path, "config.json")
    if not os.path.isdir(path) or not os.path.exists(config_path):
        raise UserError(f"{path} is not a run or model directory (no config.json); fix: pass e.g. runs/NAME")
    config = Config.load(config_path)
    tokenizer = Tokenizer.load(os.path.join(path, "spm.model"))
    model = abstract_model(config.model)
    if os.path.exists(os.path.join(path, "model.safetensors")):
        from jax_transformer.interop.torch_convert import load_safetensors

        load_safetensors(model, os.path.join(path, "model.safetensors"))
    else:
        checkpoints = Checkpointer(os.path.join(path, "checkpoints"), read_only=True)
        params = restore_params(checkpoints, checkpoints.select(step), nnx.state(model, nnx.Param))
        nnx.update(model, params)
    unfilled = [
        name for name, p in nnx.state(model, nnx.Param).flat_state() if isinstance(p.get_value(), jax.ShapeDtypeStruct)
    ]
    if unfilled:
        raise UserError(f"{path} does not hold parameter {'/'.join(map(str, unfilled[0]))} of the model of config.json")
    return Translator(config, model, tokenizer)


def abstract_model(model_config) -> Transformer:
    """A Transformer of `model_config` whose parameters are only shapes and dtypes (`nnx.eval_shape`: nothing is
    initialised), to be filled from a checkpoint. The rest of its state (the dropout layers' RNG streams, unused in
    eval mode) gets concrete placeholder values: a key of seed 0 and zero counts."""
    model = nnx.eval_shape(lambda: Transformer(model_config, rngs=nnx.Rngs(0)))

    def concrete(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jnp.broadcast_to(jax.random.key(0), x.shape)
        return jnp.zeros(x.shape, x.dtype)

    nnx.update(model, jax.tree.map(concrete, nnx.state(model, nnx.Not(nnx.Param))))
    return model


def restore_params(checkpoints: Checkpointer, step: int, abstract_params):
    """Only the parameters of checkpoint `step` (no optimizer state needed), as an nnx.State like `abstract_params`."""
    arrays = checkpoints.restore_arrays(step)["params"]
    target = jax.tree.map(lambda x: x, abstract_params)
    try:
        nnx.replace_by_pure_dict(target, arrays)
    except (KeyError, ValueError, TypeError) as e:
        raise UserError(f"checkpoint {step} does not fit the model of config.json ({e})") from None
    return target


def save_model_dir(translator: Translator, out_dir: str, metadata: dict | None = None) -> None:
    """Write a self-contained model directory: config.json, model.safetensors (torch_ref names and layouts, fp32),
    spm.model. `load_translator` and `torch_ref.load_pretrained` both read it. Refuses to overwrite."""
    from jax_transformer.interop.torch_convert import save_safetensors

    if os.path.exists(os.path.join(out_dir, "model.safetensors")):
        raise UserError(f"{out_dir} already holds a model; fix: choose another output directory or delete it")
    os.makedirs(out_dir, exist_ok=True)
    model = nnx.merge(translator.graphdef, translator.params, translator.rest)
    save_safetensors(
        model, os.path.join(out_dir, "model.safetensors"), metadata={k: str(v) for k, v in (metadata or {}).items()}
    )
    translator.config.save(os.path.join(out_dir, "config.json"))
    translator.tokenizer.save(os.path.join(out_dir, "spm.model"))
