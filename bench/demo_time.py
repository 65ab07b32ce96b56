"""Times `make demo`'s two commands (after installation) with a cold XLA compilation cache, and prints the demo's
validation figures: the A/B bench for the demo's batching and schedule.

    python bench/demo_time.py                              # the demo as configured
    python bench/demo_time.py --config.data.pack_length=0  # any override of configs/multi30k_en_de_demo.py

Each run trains in a fresh run directory (runs/demo_time_<label>, replaced) with its own empty compilation cache,
then translates three validation sentences with beam 4 as `make demo` does. Prints one markdown row: wall time of
training and of translating, batch shapes, real-token share, validation perplexity and greedy BLEU (300 sentences).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="demo")
    parser.add_argument("--config", default="configs/multi30k_en_de_demo.py")
    args, overrides = parser.parse_known_args()
    name = f"demo_time_{args.label}"
    run_dir = os.path.join(common.REPO_ROOT, "runs", name)
    shutil.rmtree(run_dir, ignore_errors=True)
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": tempfile.mkdtemp(prefix="demo_time_xla_")}
    python = sys.executable
    started = time.time()
    train = subprocess.run(
        [python, "train.py", "--config", args.config, f"--config.name={name}", *overrides],
        cwd=common.REPO_ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    train_s = time.time() - started
    if train.returncode:
        sys.exit(f"training failed:\n{train.stdout[-3000:]}\n{train.stderr[-3000:]}")
    log = train.stdout + train.stderr
    data_line = next((line for line in log.splitlines() if line.startswith("data:")), "")
    started = time.time()
    sources = subprocess.run(
        f"zcat data/multi30k/val.en.gz | head -n 3 | {python} -m jax_transformer.translate {run_dir} --beam 4",
        shell=True, cwd=common.REPO_ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    translate_s = time.time() - started
    records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8")]
    valid = [r for r in records if r.get("kind") == "valid"][-1]
    buckets = re.search(r"in (\d+) shapes?[^,]*, ([\d.]+%) real tokens", data_line)
    trained = [r for r in records if r.get("kind") == "train"]
    if buckets:
        shapes, real = buckets.group(1), buckets.group(2)
    else:  # packed rows stream in one shape; the share of real tokens is measured as they come
        shapes = "1" if "rows of" in data_line else "?"
        real = f"{trained[-1]['real_token_share']:.1%}" if "real_token_share" in trained[-1] else "?"
    print("\n".join(common.machine_lines()))
    print(f"overrides: {' '.join(overrides) or '(none)'}")
    print(sources.stdout.strip())
    print(common.markdown_table(
        ["run", "train s", "translate s", "total min", "shapes", "real tokens", "val ppl", "greedy val BLEU (300)"],
        [[args.label, f"{train_s:.0f}", f"{translate_s:.0f}", f"{(train_s + translate_s) / 60:.1f}",
          shapes, real, f"{valid['ppl']:.2f}",
          f"{valid.get('bleu', float('nan')):.2f}"]],
    ))  # fmt: skip


if __name__ == "__main__":
    main()
