"""The whole benchmark suite in one command: training step against the peers, beam decoding against Hugging Face,
and the real training loop's input pipeline. Each part runs in its own child process, one after the other (never
two at once: on a small CPU they would slow each other down), and prints its markdown table.

    python bench/run_all.py --model runs/multi30k_en_de --out bench.md
    python bench/run_all.py --quick        # fewer timed steps and 200 sentences: a smoke run, not figures to quote

Parts (each script's docstring says exactly what it measures; the report prints, above each table, what its rows
compare):
- `bench/peers.py`: one training step of tiny / small / base, post-norm and pre-norm, this project (JAX fp32, bf16)
  against torch_ref, torch.nn.Transformer and Hugging Face Marian (post-norm) / Pegasus (pre-norm), all with the
  same architecture, dropout sites and rates, weights, batch, loss, optimizer and threads; real tokens/s and MFU
  against the measured matmul peak of each row's precision (printed);
- `bench/decode_throughput.py --skip uncached`: beam-4 sentences/s on Multi30k test2016, our cached beam search
  against Hugging Face generate() and CTranslate2 on the exported weights, each library in its own process, one
  per-sentence length limit for all; outputs meant to be identical are checked (exit 1 if not); needs a trained
  model (--model); skipped, with a note, when there is none;
- `bench/pipeline.py`: the real training loop on Multi30k: tokens/s with the input pipeline, its share of the step
  time, and the padding efficiency;
- `bench/profile_step.py --sizes tiny base --precisions fp32 bf16`: a jax.profiler trace of our training step
  grouped by XLA operation, with the matrix products' own GFLOP/s (where the time goes, and so what is left to gain).
Run it on a quiet machine: anything else running shows up in every figure.
"""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


# What the rows of each part compare (printed above its table, so that no figure is read without it).
COMPARED = {
    "peers": "every row of a size and norm placement: one training step (forward, label-smoothed loss, backward, "
    "clipping, Adam) of the same architecture (norm placement, final norms, dropout sites and rates, tied "
    "embeddings), from the same weights, on the same batch, with the same torch threads and host-memory setting; "
    "MFU against the matmul peak of the row's precision",
    "decode": "every row: beam 4, alpha 0, the same sentences in the same batches, one per-sentence output limit, "
    "PAD/BOS banned, threads = the cores used, each library in its own process; 'identical' counts outputs equal "
    "to the row named in 'compared with' (searches under the same rules must agree on every sentence)",
    "pipeline": "one recipe's real training loop: the input pipeline's time per batch against the whole update",
    "profile": "our training step only: time per XLA operation group, and the matrix products' GFLOP/s against the "
    "matmul peak",
}


def part(title: str, argv: list[str], log: list[str], compared: str) -> int:
    """Run one bench script as a child process, echo its output, and add it to the report under `title`."""
    print(f"\n## {title}\n\nCompared: {compared}.\n\n$ python {' '.join(argv)}", flush=True)
    started = time.time()
    result = subprocess.run([sys.executable, *argv], cwd=os.path.dirname(HERE), stdout=subprocess.PIPE, text=True)
    print(result.stdout, flush=True)
    status = "" if result.returncode == 0 else f" (exit status {result.returncode}: see its error above)"
    log += [f"## {title}", "", f"Compared: {compared}.", "", f"`python {' '.join(argv)}` "
            f"({time.time() - started:.0f} s){status}", "", result.stdout]  # fmt: skip
    return result.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="runs/multi30k_en_de", help="trained run or model directory to decode with")
    parser.add_argument("--config", default="configs/multi30k_en_de_8k.py", help="recipe for the training parts")
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer steps and sentences")
    parser.add_argument("--skip", nargs="*", default=[], choices=["peers", "decode", "pipeline", "profile"])
    parser.add_argument("--out", default="", help="also write the report (markdown) here")
    args = parser.parse_args()

    log: list[str] = ["# Benchmark report", ""]
    failures = 0
    if "peers" not in args.skip:
        quick = ["--steps", "2", "--warmup", "1"] if args.quick else []
        failures += part("Training step against the peers", ["bench/peers.py", "--config", args.config, *quick], log,
                         COMPARED["peers"])  # fmt: skip
    if "decode" not in args.skip:
        if os.path.isdir(args.model):
            quick = ["--sentences", "200"] if args.quick else []
            argv = ["bench/decode_throughput.py", "--model", args.model, "--skip", "uncached", *quick]
            failures += part("Beam decoding against Hugging Face and CTranslate2", argv, log, COMPARED["decode"])
        else:
            note = f"skipped: no trained model at {args.model} (train one: `python train.py --config {args.config}`)"
            print(f"\n## Beam decoding\n\n{note}")
            log += ["## Beam decoding", "", note, ""]
    if "pipeline" not in args.skip:
        quick = ["--steps", "120", "--skip-steps", "60", "--log-every", "20"] if args.quick else []
        failures += part("The real training loop and its input pipeline", ["bench/pipeline.py", "--config",
                         args.config, *quick], log, COMPARED["pipeline"])  # fmt: skip
    if "profile" not in args.skip:
        argv = ["bench/profile_step.py", "--config", args.config, "--sizes", "tiny", "base", "--precisions", "fp32",
                "bf16"]  # fmt: skip
        argv += ["--steps", "1"] if args.quick else []
        failures += part("Where our training step spends its time", argv, log, COMPARED["profile"])
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("\n".join(log))
        print(f"report written to {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
