"""Beam-search decoding speed, like for like: our JAX search (KV cache; optionally without), Hugging Face generate() on
the `export --to hf` weights, and CTranslate2 (fp32 and int8) on the `export --to ct2` weights.

  python bench/decode_throughput.py --model runs/multi30k_en_de_demo [--beam 4] [--sentences 1000] [--batch 64]

What is the same for every row: float32 (a bf16-trained run's fp32 weights are decoded in fp32, as the exports
are); the first N sentences of Multi30k test2016, in the same length-sorted batches of
--batch sentences (sources = our ids + EOS); beam size; length penalty 0 (alpha 0: every system searches log P);
PAD and BOS never produced; **one per-sentence output limit**, source length + decode.max_extra_len tokens counting
EOS, forced to end with EOS (ours natively; Hugging Face through a logits processor that forces EOS per row, as its
own forced_eos_token_id does per batch; CTranslate2 takes one max_decoding_length per call, so a batch is split by
limit); threads: XLA's pool, torch.set_num_threads and CTranslate2's intra_threads all use the cores this process
may run on. Each library (and each CTranslate2 model) runs in its own process (sharing one, their thread pools
slowed each other down, up to 4x), which first decodes one batch of each shape (JAX compiles there) and then times
one pass over all batches; the libraries take turns for --repeats rounds and the median round is reported.
Splitting a batch by limit costs CTranslate2 speed (smaller calls), so one more row gives it each batch in one call
with the batch's largest limit, as it is usually run: its outputs differ only where a sentence would pass its own
limit, and are counted.

The finishing rules differ between libraries, so each library is paired with our search run under its rules:
Hugging Face and CTranslate2 finalize only EOS candidates ranked in the top K of the 2K expanded (our
`finish_from_top_k`); CTranslate2 also renormalizes each step's probabilities after banning PAD/BOS
(`renormalize_bans`). Those pairs must give identical outputs: the script exits with status 1 if they do not.
Stopping differs too: our search ends a sentence once no live beam can beat its best finished hypothesis, generate()
(early_stopping="never") once K have finished and none can beat the K-th best: the same output in more steps. The
row "Hugging Face's rules and stopping" runs ours with generate()'s stopping rule (`wait_for_k_finished`): the same
steps as generate(), so its ratio is the like-for-like one.
int8 is compared with CTranslate2 fp32 (its BLEU change is the figure of interest). "Uncached" reruns the whole
decoder over the prefix each step (what decoding costs without a cache).
"""

import argparse
import dataclasses
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import common
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_transformer.decode.search import CACHE_BLOCK, beam_search
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


def strip(rows, eos: int, pad: int) -> list[list[int]]:
    """Output rows up to EOS (excluded), padding dropped: the form every runner returns."""
    out = []
    for row in np.asarray(rows).tolist():
        row = row[: row.index(eos)] if eos in row else row
        out.append([t for t in row if t != pad])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a trained run or model directory")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--sentences", type=int, default=1000, help="first N of Multi30k test2016")
    parser.add_argument("--batch", type=int, default=64, help="sentences per batch (every system uses the same)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of timed passes; the median is shown")
    parser.add_argument("--skip", nargs="*", default=[], choices=["uncached", "hf", "ct2", "jax-default"])
    parser.add_argument("--cache-block", type=int, default=CACHE_BLOCK,
                        help="first length of the growing KV cache (0: one cache of the full output length)")
    parser.add_argument("--worker", choices=GROUPS, default=None, help=argparse.SUPPRESS)  # one library's process
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is None:
        return orchestrate(args)

    threads = common.available_cores()
    translator = load_translator(args.model)
    config, tok = translator.config, translator.tokenizer
    eos, pad, bos = tok.eos_id, tok.pad_id, tok.bos_id
    lang_src = config.data.src_lang
    with gzip.open(f"data/multi30k/test_2016_flickr.{lang_src}.gz", "rt", encoding="utf-8") as f:
        sources = f.read().splitlines()[: args.sentences]
    ids = tok.encode(sources)
    extra, cap = config.decode.max_extra_len, config.model.max_len
    order = np.argsort([len(s) for s in ids], kind="stable")  # length-sorted batches, the same for everyone
    batches = []
    for start in range(0, len(order), args.batch):
        rows = order[start : start + args.batch]
        width = -(-max(len(ids[i]) + 1 for i in rows) // 8) * 8
        src = np.zeros((len(rows), width), np.int32)
        for r, i in enumerate(rows):
            src[r, : len(ids[i]) + 1] = ids[i] + [eos]
        limits = np.array([min(len(ids[i]) + 1 + extra, cap) for i in rows], np.int32)  # EOS counted
        batches.append((rows, src, limits))

    if config.model.dtype == "float32":
        model = nnx.merge(translator.graphdef, translator.params, translator.rest)
    else:  # a run trained in bf16 keeps fp32 weights: decode them in fp32, the peers' precision (fp32 exports)
        from jax_transformer.model.transformer import Transformer

        model = Transformer(dataclasses.replace(config.model, dtype="float32"), rngs=nnx.Rngs(0))
        nnx.update(model, translator.params)
        model.eval()
    runners = {}

    def jax_runner(stepper, **rule):
        @jax.jit
        def run(src, limits):
            max_len = min(src.shape[1] + extra, cap)
            return beam_search(stepper, src, args.beam, max_len, bos, eos, 0.0, limits,
                               cache_block=args.cache_block or None, **rule)[0]  # fmt: skip

        return lambda rows, src, limits: strip(run(src, jnp.asarray(limits)), eos, pad)

    hf_rule = dict(finish_from_top_k=True)
    ct2_rule = dict(finish_from_top_k=True, renormalize_bans=True)
    if args.worker == "jax":
        runners["JAX, KV cache, Hugging Face's rules"] = jax_runner(model, **hf_rule)
        if "hf" not in args.skip:  # generate()'s steps: wait for K finished, stop when none can beat the K-th
            runners[HF_STEPS] = jax_runner(model, **hf_rule, wait_for_k_finished=True)
        if "ct2" not in args.skip:
            runners["JAX, KV cache, CTranslate2's rules"] = jax_runner(model, **ct2_rule)
        if "jax-default" not in args.skip:
            runners["JAX, KV cache, our default rules"] = jax_runner(model)
        if "uncached" not in args.skip:
            runners["JAX, no cache, Hugging Face's rules"] = jax_runner(UncachedStepper(model), **hf_rule)

    workdir = tempfile.mkdtemp()
    if args.worker == "hf":
        import torch
        import transformers
        from transformers import AutoModelForSeq2SeqLM, LogitsProcessor, LogitsProcessorList

        from jax_transformer.interop.hf_export import save_hf

        torch.set_num_threads(threads)
        transformers.logging.set_verbosity_error()  # max_new_tokens per batch overrides the exported max_length
        save_hf(model, config, tok, os.path.join(workdir, "hf"))
        hf = AutoModelForSeq2SeqLM.from_pretrained(os.path.join(workdir, "hf")).eval()

        class PerSentenceLimit(LogitsProcessor):
            """Only EOS, at no cost, at the last position each sentence may fill (our rule; generate() has it
            per batch as forced_eos_token_id). Beam rows are sentence-major: row r is sentence r // beams."""

            def __init__(self, limits):
                self.limits = torch.as_tensor(limits).repeat_interleave(args.beam)

            def __call__(self, input_ids, scores):
                at_limit = input_ids.shape[1] >= self.limits  # tokens so far (decoder start included) + 1 >= limit
                if bool(at_limit.any()):
                    scores[at_limit] = -float("inf")
                    scores[at_limit, eos] = 0.0
                return scores

        def hf_translate(rows, src, limits):
            with torch.no_grad():
                src_t = torch.as_tensor(src, dtype=torch.long)
                out_ids = hf.generate(
                    input_ids=src_t, attention_mask=src_t != pad, num_beams=args.beam, length_penalty=0.0,
                    max_new_tokens=int(limits.max()), early_stopping="never", do_sample=False,
                    logits_processor=LogitsProcessorList([PerSentenceLimit(limits)]),
                )  # fmt: skip
            return strip(out_ids[:, 1:].numpy(), eos, pad)  # the decoder start token dropped

        runners["Hugging Face generate()"] = hf_translate

    if args.worker.startswith("ct2-"):  # one CTranslate2 model per process: two loaded in one ran 4x slower
        from jax_transformer.interop.ct2 import CT2Translator, save_ct2

        quantization = args.worker.removeprefix("ct2-")
        out = os.path.join(workdir, f"ct2_{quantization}")
        save_ct2(model, config, tok, out, quantization)
        engine = CT2Translator(out, threads=threads)

        def ct2_translate(rows, src, limits):
            return engine.search([ids[i] for i in rows], args.beam, 0.0)  # one call per limit in the batch

        runners[f"CTranslate2 {quantization}"] = ct2_translate
        if quantization == "float32":

            def ct2_whole_batch(rows, src, limits):
                results = engine.model.translate_batch(
                    [engine.pieces(ids[i]) for i in rows], beam_size=args.beam, length_penalty=0.0,
                    max_decoding_length=int(limits.max()) - 1, max_input_length=0, max_batch_size=len(rows),
                    suppress_sequences=[engine.pieces([pad]), engine.pieces([bos])],
                )  # fmt: skip
                return [[engine.target_ids[t] for t in r.hypotheses[0]] for r in results]

            runners["CTranslate2 float32, one call per batch"] = ct2_whole_batch

    results = {}
    for name, translate in runners.items():
        started = time.perf_counter()
        for batch in {b[1].shape: b for b in batches}.values():  # one batch per shape: JAX compiles each here
            translate(*batch)
        warmup = time.perf_counter() - started
        tokens = [None] * len(sources)
        started = time.perf_counter()
        for rows, src, limits in batches:
            for r, out in zip(rows, translate(rows, src, limits), strict=True):
                tokens[r] = out
        results[name] = {"seconds": time.perf_counter() - started, "warmup": warmup, "tokens": tokens}
    shutil.rmtree(workdir, ignore_errors=True)
    with open(args.worker_out, "w", encoding="utf-8") as f:
        json.dump(results, f)
    return 0


GROUPS = ("jax", "hf", "ct2-float32", "ct2-int8")
HF_STEPS = "JAX, KV cache, Hugging Face's rules and stopping"
# which outputs must be identical: each library against our search under that library's rules
RULES = {"Hugging Face generate()": "JAX, KV cache, Hugging Face's rules", HF_STEPS: "Hugging Face generate()",
         "CTranslate2 float32": "JAX, KV cache, CTranslate2's rules", "CTranslate2 int8": "CTranslate2 float32",
         "CTranslate2 float32, one call per batch": "CTranslate2 float32"}  # these two: approximations, counted


def orchestrate(args) -> int:
    """Each library in its own process, one timed pass per process, the libraries taking turns for --repeats rounds;
    the median round is reported. Sharing a process, the libraries' thread pools slowed each other down (measured on
    2 cores: generate() at 49-69 sentences/s beside a loaded CTranslate2, 79-84 alone; CTranslate2 fp32 at 75 beside
    a second CTranslate2 model, 303-315 alone)."""
    from jax_transformer.config import Config
    from jax_transformer.data.tokenizer import Tokenizer

    groups = [g for g in GROUPS if g.split("-")[0] not in args.skip]
    timings, warmups, outputs = {}, {}, {}
    argv = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            for group in groups:
                out = os.path.join(tmp, f"{group}.json")
                env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": os.path.join(tmp, "xla")}  # rounds 2+ reuse it
                subprocess.run([sys.executable, __file__, *argv, "--worker", group, "--worker-out", out], check=True,
                               env=env)  # fmt: skip
                with open(out, encoding="utf-8") as f:
                    for name, result in json.load(f).items():
                        timings.setdefault(name, []).append(result["seconds"])
                        warmups.setdefault(name, result["warmup"])  # the first round's: compiling, not a cache load
                        outputs[name] = result["tokens"]
                        print(f"  {name}, round {round_ + 1}: {args.sentences / result['seconds']:.1f} sentences/s",
                              file=sys.stderr)  # fmt: skip

    run = Config.load(os.path.join(args.model, "config.json"))
    tok = Tokenizer.load(os.path.join(args.model, "spm.model"))
    lang_src, lang_tgt = run.data.src_lang, run.data.tgt_lang
    with gzip.open(f"data/multi30k/test_2016_flickr.{lang_tgt}.gz", "rt", encoding="utf-8") as f:
        references = f.read().splitlines()[: args.sentences]
    count = len(references)
    hf_name = "Hugging Face generate()"
    print(f"{common.cpu_model()}, {common.available_cores()} threads per library, each in its own process; beam "
          f"{args.beam}, alpha 0; {count} sentences of Multi30k test2016 ({lang_src}->{lang_tgt}) in batches of <= "
          f"{args.batch}; per-sentence limit source + decode.max_extra_len tokens; JAX KV cache grown from "
          f"{args.cache_block or 'the full output length'}; float32 on every side (the run's model.dtype: "
          f"{run.model.dtype})")  # fmt: skip
    print(f"\nmedian of {args.repeats} rounds; the ratio to Hugging Face is the median (range) of the per-round "
          "ratios:")  # fmt: skip
    print("\n| decoder | sentences/s | x Hugging Face | seconds | warm-up s | BLEU | compared with | identical |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    failures = []
    for name, tokens in outputs.items():
        seconds = statistics.median(timings[name])
        ratio = "-"
        if hf_name in timings:  # per round (the same round: neighbours in time), median and range
            ratios = [hf / t for t, hf in zip(timings[name], timings[hf_name], strict=True)]
            ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        other, same = RULES.get(name), "-"
        if other in outputs:
            matches = sum(a == b for a, b in zip(tokens, outputs[other], strict=True))
            same = f"{matches}/{len(tokens)}"
            if matches != len(tokens) and other != "CTranslate2 float32":  # int8, one limit per batch: approximations
                first = next(i for i, (a, b) in enumerate(zip(tokens, outputs[other], strict=True)) if a != b)
                failures.append(f"{name} differs from {other} on {len(tokens) - matches} sentences (first: #{first})")
        score = bleu(tok.decode(tokens), references)[0].score
        print(f"| {name} | {count / seconds:.1f} | {ratio} | {seconds:.1f} | {warmups[name]:.1f} | {score:.2f} | "
              f"{other or '-'} | {same} |")  # fmt: skip
    if "CTranslate2 int8" in outputs:
        scores = {q: bleu(tok.decode(outputs[f"CTranslate2 {q}"]), references)[0].score for q in ("float32", "int8")}
        print(f"\nint8 changes BLEU by {scores['int8'] - scores['float32']:+.2f} (float32 {scores['float32']:.2f})")
    print("(warm-up: one call per batch shape before timing, in the first round; for the JAX rows that is compiling)")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
