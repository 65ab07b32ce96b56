"""Loading an exported model directory into the PyTorch mirror, and translating text with it.

A directory written by `python -m jax_transformer.export RUN --to torch --out DIR` (or by `average`) holds
`config.json` (the run's resolved config; its `model` section builds the network), `model.safetensors` (torch_ref
parameter names, no pickle) and `spm.model` (the sentencepiece vocabulary, PAD=0 UNK=1 BOS=2 EOS=3):

    from torch_ref import load_pretrained, translate
    model, sp = load_pretrained("exports/multi30k_en_de")
    translate(model, sp, ["A dog runs on the beach."], beam_size=4, alpha=0.6)

Nothing here imports JAX.
"""

import json
import os

import torch

from .decode import beam_search, greedy_search, output_limits
from .model import Transformer, load_config

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
# the paper's decoding (§6.1), used when config.json has no `decode` section
DEFAULT_DECODE = {"beam_size": 4, "alpha": 0.6, "max_extra_len": 50, "min_len": 0, "no_repeat_ngram_size": 0}


def load_pretrained(model_dir: str, device: str | torch.device = "cpu"):
    """(model in eval mode, sentencepiece processor) from an exported directory. Every parameter must match
    (`strict=True`); the decode section of config.json becomes `model.decode_defaults` (used by `translate`)."""
    import sentencepiece
    from safetensors.torch import load_file

    paths = {name: os.path.join(model_dir, name) for name in ("config.json", "model.safetensors", "spm.model")}
    for name, path in paths.items():
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{model_dir} has no {name}; export a model directory with "
                "`python -m jax_transformer.export RUN --to torch --out DIR`"
            )
    with open(paths["config.json"], encoding="utf-8") as f:
        full_config = json.load(f)
    model = Transformer(load_config(full_config))
    model.load_state_dict(load_file(paths["model.safetensors"]), strict=True)
    model.to(device).eval()
    model.decode_defaults = {**DEFAULT_DECODE, **{k: v for k, v in full_config.get("decode", {}).items()}}
    model.max_source_len = int(full_config.get("data", {}).get("max_source_len", 0))

    sp = sentencepiece.SentencePieceProcessor(model_file=paths["spm.model"])
    found = (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id())
    if found != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
        raise ValueError(f"{paths['spm.model']} has pad/unk/bos/eos ids {found}, expected {(0, 1, 2, 3)}")
    return model, sp


def decode_ids(sp, rows) -> list[str]:
    """Texts of id rows as `jax_transformer.data.tokenizer.Tokenizer.decode`: stop at the first EOS, drop PAD and BOS,
    ids outside the vocabulary become UNK."""
    cleaned = []
    for row in rows:
        out = []
        for i in (int(i) for i in row):
            if i == sp.eos_id():
                break
            if i in (sp.pad_id(), sp.bos_id()):
                continue
            out.append(i if 0 <= i < sp.get_piece_size() else sp.unk_id())
        cleaned.append(out)
    return sp.decode(cleaned)


def search(model, src_ids, beam_size: int, alpha: float, max_extra_len: int, min_len: int = 0, no_repeat: int = 0):
    """Token ids (batch, max_len) for a padded batch of source ids (batch, src_len), as `Translator.search` does:
    max_len = min(src_len + max_extra_len, model.max_len), per-sentence limits from the real source lengths;
    min_len and no_repeat (n-gram size) as decode.min_len and decode.no_repeat_ngram_size (0: off)."""
    src_ids = torch.as_tensor(src_ids, dtype=torch.long, device=next(model.parameters()).device)
    max_len = min(src_ids.shape[1] + max_extra_len, model.config.max_len)
    limits = output_limits(src_ids, model.config.pad_id, max_extra_len, max_len)
    if beam_size == 1:
        return greedy_search(model, src_ids, max_len, BOS_ID, EOS_ID, limits, min_len, no_repeat)
    return beam_search(model, src_ids, beam_size, max_len, BOS_ID, EOS_ID, alpha, limits, min_len, no_repeat)[0]


def translate(model, sp, sentences, beam_size=None, alpha=None, max_extra_len=None, batch_size: int = 32):
    """Translations of raw sentences (greedy when beam_size == 1), in input order. Unset search settings come from
    the exported config's decode section (as do min_len and no_repeat_ngram_size), and sources longer than its
    data.max_source_len or than the model's max_len are cut (as `jax_transformer.translate` cuts them). Sentences
    are batched by length; each output depends only on its own source (per-sentence limits), not on its batch."""
    defaults = getattr(model, "decode_defaults", DEFAULT_DECODE)
    beam_size = defaults["beam_size"] if beam_size is None else beam_size
    alpha = defaults["alpha"] if alpha is None else alpha
    max_extra_len = defaults["max_extra_len"] if max_extra_len is None else max_extra_len
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    # cut to data.max_source_len (as in training) and to the positions the model has (model.max_len), EOS included
    limit = min(getattr(model, "max_source_len", 0) or model.config.max_len, model.config.max_len)
    sources = [ids[: limit - 1] + [EOS_ID] for ids in sp.encode(list(sentences), out_type=int)]
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    outputs = [""] * len(sources)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(sources[i]) for i in rows)
        src = torch.full((len(rows), width), model.config.pad_id, dtype=torch.long)
        for r, i in enumerate(rows):
            src[r, : len(sources[i])] = torch.tensor(sources[i])
        options = (defaults["min_len"], defaults["no_repeat_ngram_size"])
        tokens = search(model, src, beam_size, alpha, max_extra_len, *options)
        for i, text in zip(rows, decode_ids(sp, tokens.tolist()), strict=True):
            outputs[i] = text
    return outputs
