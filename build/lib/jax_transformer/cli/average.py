"""Average the parameters of a run's last N checkpoints into a model directory.

  python -m jax_transformer.average runs/multi30k_en_de --last 10 --out runs/multi30k_en_de/avg10
  python -m jax_transformer.average runs/multi30k_en_de --last 10 --up-to 4000 --out runs/multi30k_en_de/avg10_at4000

The output (config.json, model.safetensors, spm.model) is read by translate, evaluate and export like a run.
"""

import argparse
import os
import sys

from jax_transformer.cli import require_new_output_dir, run_cli


def average_run(run_dir: str, last: int, out_dir: str, up_to: int | None = None) -> list[int]:
    """Average the last `last` checkpoints of `run_dir` (those at or before step `up_to`, when given) into
    `out_dir`; returns the steps averaged."""
    from flax import nnx

    from jax_transformer.config import UserError
    from jax_transformer.decode.translator import load_translator, save_model_dir
    from jax_transformer.train.checkpoint import Checkpointer, average_params

    if last < 1:
        raise UserError(f"--last must be at least 1, got {last}")
    require_new_output_dir(out_dir, run_dir)
    translator = load_translator(run_dir)
    checkpoints = Checkpointer(os.path.join(run_dir, "checkpoints"), read_only=True)
    kept = sorted(checkpoints.all_steps())
    if up_to is not None:
        if up_to not in kept:
            raise UserError(f"{run_dir} keeps no checkpoint of step {up_to} (it keeps {', '.join(map(str, kept))})")
        kept = [step for step in kept if step <= up_to]
    steps = kept[-last:]
    if len(steps) < last:
        print(f"note: {run_dir} keeps {len(steps)} checkpoints; averaging those ({steps})", file=sys.stderr)
    averaged = average_params(checkpoints, steps)
    nnx.replace_by_pure_dict(translator.params, averaged)
    save_model_dir(translator, out_dir, metadata={"averaged_steps": steps, "source_run": run_dir})
    return steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("run", help="the run directory (runs/NAME)")
    parser.add_argument("--last", type=int, default=10, help="how many of the latest checkpoints (default 10)")
    parser.add_argument("--up-to", type=int, default=None, help="the last checkpoint to average (default: the latest)")
    parser.add_argument("--out", required=True, help="output model directory (must not exist or be empty)")
    args = parser.parse_args(argv)

    def run():
        steps = average_run(args.run, args.last, args.out, args.up_to)
        print(f"averaged steps {', '.join(map(str, steps))} into {args.out}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
