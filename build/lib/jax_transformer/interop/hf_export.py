"""Export to a Hugging Face transformers directory: `MarianMTModel` for post-norm models,
`PegasusForConditionalGeneration` for pre-norm ones (the two encoder-decoders of transformers that are exactly our
architecture, one per layer style).

    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
    model, tok = AutoModelForSeq2SeqLM.from_pretrained(DIR), AutoTokenizer.from_pretrained(DIR)
    out = model.generate(**tok(["A dog runs."], return_tensors="pt"), num_beams=4, max_new_tokens=60)
    tok.batch_decode(out, skip_special_tokens=True)

Pre-norm models (transformers 5.x `modeling_pegasus.py`, checked): Pegasus is Marian's twin with pre-norm layers,
x + Sublayer(LayerNorm(x)), and a final LayerNorm after each stack (`model.encoder.layer_norm`,
`model.decoder.layer_norm`: our `final_norm`), with the same concatenated sinusoids, embedding scaling, attention and
feed-forward names. It has one vocabulary for encoder and decoder, so a pre-norm model must share its embeddings.
Everything said below about Marian holds for it too.

How our options map onto Marian (transformers 5.x `modeling_marian.py`, checked):
  * post-norm layers, ReLU/GELU feed-forward, sinusoidal positions, scaled (or unscaled) embeddings, shared or separate
    source/target embeddings, tied or untied output projection, dropout on sub-layers, attention weights and the FFN
    activation all exist in Marian; `final_logits_bias` is exported as zeros (we have none).
  * Marian's sinusoids are 'concatenated' (all sines, then all cosines). A model trained with the paper's
    'interleaved' layout is exported exactly by permuting the d_model features of the residual stream: the embedding
    columns, every LayerNorm, the inputs of the projections reading the residual stream and the outputs of those
    writing to it move together, so the exported network computes the same function (the hidden states inside the HF
    model are the permuted ones). LayerNorm and the attention are invariant under this relabelling.
  * Attention projections without biases (`model.use_bias=False`) are exported with zero biases (Marian always has
    them): the same function; fine-tuning in HF would then also learn those biases.
  * Refused, because neither model can express them: learned positions (the position tables are fixed, recomputed on
    load and never saved), a LayerNorm epsilon other than 1e-5 (fixed in both), and separate source and target
    embeddings in a pre-norm model (Pegasus has one shared vocabulary).
  * Parameters are written in fp32 (a bf16 `param_dtype` is widened exactly); HF computes in the dtype it loads.
  * Decoding starts from our BOS (decoder_start_token_id = 2; Marian models usually start from PAD), never generates
    PAD or BOS (suppress_tokens) and is forced to EOS at the length limit (forced_eos_token_id), as our searches.
    HF has one length limit per batch, ours is per sentence (source length + decode.max_extra_len): pass
    `max_new_tokens` (or generate one sentence at a time) to reproduce ours.
  * Beam search: HF scores finished hypotheses log P / length^length_penalty, not GNMT's ((5 + length) / 6)^alpha, so
    the exported `length_penalty = decode.alpha` is the nearest setting, not the same one. With alpha = 0 and
    length_penalty = 0 (early_stopping='never') the algorithms agree except in one rule: of the 2K candidates
    expanded each step HF only finalizes EOS-ending ones ranked among the top K, we finalize every EOS-ending one,
    so we may return a more probable hypothesis HF never kept. parity_tests/test_hf_export.py measures both.

The tokenizer is a `MarianTokenizer` over our sentencepiece model (source.spm = target.spm = spm.model) with a
vocab.json mapping each piece to our id, so its ids equal `Tokenizer.encode` + EOS. Everything is written as JSON,
safetensors and the sentencepiece protobuf: no pickles.
"""

import json
import os
import shutil
import tempfile

import numpy as np

from jax_transformer.config import Config, ModelConfig, UserError
from jax_transformer.interop.torch_convert import to_state_dict

HF_LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which Marian's and Pegasus' layers use
HF_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}  # transformers' ACT2FN names

# our torch_ref module names -> Marian's, inside one layer
_LAYER_RENAMES = {
    "self_attn.query": "self_attn.q_proj",
    "self_attn.key": "self_attn.k_proj",
    "self_attn.value": "self_attn.v_proj",
    "self_attn.out": "self_attn.out_proj",
    "self_attn_norm": "self_attn_layer_norm",
    "cross_attn.query": "encoder_attn.q_proj",
    "cross_attn.key": "encoder_attn.k_proj",
    "cross_attn.value": "encoder_attn.v_proj",
    "cross_attn.out": "encoder_attn.out_proj",
    "cross_attn_norm": "encoder_attn_layer_norm",
    "feed_forward.linear1": "fc1",
    "feed_forward.linear2": "fc2",
    "feed_forward_norm": "final_layer_norm",
}
_STACK_NORMS = {"final_norm": "layer_norm"}  # pre-norm stacks' last LayerNorm (Pegasus), outside the layers
# how each parameter touches the residual stream (d_model features): 'in' = its input axis (torch weight axis 1),
# 'out' = its output axis (weight axis 0 and the bias), 'norm' = per-feature (LayerNorm), 'embed' = columns
_RESIDUAL_AXIS = {
    "q_proj": "in", "k_proj": "in", "v_proj": "in", "out_proj": "out", "fc1": "in", "fc2": "out",
    "self_attn_layer_norm": "norm", "encoder_attn_layer_norm": "norm", "final_layer_norm": "norm", "layer_norm": "norm",
}  # fmt: skip


def hf_architecture(config: ModelConfig) -> str:
    """'marian' for post-norm models, 'pegasus' for pre-norm ones: the transformers model type they export to."""
    return "pegasus" if config.norm_position == "pre" else "marian"


def require_transformers() -> None:
    """`transformers` is an optional dependency (the `bert` extra): its absence is one line, before any work."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        fix = "pip install -e '.[bert]' (or pip install transformers)"
        raise UserError(f"Hugging Face transformers is not installed; fix: {fix}") from None


def check_exportable(config: ModelConfig) -> None:
    """Raise a UserError naming every option of `config` that the Hugging Face model cannot express."""
    problems = []
    if config.embedding_norm:
        problems.append("model.embedding_norm=True (Marian and Pegasus have no LayerNorm on the embeddings)")
    if config.positional != "sinusoidal":
        problems.append("model.positional='learned' (Marian's and Pegasus' positions are fixed sinusoids)")
    if config.layer_norm_eps != HF_LAYER_NORM_EPS:
        problems.append(f"model.layer_norm_eps={config.layer_norm_eps:g} (the LayerNorm epsilon is fixed at 1e-5)")
    if config.norm_position == "pre" and not config.share_embeddings:
        problems.append(
            "model.share_embeddings=False with model.norm_position='pre' (pre-norm models export to Pegasus, "
            "which has one vocabulary shared by encoder and decoder)"
        )
    if problems:
        raise UserError(
            "cannot export to Hugging Face (Marian for post-norm, Pegasus for pre-norm): " + "; ".join(problems)
            + ". Fix: export with --to torch (torch_ref runs every option), or train with "
            "model.positional=sinusoidal, model.layer_norm_eps=1e-5, no embedding_norm (and shared embeddings when "
            "pre-norm)"
        )  # fmt: skip


def residual_permutation(config: ModelConfig) -> np.ndarray | None:
    """The feature order of the HF model's residual stream: None for 'concatenated' sinusoids (Marian's layout);
    for 'interleaved', HF feature j is our feature perm[j] (sines at our even features first, then cosines)."""
    if config.sinusoidal_layout == "concatenated":
        return None
    return np.concatenate([np.arange(0, config.d_model, 2), np.arange(1, config.d_model, 2)])


def hf_config(config: Config, pad_id: int, bos_id: int, eos_id: int):
    """The `MarianConfig` (post-norm) or `PegasusConfig` (pre-norm) of our model config."""
    from transformers import MarianConfig, PegasusConfig

    m = config.model
    check_exportable(m)
    if hf_architecture(m) == "marian":
        vocabulary = dict(decoder_vocab_size=m.tgt_vocab_size, share_encoder_decoder_embeddings=m.share_embeddings)
        config_class = MarianConfig
    else:
        vocabulary, config_class = {}, PegasusConfig  # one shared vocabulary (checked above)
    return config_class(
        vocab_size=m.vocab_size,
        **vocabulary,
        max_position_embeddings=m.max_len,
        d_model=m.d_model,
        encoder_layers=m.num_encoder_layers,
        decoder_layers=m.num_decoder_layers,
        encoder_attention_heads=m.num_heads,
        decoder_attention_heads=m.num_heads,
        encoder_ffn_dim=m.d_ff,
        decoder_ffn_dim=m.d_ff,
        activation_function=HF_ACTIVATIONS[m.activation],
        dropout=m.dropout,
        attention_dropout=m.attention_dropout,
        activation_dropout=m.ffn_dropout,
        scale_embedding=m.scale_embeddings,
        tie_word_embeddings=m.tie_output,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=bos_id,
        decoder_start_token_id=bos_id,
        forced_eos_token_id=eos_id,
    )


def generation_config(config: Config, pad_id: int, bos_id: int, eos_id: int):
    """HF generation defaults nearest to ours: beam size, alpha as HF's length-penalty exponent, EOS forced at the
    length limit, PAD and BOS never generated, 'never' stop before no live beam can win (as our search), and the
    summary options (decode.min_len as min_new_tokens, decode.no_repeat_ngram_size). HF has no per-sentence limit:
    pass max_new_tokens (ours: source length + decode.max_extra_len) to `generate`."""
    from transformers import GenerationConfig

    return GenerationConfig(
        decoder_start_token_id=bos_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        forced_eos_token_id=eos_id,
        suppress_tokens=[pad_id, bos_id],  # as our searches: never PAD or BOS
        num_beams=config.decode.beam_size,
        length_penalty=config.decode.alpha,
        early_stopping="never",
        max_length=config.model.max_len,
        min_new_tokens=config.decode.min_len or None,  # no EOS before this many tokens, as ours
        no_repeat_ngram_size=config.decode.no_repeat_ngram_size,
    )


def hf_state_dict(model, config: ModelConfig) -> dict[str, np.ndarray]:
    """Our parameters under MarianMTModel / PegasusForConditionalGeneration names (fp32 numpy), the residual features
    permuted for 'interleaved' positions; biases added as zeros where we have none. Tied copies and position tables
    are not included."""
    check_exportable(config)
    ours = to_state_dict(model)  # torch_ref names and layouts
    perm = residual_permutation(config)
    d_model = config.d_model
    out = {}

    def put(name, array, axis_kind):
        if perm is not None and axis_kind == "embed":
            array = array[:, perm]
        elif perm is not None and axis_kind == "in":
            array = array[:, perm] if array.ndim == 2 else array
        elif perm is not None and axis_kind in ("out", "norm"):
            array = array[perm]
        out[name] = np.ascontiguousarray(array, dtype=np.float32)

    for name, array in ours.items():
        if name == "source_embedding.weight":
            put(
                "model.shared.weight" if config.share_embeddings else "model.encoder.embed_tokens.weight",
                array,
                "embed",
            )
        elif name == "target_embedding.weight":
            put("model.decoder.embed_tokens.weight", array, "embed")
        elif name == "output_projection.weight":
            put("lm_head.weight", array, "embed")
        elif name.split(".")[1] in _STACK_NORMS:  # encoder.final_norm.weight
            stack, module, leaf = name.split(".")
            put(f"model.{stack}.{_STACK_NORMS[module]}.{leaf}", array, "norm")
        else:
            stack, _, index, *rest = name.split(".")  # encoder.layers.3.self_attn.query.weight
            module, leaf = ".".join(rest[:-1]), rest[-1]
            if stack not in ("encoder", "decoder") or module not in _LAYER_RENAMES:
                raise UserError(f"no Hugging Face parameter for {name}")
            hf_module = _LAYER_RENAMES[module]
            put(f"model.{stack}.layers.{index}.{hf_module}.{leaf}", array, _RESIDUAL_AXIS[hf_module.split(".")[-1]])
    if not config.use_bias:  # Marian's and Pegasus' attention projections always have biases: zeros are the same
        for stack, n in (("encoder", config.num_encoder_layers), ("decoder", config.num_decoder_layers)):
            attns = ("self_attn",) if stack == "encoder" else ("self_attn", "encoder_attn")
            for i in range(n):
                for attn in attns:
                    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                        out.setdefault(f"model.{stack}.layers.{i}.{attn}.{proj}.bias", np.zeros(d_model, np.float32))
    out["final_logits_bias"] = np.zeros((1, config.tgt_vocab_size), np.float32)
    return out


def to_hf(model, config: Config, pad_id: int = 0, bos_id: int = 2, eos_id: int = 3):
    """An in-memory `MarianMTModel` or `PegasusForConditionalGeneration` (eval mode) holding our model's parameters.
    Every HF parameter is set from ours, except the position tables (HF's own sinusoids) and tied aliases; anything
    else missing is an error."""
    import torch
    from transformers import MarianMTModel, PegasusForConditionalGeneration

    model_class = MarianMTModel if hf_architecture(config.model) == "marian" else PegasusForConditionalGeneration
    hf_model = model_class(hf_config(config, pad_id, bos_id, eos_id)).eval()
    hf_model.generation_config = generation_config(config, pad_id, bos_id, eos_id)
    weights = {name: torch.tensor(array) for name, array in hf_state_dict(model, config.model).items()}
    target = hf_model.state_dict()
    unexpected = sorted(set(weights) - set(target))
    if unexpected:
        raise UserError(f"parameters {model_class.__name__} does not have: {', '.join(unexpected[:5])}")
    for name, value in target.items():
        if name in weights:
            continue
        source = _tied_source(name, config.model)
        if source is not None:
            weights[name] = weights[source]
        elif "embed_positions" in name:
            weights[name] = value  # HF's own (concatenated) sinusoids
        else:
            raise UserError(f"no value for Hugging Face parameter {name}")
    for name, value in weights.items():
        if tuple(value.shape) != tuple(target[name].shape):
            raise UserError(
                f"Hugging Face parameter {name} has shape {tuple(target[name].shape)}, ours {tuple(value.shape)}"
            )
    hf_model.load_state_dict(weights, strict=True)
    return hf_model


def _tied_source(name: str, config: ModelConfig) -> str | None:
    """Which exported parameter a tied HF alias copies (the HF model shares these tensors)."""
    if config.share_embeddings and name in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"):
        return "model.shared.weight"
    if name == "lm_head.weight" and config.tie_output:
        return "model.shared.weight" if config.share_embeddings else "model.decoder.embed_tokens.weight"
    return None


def save_tokenizer(tokenizer, out_dir: str, model_max_length: int) -> None:
    """A `MarianTokenizer` over our sentencepiece model: source.spm, target.spm, vocab.json (piece -> our id),
    tokenizer_config.json. Its `input_ids` are our ids + EOS; `batch_decode(..., skip_special_tokens=True)` drops
    PAD/BOS/EOS."""
    from transformers import MarianTokenizer

    tokenizer.check_special_ids()
    with tempfile.TemporaryDirectory() as tmp:
        spm_path = os.path.join(tmp, "spm.model")
        tokenizer.save(spm_path)
        vocab_path = os.path.join(tmp, "vocab.json")
        vocab = {tokenizer.id_to_piece(i): i for i in range(tokenizer.vocab_size)}
        with open(vocab_path, "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False, indent=1)
        hf_tokenizer = MarianTokenizer(
            source_spm=spm_path, target_spm=spm_path, vocab=vocab_path, unk_token=tokenizer.id_to_piece(1),
            eos_token=tokenizer.id_to_piece(3), pad_token=tokenizer.id_to_piece(0),
            bos_token=tokenizer.id_to_piece(2), model_max_length=model_max_length,
        )  # fmt: skip
        hf_tokenizer.save_pretrained(out_dir)


def save_hf(model, config: Config, tokenizer, out_dir: str) -> None:
    """Write a Hugging Face directory (config.json, generation_config.json, model.safetensors, tokenizer files) for
    our `Transformer` (in eval mode) and its `Tokenizer`: Marian when post-norm, Pegasus when pre-norm; both load with
    `AutoModelForSeq2SeqLM`, the tokenizer (a MarianTokenizer either way) with `AutoTokenizer`. Refuses a non-empty
    `out_dir`."""
    check_exportable(config.model)
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise UserError(f"{out_dir} already exists and is not empty; fix: choose another --out or delete it")
    from transformers.utils import logging as hf_logging

    tokenizer.check_special_ids()
    pad_id, bos_id, eos_id = config.model.pad_id, tokenizer.bos_id, tokenizer.eos_id
    hf_model = to_hf(model, config, pad_id, bos_id, eos_id)
    tmp = f"{out_dir.rstrip(os.sep)}.tmp{os.getpid()}"
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one tiny shard: no "Writing model shards" bar
    try:
        hf_model.save_pretrained(tmp)
        save_tokenizer(tokenizer, tmp, config.model.max_len)
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)  # empty, checked above
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if bars:
            hf_logging.enable_progress_bar()
