"""Start-up time and peak memory of training on a corpus far bigger than Multi30k: the streaming loader's bound.

    python bench/stream_scale.py                      # 5,000,000 synthetic pairs against Multi30k (29,000)
    python bench/stream_scale.py --pairs 1000000 --keep /tmp/corpus1m

Makes a synthetic parallel corpus (random sentences of 4-30 words from a 20,000-word vocabulary, the target a word-
by-word mapping of the source; in a temporary folder, never committed), prepares it once (array_record through TFDS,
and the vocabulary, both cached by content; timed and reported apart), then times `train.py` on it and on the bundled
Multi30k with the same config (the demo's: packed rows of 64 tokens, 2,048 tokens per batch, `--steps` updates),
each in a fresh run directory with an empty compilation cache, and a second run on the big corpus (its preparation
and vocabulary cached, as for the first); all of this twice, with the demo's packed rows and with length buckets
(`data.pack_length=0`, 3-token steps: windows of 100,000 pairs). Reported for each: seconds from the command's start
to its first finished update ("start-up": reading nothing but the first batch or window, plus one compilation) and
its peak resident memory (the process's maxrss from wait4).
"""

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import common
import numpy as np

MULTI30K = os.path.join(common.REPO_ROOT, "data", "multi30k")


def make_corpus(folder: str, pairs: int, seed: int = 0) -> None:
    """train.{en,de}: `pairs` lines each; val.{en,de}: the first 500 Multi30k validation pairs (short evaluations)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(20_000)]
    german = [w[::-1] + "en" for w in words]  # the "translation" of word i
    with open(os.path.join(folder, "train.en"), "w") as en, open(os.path.join(folder, "train.de"), "w") as de:
        for start in range(0, pairs, 100_000):
            n = min(100_000, pairs - start)
            lengths = rng.integers(4, 31, n)
            ids = rng.zipf(1.2, lengths.sum()) % len(words)  # a long-tailed word distribution, as in text
            cuts = np.cumsum(lengths)[:-1]
            for sentence in np.split(ids, cuts):
                en.write(" ".join(words[i] for i in sentence) + "\n")
                de.write(" ".join(german[i] for i in sentence) + "\n")
    for lang in ("en", "de"):
        with gzip.open(os.path.join(MULTI30K, f"val.{lang}.gz"), "rt", encoding="utf-8") as src:
            lines = [next(src) for _ in range(500)]
        with open(os.path.join(folder, f"val.{lang}"), "w", encoding="utf-8") as dst:
            dst.writelines(lines)


def timed_run(python: str, args: list[str], env: dict) -> dict:
    """Run train.py; seconds to its first logged update, total seconds, peak RSS (GiB) of the process."""
    started = time.time()
    proc = subprocess.Popen([python, "train.py", *args], cwd=common.REPO_ROOT, env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)  # fmt: skip
    first_step, data_line, tail = None, "", []
    for line in proc.stderr:
        tail = (tail + [line.rstrip()])[-20:]
        if first_step is None and re.match(r"step 1: loss", line):
            first_step = time.time() - started
        if line.startswith("data: "):
            data_line = line.strip()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit("train.py failed:\n" + "\n".join(tail))
    return {"startup_s": first_step, "total_s": time.time() - started, "rss_gib": usage.ru_maxrss / 2**20,
            "data": data_line}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=5_000_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--keep", default="", help="make (or reuse) the corpus and its cache in this folder")
    args = parser.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="stream_scale_")
    corpus, cache = os.path.join(work, "corpus"), os.path.join(work, "cache")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    common_args = ["--config", "configs/multi30k_en_de_demo.py", f"--config.train.steps={args.steps}",
                   "--config.train.log_every=1", "--config.train.eval_every=0", "--config.train.save_every=1000000",
                   f"--config.data.cache_dir={cache}"]  # fmt: skip
    python = sys.executable
    try:
        if not os.path.isfile(os.path.join(corpus, "train.de")):
            started = time.time()
            make_corpus(corpus, args.pairs)
            size = sum(os.path.getsize(os.path.join(corpus, f)) for f in os.listdir(corpus)) / 2**20
            print(f"- made {args.pairs:,} synthetic pairs in {time.time() - started:.0f} s ({size:,.0f} MiB)")
        from jax_transformer.config import load_config_file
        from jax_transformer.data import pipeline

        def prepare(overrides: list[str]) -> tuple[float, float]:
            """The split's array_record files and vocabulary, into the cache; seconds for each."""
            config = load_config_file("configs/multi30k_en_de_demo.py", overrides)
            started = time.time()
            split = pipeline.open_split(config.data, "train")
            prepared, started = time.time() - started, time.time()
            vocab_dir = tempfile.mkdtemp(prefix="stream_scale_vocab_")
            pipeline.get_tokenizer(config.data, vocab_dir, source=split)
            shutil.rmtree(vocab_dir)
            return prepared, time.time() - started

        big_corpus = [f"data.path={corpus}", f"data.cache_dir={cache}", "data.spm_max_sentences=500000"]
        prepared, vocabulary = prepare(big_corpus)
        print(f"- preparation (once; cached by content): array_record {prepared:.0f} s, vocabulary (500,000 sampled "
              f"sentences) {vocabulary:.0f} s")  # fmt: skip
        prepare([f"data.path={MULTI30K}", f"data.cache_dir={cache}"])  # Multi30k's too: each run opens a prepared split
        runs = {}
        big = ["--config.data.spm_max_sentences=500000"]  # the vocabulary prepared above
        buckets = ["--config.data.pack_length=0", "--config.data.length_bucket_step=3"]
        corpora = [("Multi30k (29,000 pairs)", MULTI30K, []), (f"synthetic ({args.pairs:,} pairs)", corpus, big),
                   (f"synthetic ({args.pairs:,} pairs), again", corpus, big)]  # fmt: skip
        cases = [(f"{name}: {corpus_label}", path, extra + batching)
                 for name, batching in (("packed rows", []), ("length buckets", buckets))
                 for corpus_label, path, extra in corpora]  # fmt: skip
        for label, path, extra in cases:
            run_dir = os.path.join(work, "runs", re.sub(r"\W+", "_", label))
            shutil.rmtree(run_dir, ignore_errors=True)
            xla_cache = tempfile.mkdtemp(prefix="stream_scale_xla_")  # every run compiles its step once
            run_env = {**env, "JAX_COMPILATION_CACHE_DIR": xla_cache}
            runs[label] = timed_run(python, [*common_args, f"--config.data.path={path}", f"--config.run_dir={run_dir}",
                                             *extra], run_env)  # fmt: skip
            shutil.rmtree(xla_cache, ignore_errors=True)
        print("\n".join(common.machine_lines()))
        print(f"- `train.py --config configs/multi30k_en_de_demo.py`, {args.steps} updates, no evaluation; each run "
              "with an empty compilation cache (start-up includes compiling the step)\n")
        print("| batching: corpus | start-up to the first update | whole run | peak resident memory |\n"
              "|---|---:|---:|---:|")
        for label, r in runs.items():
            print(f"| {label} | {r['startup_s']:.1f} s | {r['total_s']:.1f} s | {r['rss_gib']:.2f} GiB |")
        for label, r in runs.items():
            print(f"- {label}: {r['data']}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
