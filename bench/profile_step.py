"""Where the JAX training step spends its time on this CPU: a jax.profiler trace of the trainer's step, grouped by
XLA operation, with the matrix products' own speed set against the machine's matmul peak.

    python bench/profile_step.py                              # base size, fp32
    python bench/profile_step.py --sizes tiny base --precisions fp32 bf16 --top 12

For each size and precision: the engine's jitted `train_step` (`translation_steps`) on the fixed batch of
`train_throughput.make_batch` (as bench/peers.py), 2 warm-up steps, then `--steps` steps under
`jax.profiler.trace`. The trace (read back with
`jax.profiler.ProfileData`, no TensorBoard needed) holds one event per XLA:CPU thunk on the runtime's threads; the
events are summed per operation (the name without its `.N` suffix) and grouped:
- "matmul": YNNPACK fusions and dots (XLA:CPU hands every matrix product to a `ynn_fusion`, often with the
  elementwise work around it fused in);
- "other fusions": XLA's own loop / reduction fusions (softmax, layer norm, dropout masks, Adam, the loss);
- "copies / transposes / other": the rest.
Thunks of one step may run on both cores at once, so the per-group times are CPU time and can sum to more than the
wall time of the step. "matmul GFLOP/s" = the step's analytic matmul FLOPs (`train_throughput.train_flops`) / the
matmul group's time: near the peak means the products themselves are efficient and the gap is elsewhere.
"""

import argparse
import collections
import dataclasses
import glob
import os
import re
import sys
import tempfile
import time

import common
import train_throughput as tt

from jax_transformer.config import PRESETS, UserError, load_config_file

SKIP = ("ThreadpoolListener", "end: ", "ThunkExecutor", "$")


def group_of(name: str) -> str:
    if name.startswith("ynn_fusion") or name.startswith("dot") or "convolution" in name:
        return "matmul"
    if "fusion" in name:
        return "other fusions"
    return "copies / transposes / other"


def op_times(trace_dir: str) -> dict[str, float]:
    """Seconds per operation name summed over the XLA runtime threads of the trace in `trace_dir`."""
    from jax.profiler import ProfileData

    paths = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    if not paths:
        raise UserError(f"jax.profiler wrote no trace under {trace_dir}")
    totals: dict[str, float] = collections.defaultdict(float)
    for plane in ProfileData.from_file(paths[0]).planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):  # the runtime's thread pools, not the Python thread
                continue
            for event in line.events:
                if event.name.startswith(SKIP):
                    continue
                totals[re.sub(r"\.\d+$", "", event.name)] += event.duration_ns / 1e9
    return totals


def profile(config, batch, steps: int) -> tuple[dict[str, float], float]:
    """(seconds per step per operation, wall seconds per step) of the trainer's step under the profiler."""
    import jax
    from flax import nnx

    from jax_transformer.model.transformer import Transformer
    from jax_transformer.tasks.translation import translation_steps

    model = Transformer(config.model, rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    trainer = translation_steps(config, model)
    state = trainer.init_state(nnx.state(model, nnx.Param))
    del model
    for _ in range(2):
        state, metrics = trainer.train_step(state, batch)
        jax.block_until_ready((state, metrics))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        with jax.profiler.trace(tmp):
            for _ in range(steps):
                state, metrics = trainer.train_step(state, batch)
                jax.block_until_ready((state, metrics))
        wall = (time.perf_counter() - started) / steps
        totals = op_times(tmp)
    return {name: seconds / steps for name, seconds in totals.items()}, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/multi30k_en_de_8k.py", help="recipe (.py) or a run's config.json")
    parser.add_argument("--sizes", nargs="+", default=["base"], choices=list(PRESETS))
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--src-len", type=int, default=24)
    parser.add_argument("--tgt-len", type=int, default=24)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps per row")
    parser.add_argument("--top", type=int, default=8, help="operations listed per row")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from jax_transformer.cli import run_cli

    def run():
        import jax

        config = dataclasses.replace(load_config_file(args.config), seed=args.seed)
        vocab = config.data.vocab_size
        batch = tt.make_batch(args.rows, args.src_len, args.tgt_len, vocab, args.seed)
        print("# Profile of the JAX training step\n")
        print("\n".join(common.machine_lines() + [common.xla_flags_line()]))
        print(f"- jax {jax.__version__}; batch {args.rows} x ({args.src_len} + {args.tgt_len}), vocabulary {vocab}; "
              f"{args.steps} profiled steps per row after 2 warm-up steps")  # fmt: skip
        peaks = common.matmul_peaks(args.precisions, 2048)
        max_len = max(args.src_len, args.tgt_len)
        for precision in args.precisions:
            for size, model in tt.model_configs(config, args.sizes, precision == "bf16", max_len, vocab):
                run_config = dataclasses.replace(config, model=model)
                per_op, wall = profile(run_config, batch, args.steps)
                flops = tt.train_flops(model, args.rows, args.src_len, args.tgt_len)
                groups: dict[str, float] = collections.defaultdict(float)
                for name, seconds in per_op.items():
                    groups[group_of(name)] += seconds
                cpu = sum(groups.values())
                matmul = groups.get("matmul", 0.0)
                print(f"\n## {size} ({precision}): step {1000 * wall:.0f} ms wall, {1000 * cpu:.0f} ms of thunk CPU "
                      f"time; matmul {flops / max(matmul, 1e-12) / 1e9:.1f} GFLOP/s inside its thunks, "
                      f"{flops / wall / 1e9:.1f} GFLOP/s over the step (MFU {flops / wall / peaks[precision]:.1%} "
                      f"of the {precision} peak)\n")  # fmt: skip
                print("| group | ms per step | share of thunk time |\n|---|---:|---:|")
                for group, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
                    print(f"| {group} | {1000 * seconds:.1f} | {seconds / cpu:.1%} |")
                print("\n| operation | group | ms per step | share |\n|---|---|---:|---:|")
                for name, seconds in sorted(per_op.items(), key=lambda kv: -kv[1])[: args.top]:
                    print(f"| {name} | {group_of(name)} | {1000 * seconds:.1f} | {seconds / cpu:.1%} |")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
