"""Export to CTranslate2 (the C++ inference engine for Transformer translation models), and translate with it.

    python -m jax_transformer.export runs/multi30k_en_de --to ct2 --out exports/en_de_ct2 [--quantization int8]
    python -m jax_transformer.translate exports/en_de_ct2 --input test.en --output test.de

The model is written with CTranslate2's own model-spec API (`ctranslate2.specs.TransformerSpec`), straight from our
parameters: no Hugging Face or fairseq detour, so every option of our encoder-decoder is expressible:

  * pre-norm or post-norm layers (`pre_norm`; the pre-norm stacks' final LayerNorm is the spec's `layer_norm`), the
    LayerNorm epsilon (`layer_norm_epsilon` in the model's config), an embedding LayerNorm (`layernorm_embedding`,
    applied after the positions as ours), ReLU / GELU / tanh-GELU feed-forward networks;
  * positions: the exact table our model adds (sinusoids in either layout, or the learned embedding), written as the
    spec's `position_encodings`, rows 0 .. model.max_len - 1 (CTranslate2 refuses longer inputs, as we do);
  * embeddings scaled by sqrt(d_model) or not, shared or separate source/target embeddings, a tied or untied output
    projection (CTranslate2 stores a weight shared by two parameters once);
  * attention: CTranslate2 fuses the self-attention query/key/value projections into one linear (and cross-attention's
    key/value into one), so ours are concatenated along the output axis; no biases when `model.use_bias=False`;
  * special tokens: our sentencepiece pieces as the vocabulary, in id order (ids past the sentencepiece model, when the
    model's vocabulary is larger, are named `<unused_N>`); the source gets EOS appended (`add_source_eos`) and the
    decoder starts from BOS (`decoder_start_token`), as in training.

Next to CTranslate2's files (model.bin, config.json, *vocabulary.json) the directory holds our `spm.model` and our
config as `jax_transformer_config.json`, from which `translate`/`evaluate` take the tokenizer, the recipe's beam size
and length limits. `model.bin` is CTranslate2's own binary format (no pickle).

Searching with CTranslate2 follows our searches where the engines allow it (tests/test_ct2.py checks each point
against the JAX searches, token for token):
  * PAD and BOS are never produced (`suppress_sequences`), as in `decode/search.py`;
  * the same per-sentence output limit, source length + decode.max_extra_len tokens counting EOS: CTranslate2 takes
    one `max_decoding_length` per call, so sentences are grouped by their limit, and it is given limit - 1 because
    it cuts a hypothesis where we force EOS (the same tokens);
  * the length penalty: CTranslate2 divides log P by length^alpha, we by GNMT's ((5 + length) / 6)^alpha, so only
    alpha = 0 means the same thing in both; with another alpha the CTranslate2 engine applies its own formula at the
    same alpha and says so once. With alpha = 0 CTranslate2's beam search (only top-K candidates may finish; it stops
    when the best candidate ends) returns the hypothesis of our `beam_search(..., finish_from_top_k=True)`.
"""

import json
import os
import sys

import numpy as np

from jax_transformer.config import Config, ModelConfig, UserError
from jax_transformer.interop.torch_convert import to_state_dict
from jax_transformer.machine import available_cores, cpu_flags

CONFIG_NAME = "jax_transformer_config.json"  # our config, beside CTranslate2's own config.json
EXPORT_NAME = "jax_transformer_export.json"  # how the weights were stored ({"quantization": ...})
QUANTIZATIONS = ("float32", "int8", "int16", "int8_float32", "float16", "bfloat16", "int8_float16", "int8_bfloat16")


def check_quantization(quantization: str) -> None:
    if quantization not in QUANTIZATIONS:
        raise UserError(f"--quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")


def is_ct2_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "model.bin")) and os.path.isfile(os.path.join(path, CONFIG_NAME))


def choose_gemm_backend(quantization: str | None) -> None:
    """On an x86 CPU, choose the library CTranslate2 runs its matrix products through, unless CT2_USE_MKL says
    otherwise: oneDNN for float32 weights, Intel MKL for int8 (or unknown) weights on a CPU without VNNI.

    CTranslate2 uses MKL on Intel CPUs and oneDNN on the others. float32 is exact either way and faster through oneDNN
    on both kinds measured (beam 4, test2016, 2 cores; docs/benchmarks.md): an AMD EPYC, 184-192 sentences/s against
    126-133 through MKL (demo model), and an Intel Xeon with AMX, 268-283 against 72-77 (the main recipe's model).
    oneDNN's int8 (u8s8) products lose accuracy on a CPU with AVX2 but no VNNI (AMD EPYC before Zen 4): on
    parity_tests/test_ct2.py's copy model, int8 log-probs moved by up to 6.6 from float32's and 39 of 64 sentences
    were copied against 63; with MKL, 0.13 and 63. With VNNI, int8 keeps CTranslate2's own choice. CTranslate2 reads
    CT2_USE_MKL once, when it is imported: this runs before the first import (and does nothing after it), so a
    process's first CTranslate2 model decides for all that follow."""
    if "CT2_USE_MKL" in os.environ or "ctranslate2" in sys.modules:
        return
    flags = cpu_flags()
    if "avx2" not in flags:  # not x86, or an x86 CPU neither library was measured on: CTranslate2's own choice
        return
    if quantization == "float32":
        os.environ["CT2_USE_MKL"] = "0"
    elif (quantization is None or quantization.startswith("int8")) and not flags & {"avx512_vnni", "avx_vnni"}:
        os.environ["CT2_USE_MKL"] = "1"


def _require_ctranslate2():
    try:
        import ctranslate2
    except ImportError:
        fix = "pip install -e '.[ct2]' (or pip install ctranslate2)"
        raise UserError(f"CTranslate2 is not installed; fix: {fix}") from None
    return ctranslate2


def vocabulary(tokenizer, size: int) -> list[str]:
    """`size` tokens in id order: the sentencepiece pieces, then `<unused_N>` for ids the tokenizer does not have."""
    pieces = [tokenizer.id_to_piece(i) for i in range(min(size, tokenizer.vocab_size))]
    return pieces + [f"<unused_{i}>" for i in range(len(pieces), size)]


def ct2_spec(model, config: ModelConfig, tokenizer):
    """The `ctranslate2.specs.TransformerSpec` of a Flax `Transformer`, filled with its parameters (fp32 copies)."""
    _require_ctranslate2()
    from ctranslate2.specs import common_spec, transformer_spec

    from jax_transformer.model.transformer import sinusoidal_positions

    activation = {"relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU,
                  "gelu_tanh": common_spec.Activation.GELUTanh}[config.activation]  # fmt: skip
    pre_norm = config.norm_position == "pre"
    stack = dict(pre_norm=pre_norm, activation=activation, layernorm_embedding=config.embedding_norm)
    spec = transformer_spec.TransformerSpec(
        transformer_spec.TransformerEncoderSpec(config.num_encoder_layers, config.num_heads, **stack),
        transformer_spec.TransformerDecoderSpec(config.num_decoder_layers, config.num_heads, **stack),
    )
    weights = to_state_dict(model)  # torch names and layouts: Linear weights are (out, in)
    used = set()

    def get(name: str) -> np.ndarray:
        used.add(name)
        return np.array(weights[name], dtype=np.float32)  # a writable copy: CTranslate2 quantizes in place

    def linear(target, *names):  # one linear, or several fused along the output axis
        target.weight = np.concatenate([get(f"{n}.weight") for n in names])
        if f"{names[0]}.bias" in weights:
            target.bias = np.concatenate([get(f"{n}.bias") for n in names])

    def norm(target, name):
        target.gamma, target.beta = get(f"{name}.weight"), get(f"{name}.bias")

    def attention(target, name, self_attention):
        q, k, v, out = (f"{name}.{part}" for part in ("query", "key", "value", "out"))
        if self_attention:
            linear(target.linear[0], q, k, v)
        else:
            linear(target.linear[0], q)
            linear(target.linear[1], k, v)
        linear(target.linear[-1], out)

    def fill_stack(target, name, embedding):
        embeddings = target.embeddings[0] if isinstance(target.embeddings, list) else target.embeddings
        embeddings.weight = get(embedding)
        target.scale_embeddings = config.scale_embeddings
        if config.positional == "learned":
            target.position_encodings.encodings = get(f"{name}.position_embedding.weight")
        else:
            target.position_encodings.encodings = np.array(
                sinusoidal_positions(config.max_len, config.d_model, config.sinusoidal_layout)
            )
        if config.embedding_norm:
            norm(target.layernorm_embedding, f"{name}.embedding_norm")
        if pre_norm:
            norm(target.layer_norm, f"{name}.final_norm")
        for i, layer in enumerate(target.layer):
            prefix = f"{name}.layers.{i}"
            attention(layer.self_attention, f"{prefix}.self_attn", self_attention=True)
            norm(layer.self_attention.layer_norm, f"{prefix}.self_attn_norm")
            if name == "decoder":
                attention(layer.attention, f"{prefix}.cross_attn", self_attention=False)
                norm(layer.attention.layer_norm, f"{prefix}.cross_attn_norm")
            linear(layer.ffn.linear_0, f"{prefix}.feed_forward.linear1")
            linear(layer.ffn.linear_1, f"{prefix}.feed_forward.linear2")
            norm(layer.ffn.layer_norm, f"{prefix}.feed_forward_norm")

    target_embedding = "source_embedding.weight" if config.share_embeddings else "target_embedding.weight"
    fill_stack(spec.encoder, "encoder", "source_embedding.weight")
    fill_stack(spec.decoder, "decoder", target_embedding)
    spec.decoder.projection.weight = get("output_projection.weight" if not config.tie_output else target_embedding)
    if set(weights) - used:  # a parameter the spec does not carry would silently change the function
        raise UserError(f"the CTranslate2 spec has no place for parameters {sorted(set(weights) - used)[:5]}")

    spec.config.layer_norm_epsilon = config.layer_norm_eps
    piece = tokenizer.id_to_piece
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = (
        piece(tokenizer.unk_id), piece(tokenizer.bos_id), piece(tokenizer.eos_id))  # fmt: skip
    spec.config.decoder_start_token = piece(tokenizer.bos_id)
    spec.config.add_source_eos = True  # our sources end with EOS (data/pipeline.py)
    spec.register_source_vocabulary(vocabulary(tokenizer, config.vocab_size))
    spec.register_target_vocabulary(vocabulary(tokenizer, config.tgt_vocab_size))
    return spec


def save_ct2(model, config: Config, tokenizer, out_dir: str, quantization: str = "float32") -> None:
    """Write a CTranslate2 model directory for `model` (weights stored as `quantization`), with our tokenizer and
    config beside it. `out_dir` must not exist or be empty (checked by the caller)."""
    check_quantization(quantization)
    spec = ct2_spec(model, config.model, tokenizer)
    spec.validate()
    spec.optimize(quantization=quantization)
    os.makedirs(out_dir, exist_ok=True)
    spec.save(out_dir)
    config.save(os.path.join(out_dir, CONFIG_NAME))
    with open(os.path.join(out_dir, EXPORT_NAME), "w", encoding="utf-8") as f:
        json.dump({"quantization": quantization}, f)
    tokenizer.save(os.path.join(out_dir, "spm.model"))


def _stored_quantization(path: str) -> str | None:
    """The weight type `save_ct2` stored in `path`, or None (an export made before it was recorded)."""
    try:
        with open(os.path.join(path, EXPORT_NAME), encoding="utf-8") as f:
            return str(json.load(f)["quantization"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _computed_type(path: str, compute_type: str) -> str | None:
    """The type CTranslate2 will multiply in when it loads `path` with `compute_type`: the stored weight type for
    "default", None where it is not known here ("auto": CTranslate2 picks by the machine), else `compute_type` (a
    float32 export loaded with compute_type="int8" multiplies in int8)."""
    if compute_type == "default":
        return _stored_quantization(path)
    return None if compute_type == "auto" else compute_type


class CT2Translator:
    """A CTranslate2 model with our tokenizer and config: `translate` takes the same arguments as
    `decode.translator.Translator.translate`, so `translate` and `evaluate` switch engine by directory."""

    def __init__(self, path: str, compute_type: str = "default", threads: int | None = None):
        choose_gemm_backend(_computed_type(path, compute_type))
        ctranslate2 = _require_ctranslate2()
        from jax_transformer.data.tokenizer import Tokenizer

        self.config = Config.load(os.path.join(path, CONFIG_NAME))
        self.tokenizer = Tokenizer.load(os.path.join(path, "spm.model"))
        threads = threads or available_cores()
        try:
            self.model = ctranslate2.Translator(path, device="cpu", compute_type=compute_type,
                                                inter_threads=1, intra_threads=threads)  # fmt: skip
        except (RuntimeError, ValueError) as e:
            raise UserError(f"{path}: CTranslate2 cannot load this model ({e})") from None
        size = self.config.model.tgt_vocab_size
        self.target_ids = {token: i for i, token in enumerate(vocabulary(self.tokenizer, size))}
        self._told_penalty = False

    def pieces(self, ids) -> list[str]:
        return [self.tokenizer.id_to_piece(i) for i in ids]

    def search(self, sources: list[list[int]], beam_size: int, alpha: float, return_scores: bool = False):
        """Token ids (EOS-free lists; PAD/BOS never produced) of the best hypothesis of each source (ids without
        EOS, at most model.max_len - 1 of them), with our per-sentence length limits; with `return_scores` also
        CTranslate2's score of each (log P / length^alpha)."""
        if alpha and not self._told_penalty:
            print(f"note: CTranslate2's length penalty divides log P by length^{alpha:g}, not by GNMT's "
                  f"((5 + length) / 6)^{alpha:g} as this package's search does; pass --alpha 0 for the same objective",
                  file=sys.stderr)  # fmt: skip
            self._told_penalty = True
        from jax_transformer.decode.translator import decode_token_budget

        dcfg, model_len = self.config.decode, self.config.model.max_len
        limits = [min(len(s) + 1 + dcfg.max_extra_len, model_len) for s in sources]  # EOS counted on both sides
        banned = [self.pieces([self.tokenizer.pad_id]), self.pieces([self.tokenizer.bos_id])]  # never produced
        outputs, scores = [None] * len(sources), [0.0] * len(sources)
        budget = decode_token_budget(self.config, beam_size)
        for limit in sorted(set(limits)):
            rows = [i for i, n in enumerate(limits) if n == limit]
            results = self.model.translate_batch(
                [self.pieces(sources[i]) for i in rows], beam_size=beam_size, length_penalty=alpha,
                max_decoding_length=limit - 1, min_decoding_length=dcfg.min_len, max_input_length=0,
                no_repeat_ngram_size=dcfg.no_repeat_ngram_size, suppress_sequences=banned,
                max_batch_size=budget, batch_type="tokens", return_scores=return_scores,
            )  # fmt: skip
            for i, result in zip(rows, results, strict=True):
                outputs[i] = [self.target_ids.get(t, self.tokenizer.unk_id) for t in result.hypotheses[0]]
                if return_scores:
                    scores[i] = result.scores[0]
        return (outputs, scores) if return_scores else outputs

    def translate(self, sentences: list[str], beam_size=None, alpha=None, progress=False) -> list[str]:
        """Translate raw sentences, as `Translator.translate` (sources truncated as in training)."""
        from jax_transformer.decode.translator import prepare_sources

        dcfg = self.config.decode
        beam_size = dcfg.beam_size if beam_size is None else beam_size
        alpha = dcfg.alpha if alpha is None else alpha
        sources = prepare_sources(self.tokenizer, sentences, self.config)
        return self.tokenizer.decode(self.search(sources, beam_size, alpha))
