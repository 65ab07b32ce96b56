"""One accelerator, one script: Transformer-base (and big) training throughput in bf16 and beam-search decoding speed,
printed as rows for docs/benchmarks.md. Made to finish in under 8 minutes on one GPU; on a CPU it runs with a tiny
config (the tests do: `--sizes test --quick`).

  python bench/gpu.py                          # base and big, bf16, on the first accelerator JAX sees
  python bench/gpu.py --sizes base --rows 256  # a larger batch
  python bench/gpu.py --sizes test --quick     # a smoke run on any machine

Training: the project's own jitted train step (`tasks.translation.translation_steps`, the one the trainer runs; with
TrainConfig's defaults: Adam without weight decay or clipping, label smoothing 0.1, donated state) on one fixed batch of
--rows sentences padded to --src-len/--tgt-len with realistic padding (bench/train_throughput.py's batch), --warmup
untimed steps (the first compiles), then --steps timed ones; tokens/s counts real target tokens, MFU = analytic matmul
FLOPs per step (train_throughput.train_flops, on the padded shapes) / median step time / the device's bf16 peak: the
vendor's dense bf16 figure for known devices (table below), and also against the bf16 matmul rate measured here (a large
jnp.dot). Decoding: beam 4 over --decode-rows random source sentences of --src-len tokens with the same (untrained)
weights, so every hypothesis runs to its length limit, source + 50 tokens: the most work a batch can cost.

Anchors (not measured here): NVIDIA's Deep Learning Examples report Transformer-big at ~82k tokens/s with AMP on one
A100; the paper's base model trained on 8 P100s at ~0.4 s per step of ~25k source + ~25k target tokens.
"""

import argparse
import sys
import time

import common
import numpy as np
import train_throughput

# dense bf16 peak FLOP/s from the vendors' data sheets (no sparsity), by jax Device.device_kind prefix
BF16_PEAKS = {"NVIDIA H200": 989e12, "NVIDIA H100": 989e12, "NVIDIA A100": 312e12, "NVIDIA L4": 121e12,
              "NVIDIA A10": 125e12, "NVIDIA L40S": 362e12, "TPU v4": 275e12, "TPU v5 lite": 197e12}  # fmt: skip


def vendor_peak(device_kind: str) -> float | None:
    return next((peak for name, peak in BF16_PEAKS.items() if device_kind.startswith(name)), None)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["base", "big"], help="model presets (config.PRESETS)")
    parser.add_argument("--rows", type=int, default=128, help="sentences per training batch")
    parser.add_argument("--src-len", type=int, default=40, help="padded source length")
    parser.add_argument("--tgt-len", type=int, default=40, help="padded target length")
    parser.add_argument("--vocab", type=int, default=32000, help="shared vocabulary size")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps first (the first compiles)")
    parser.add_argument("--decode-rows", type=int, default=256, help="sentences per decoding batch")
    parser.add_argument("--decode-batches", type=int, default=3, help="timed decoding batches (after one untimed)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and 2 steps: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.src_len, args.tgt_len, args.vocab = 4, 8, 8, 64
        args.steps, args.warmup, args.decode_rows, args.decode_batches = 2, 1, 4, 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jax_transformer.config import PRESETS, Config, DecodeConfig, TrainConfig, model_preset
    from jax_transformer.decode.search import beam_search, output_limits
    from jax_transformer.model.transformer import Transformer

    for size in args.sizes:
        if size not in PRESETS:
            print(f"error: unknown size {size!r}; choose from {', '.join(PRESETS)}", file=sys.stderr)
            return 1
    device = jax.devices()[0]
    measured_peak = common.jax_matmul_peak(512 if args.quick else 8192, "bfloat16", out_dtype="float32")
    peak = vendor_peak(device.device_kind)
    print(f"device: {device.device_kind} ({device.platform}), {len(jax.devices())} visible, this script uses one")
    print(f"bf16 matmul measured here: {measured_peak / 1e12:.1f} TFLOP/s; vendor dense bf16 peak: "
          f"{peak / 1e12:.0f} TFLOP/s" if peak else f"bf16 matmul measured here: {measured_peak / 1e12:.2f} TFLOP/s; "
          "no vendor peak known for this device (MFU against the measured rate only)")  # fmt: skip

    train_rows, decode_rows = [], []
    for size in args.sizes:
        model_config = model_preset(size, vocab_size=args.vocab, max_len=max(256, args.src_len + 60),
                                    dtype="bfloat16")  # fmt: skip
        config = Config(model=model_config, train=TrainConfig(schedule="constant", warmup_steps=1),
                        decode=DecodeConfig(beam_size=4, alpha=0.6))  # fmt: skip
        batch = train_throughput.make_batch(args.rows, args.src_len, args.tgt_len, args.vocab, seed=0)
        model = Transformer(model_config, rngs=nnx.Rngs(params=0, dropout=1))
        result = train_throughput.bench_jax(config, model, batch, args.steps, args.warmup)
        step = common.median(result["times"])
        tokens = int((batch["tgt_out"] != 0).sum())
        flops = train_throughput.train_flops(model_config, args.rows, args.src_len, args.tgt_len)
        mfu = f"{100 * flops / step / peak:.1f}%" if peak else "-"
        train_rows.append([size, f"{result['params'] / 1e6:.1f}M", f"{args.rows} x {args.src_len}/{args.tgt_len}",
                           f"{step * 1e3:.1f}", f"{tokens / step:,.0f}", f"{flops / step / 1e12:.2f}", mfu,
                           f"{100 * flops / step / measured_peak:.1f}%", f"{result['first']:.1f}"])  # fmt: skip

        # decoding: the same architecture in eval mode, beam 4, a batch of random sources run to their limits
        model.eval()
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        extra = config.decode.max_extra_len

        @jax.jit
        def decode(params, src, limits, graphdef=graphdef, rest=rest, extra=extra):
            m = nnx.merge(graphdef, params, rest)
            return beam_search(m, src, 4, args.src_len + extra, 2, 3, 0.6, limits)[0]

        rng = np.random.default_rng(1)
        sources = [jnp.asarray(rng.integers(4, args.vocab, (args.decode_rows, args.src_len)), jnp.int32)
                   for _ in range(args.decode_batches + 1)]  # fmt: skip
        limits = output_limits(sources[0], 0, extra, args.src_len + extra)
        started = time.perf_counter()
        jax.block_until_ready(decode(params, sources[0], limits))
        compile_s = time.perf_counter() - started
        started = time.perf_counter()
        for src in sources[1:]:
            jax.block_until_ready(decode(params, src, limits))
        seconds = time.perf_counter() - started
        sentences = args.decode_rows * args.decode_batches
        decode_rows.append([size, f"{args.decode_rows}", f"{sentences / seconds:,.1f}",
                            f"{sentences * (args.src_len + extra) / seconds:,.0f}", f"{compile_s:.1f}"])  # fmt: skip

    print("\nTraining step, bf16 compute (fp32 parameters and optimizer), median of "
          f"{args.steps} timed steps after {args.warmup} untimed:\n")  # fmt: skip
    print(common.markdown_table(["size", "parameters", "batch (rows x src/tgt)", "step ms", "target tokens/s",
                                 "TFLOP/s", "MFU (vendor bf16 peak)", "MFU (measured bf16 matmul)", "first step s"],
                                train_rows))  # fmt: skip
    print("\nBeam search (beam 4, untrained weights: every hypothesis runs to source + 50 tokens):\n")
    print(common.markdown_table(["size", "sentences per batch", "sentences/s", "output tokens/s", "compile s"],
                                decode_rows))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
