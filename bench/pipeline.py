"""Real-data throughput of the whole training loop on Multi30k: tokens/s with the input pipeline included, the share
of the step time the pipeline takes, and how many batch slots are real tokens.

    python bench/pipeline.py                                   # the main recipe, 300 updates in a temporary run
    python bench/pipeline.py --config configs/multi30k_de_en.py --steps 500 --skip-steps 150

Two measurements on the recipe's own data, batching and model:
1. the input pipeline alone: batches of the streaming loader (read, tokenized and batched as they come, in threads:
   an epoch of length-bucket batches, or with data.pack_length 300 batches of packed rows), plus the real-token count
   the training loop does per batch; milliseconds per batch;
2. the real training loop, `jax_transformer.tasks.translation.train` (the engine's loop) on a temporary run directory
   (no evaluation, one checkpoint at the end): real (non-pad) source + target tokens/s and seconds per update from its
   metrics.jsonl, over the log windows after --skip-steps (the first epoch compiles each batch shape once).
"pipeline share" = (1) / (2): the fraction of an update the host spends making its batch. The loop does not overlap
the two, so the model's share is 1 - pipeline share.
"""

import argparse
import dataclasses
import itertools
import os
import sys
import tempfile
import time

import common

from jax_transformer.config import UserError, load_config_file


def pipeline_alone(data, pad_id: int, stream_batches: int) -> dict:
    """Milliseconds per batch over `stream_batches` streamed batches (read, tokenized and batched on the way), with the
    real-token count the trainer does."""
    stream = iter(data.batches)
    next(stream)  # the first batch starts the reading threads (and, for buckets, plans the first window); then time
    source = itertools.islice(stream, stream_batches)
    started = time.perf_counter()
    batches = real = slots = 0
    for batch in source:
        real += int((batch["src"] != pad_id).sum() + (batch["tgt_out"] != pad_id).sum())
        slots += batch["src"].size + batch["tgt_out"].size
        batches += 1
    elapsed = time.perf_counter() - started
    return {"batches": batches, "ms_per_batch": 1000 * elapsed / batches, "real_fraction": real / slots}


def loop_windows(run_dir: str, log_every: int, skip_steps: int) -> dict:
    """Seconds per update and real tokens/s over the training log windows after `skip_steps`."""
    from jax_transformer.train.run_log import read_metrics

    train = [r for r in read_metrics(run_dir) if r.get("kind") == "train"]
    windows = [(b["time"] - a["time"]) / log_every for a, b in itertools.pairwise(train) if a["step"] >= skip_steps]
    rates = [r["tokens_per_s"] for r in train if r["step"] > skip_steps + log_every]
    if not windows:
        raise UserError(f"no training log windows after step {skip_steps}; fix: raise --steps or lower --skip-steps")
    return {"s_per_step": common.median(windows), "tokens_per_s": common.median(rates), "windows": len(windows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/multi30k_en_de_8k.py", help="recipe (.py) or a run's config.json")
    parser.add_argument("--steps", type=int, default=300, help="training updates in the temporary run")
    parser.add_argument("--skip-steps", type=int, default=150, help="updates left out of the figures (compiling)")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.length_bucket_step=2")
    args = parser.parse_args()

    from jax_transformer.cli import run_cli

    def run():
        from jax_transformer.tasks.translation import TranslationData, resolve_config, train

        if args.steps <= args.skip_steps + 2 * args.log_every:
            raise UserError("--steps must exceed --skip-steps by at least two log windows (--log-every)")
        base = load_config_file(args.config, args.overrides)
        with tempfile.TemporaryDirectory() as tmp:
            train_cfg = dataclasses.replace(base.train, steps=args.steps, eval_every=0, bleu_every=0,
                                            save_every=10**9, keep_checkpoints=1, log_every=args.log_every)  # fmt: skip
            config = dataclasses.replace(base, run_dir=os.path.join(tmp, "run"), train=train_cfg)
            os.makedirs(config.directory)
            data = TranslationData(config)
            pad_id = resolve_config(config, data.tokenizer).model.pad_id
            stats = data.batches.stats()
            alone = pipeline_alone(data, pad_id, stats.get("batches", 300))  # buckets: an epoch's batches
            started = time.time()
            train(config)
            wall = time.time() - started
            loop = loop_windows(config.directory, args.log_every, args.skip_steps)
        share = alone["ms_per_batch"] / (1000 * loop["s_per_step"])
        print("\n".join(common.machine_lines() + [common.xla_flags_line()]))
        print(f"- recipe: {args.config} {' '.join(args.overrides)}".rstrip())
        batching = (f"data.pack_length={base.data.pack_length}" if base.data.pack_length
                    else f"data.length_bucket_step={base.data.length_bucket_step}")  # fmt: skip
        layout = (f"{stats['examples']:,} training pairs, {stats['batches']:,} batches/epoch" if
                  "examples" in stats else f"{stats['share']:,} training pairs streamed")  # fmt: skip
        print(f"- {layout} in {stats['shapes']} shape(s) ({batching}, data.max_tokens={base.data.max_tokens:,}); "
              f"{args.steps} updates in {wall:.0f} s, the figures over the {loop['windows']} log windows after update "
              f"{args.skip_steps}\n")  # fmt: skip
        rows = [
            ("real (non-pad) source + target tokens/s, whole loop", f"{loop['tokens_per_s']:,.0f}"),
            ("seconds per update, whole loop (median window)", f"{loop['s_per_step']:.3f}"),
            ("input pipeline alone, ms per batch", f"{alone['ms_per_batch']:.2f}"),
            ("pipeline share of an update", f"{share:.1%}"),
            ("model share of an update (1 - pipeline share)", f"{1 - share:.1%}"),
            ("real tokens per batch slot (padding efficiency)", f"{alone['real_fraction']:.1%}"),
        ]
        print("| measure | value |\n|---|---:|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows))

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
