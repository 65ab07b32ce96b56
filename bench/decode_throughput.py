"""Beam-search decoding speed: JAX with the KV cache, JAX without it, and Hugging Face generate() on the exported
weights, on the same sentences in the same batches; with the BLEU each gets (they must agree).

  python bench/decode_throughput.py --model runs/multi30k_en_de_demo [--beam 4] [--sentences 1000] [--batch 64]

"Uncached" runs the same beam search, but every step re-runs the whole decoder over the prefix (what decoding costs
without a cache). Hugging Face uses num_beams=K, length_penalty=0 (see the README for why its penalty differs) and
max_new_tokens = our per-batch limit; our searches use alpha=0 here too so that all search the same objective. The
first row runs our beam search with Hugging Face's finishing rule (`finish_from_top_k`: only top-K candidates may
finish), so that its outputs can be compared with generate()'s; the second with our default rule.
Every decoder first translates one batch of each shape (JAX compiles there); then all batches are timed.
"""

import argparse
import gzip
import os
import tempfile
import time

import common  # noqa: F401  (puts the repository on sys.path)
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_transformer.decode.search import CACHE_BLOCK, beam_search, output_limits
from jax_transformer.decode.translator import load_translator
from jax_transformer.metrics import bleu


class UncachedStepper:
    """Presents `decode_step` like the model's, but keeps the token prefix as its "cache" and re-runs the full
    decoder each step. Beam search reorders the prefix rows exactly as it would reorder a KV cache."""

    def __init__(self, model):
        self.model, self.config = model, model.config

    def encode(self, src_ids):
        return self.model.encode(src_ids)

    def cross_key_values(self, memory):
        return memory

    def init_cache(self, batch, max_len):  # shaped (rows, 1, len, 1) like a KV cache, so the search can grow it
        return {"tokens": jnp.full((batch, 1, max_len, 1), self.config.pad_id, jnp.int32)}

    def decode_step(self, token_ids, index, cache, memory, src_mask):
        tokens = cache["tokens"].at[:, 0, index, 0].set(token_ids)
        logits = self.model.decode(tokens[:, 0, :, 0], memory, src_mask)  # (batch, len, vocab): all positions again
        return jax.lax.dynamic_index_in_dim(logits, index, axis=1, keepdims=False), {"tokens": tokens}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a trained run or model directory")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--sentences", type=int, default=1000, help="first N of Multi30k test2016")
    parser.add_argument("--batch", type=int, default=64, help="sentences per batch (all three use the same)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["uncached", "hf"])
    parser.add_argument("--cache-block", type=int, default=CACHE_BLOCK,
                        help="first length of the growing KV cache (0: one cache of the full output length)")
    args = parser.parse_args()

    translator = load_translator(args.model)
    config, tok = translator.config, translator.tokenizer
    lang_src, lang_tgt = config.data.src_lang, config.data.tgt_lang
    read = lambda lang: gzip.open(f"data/multi30k/test_2016_flickr.{lang}.gz", "rt", encoding="utf-8").read()
    sources = read(lang_src).splitlines()[: args.sentences]
    references = read(lang_tgt).splitlines()[: args.sentences]
    ids = tok.encode(sources)
    order = np.argsort([len(s) for s in ids], kind="stable")  # length-sorted batches, the same for everyone
    batches = []
    for start in range(0, len(order), args.batch):
        rows = order[start : start + args.batch]
        width = -(-max(len(ids[i]) + 1 for i in rows) // 8) * 8
        src = np.zeros((len(rows), width), np.int32)
        for r, i in enumerate(rows):
            src[r, : len(ids[i]) + 1] = ids[i] + [tok.eos_id]
        batches.append((rows, src))

    model = nnx.merge(translator.graphdef, translator.params, translator.rest)
    extra, cap = config.decode.max_extra_len, config.model.max_len

    def jax_runner(stepper, finish_from_top_k=True):
        @jax.jit
        def run(src, limits):
            max_len = src.shape[1] + extra
            return beam_search(stepper, src, args.beam, min(max_len, cap), tok.bos_id, tok.eos_id, 0.0, limits,
                               cache_block=args.cache_block or None, finish_from_top_k=finish_from_top_k)[0]

        def translate(src):
            limits = output_limits(jnp.asarray(src), 0, extra, min(src.shape[1] + extra, cap))
            return np.asarray(run(src, limits))

        return translate

    runners = {"jax cached, HF's finishing rule": jax_runner(model)}
    runners["jax cached, default rule"] = jax_runner(model, finish_from_top_k=False)
    if "uncached" not in args.skip:
        runners["jax uncached"] = jax_runner(UncachedStepper(model))
    if "hf" not in args.skip:
        import torch
        from transformers import AutoModelForSeq2SeqLM

        from jax_transformer.interop.hf_export import save_hf

        out = os.path.join(tempfile.mkdtemp(), "hf")
        save_hf(model, config, tok, out)
        hf = AutoModelForSeq2SeqLM.from_pretrained(out).eval()

        def hf_translate(src):
            with torch.no_grad():
                src_t = torch.as_tensor(src, dtype=torch.long)
                out_ids = hf.generate(
                    input_ids=src_t, attention_mask=src_t != 0, num_beams=args.beam, length_penalty=0.0,
                    max_new_tokens=min(src.shape[1] + extra, cap), early_stopping="never", do_sample=False,
                )  # fmt: skip
            return out_ids[:, 1:].numpy()  # drop the decoder start token

        runners["hf generate"] = hf_translate

    print(
        f"beam {args.beam}, {len(sources)} sentences of Multi30k test2016 in {len(batches)} batches of <= {args.batch};"
        f" JAX KV cache grown from {args.cache_block or 'the full output length'}"
    )
    rows, first = [], None
    for name, translate in runners.items():
        started = time.perf_counter()
        for src in {src.shape: src for _, src in batches}.values():  # one batch per shape: compile each first
            translate(src)
        warmup = time.perf_counter() - started
        hypotheses = [""] * len(sources)
        started = time.perf_counter()
        for rows_idx, src in batches:
            for r, text in zip(rows_idx, tok.decode(translate(src).tolist()), strict=True):
                hypotheses[r] = text
        elapsed = time.perf_counter() - started
        score = bleu(hypotheses, references)[0].score
        first = first or hypotheses
        same = sum(a == b for a, b in zip(hypotheses, first, strict=True)) / len(first)
        rows.append(f"| {name} | {len(sources) / elapsed:,.1f} | {elapsed:,.1f} | {warmup:,.1f} | {score:.2f} "
                    f"| {same:.1%} |")  # fmt: skip
    print("\n| decoder | sentences/s | seconds | warm-up s | BLEU | outputs identical to the first row |")
    print("|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows))
    print(
        "(warm-up: one call per batch shape before timing; for the JAX rows that is compiling, or loading from the"
        " persistent compilation cache)"
    )


if __name__ == "__main__":
    main()
