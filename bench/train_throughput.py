"""Training throughput and model-FLOPs utilisation of the JAX trainer and of torch_ref, same config, batch and weights.

    python bench/train_throughput.py                      # the default recipe's model, fp32
    python bench/train_throughput.py --bf16               # bf16 compute (JAX dtype='bfloat16', torch autocast)
    python bench/train_throughput.py --sizes config small base --steps 10

For each selected model the JAX measurement runs first, then torch, one after the other in this process. Both train
on one fixed, seeded batch (`--rows` sentences padded to `--src-len` / `--tgt-len`, real lengths uniform in
[40%, 100%] of the padded length) starting from the same weights (JAX init, copied into torch with
`jax_transformer.interop.torch_convert`). One training step is the full update on both sides:

- JAX: `translation_steps(config, model).train_step` of the engine (forward, label-smoothed loss, backward,
  global-norm clip if configured, optax Adam/AdamW, the non-finite guard), jitted, timed to `block_until_ready` of
  its outputs.
- torch: forward (torch.autocast('cpu', bfloat16) with --bf16), F.cross_entropy(ignore_index=pad,
  label_smoothing=eps), backward, clip_grad_norm_ if configured, torch.optim.Adam (AdamW if weight_decay > 0) with
  the config's betas/eps (0.9, 0.98, 1e-9 by default) at a constant learning rate (the schedule's first value), and
  zero_grad. Dropout as in the config (training mode) on both sides.

Reported: the median step time of `--steps` timed steps after `--warmup` untimed ones (the first of which includes
JAX's compilation, shown separately); tokens/s = real (non-pad) source + target tokens of the batch / median step
time; MFU = model FLOPs per step (`train_flops`, on the padded shapes) / median step time / the measured matmul
peak of the precision used (`common.matmul_peaks`: the best of the jnp.dot and torch.matmul products in that
precision, so that both frameworks' rows share one denominator). This is a CPU benchmark: other
processes on the machine add noise, which the p10-p90 column makes visible.

The header prints the XLA_FLAGS in effect (none by default: see `common.xla_flags_line` for the flags measured).
"""

import argparse
import dataclasses
import os
import sys

import common
import numpy as np

from jax_transformer.config import PRESETS, Config, ModelConfig, UserError, load_config_file
from jax_transformer.data.tokenizer import BOS_ID, EOS_ID

# ---------------------------------------------------------------------------------------------------------------------
# The workload: batch, models, FLOPs
# ---------------------------------------------------------------------------------------------------------------------


def make_batch(rows: int, src_len: int, tgt_len: int, vocab: int, seed: int, min_fraction: float = 0.4) -> dict:
    """A trainer-shaped batch with realistic padding: src (rows, S), tgt_in = BOS + y, tgt_out = y + EOS (rows, T).

    Each row's real length is uniform in [ceil(min_fraction * len), len]; token ids are uniform over the
    non-special ids [4, vocab); padding is 0, as in `jax_transformer.data.pipeline`."""
    rng = np.random.default_rng(seed)
    src = np.zeros((rows, src_len), np.int32)
    tgt_in = np.zeros((rows, tgt_len), np.int32)
    tgt_out = np.zeros((rows, tgt_len), np.int32)
    for row in range(rows):
        n_src = int(rng.integers(max(1, int(np.ceil(min_fraction * src_len))), src_len + 1))
        n_tgt = int(rng.integers(max(1, int(np.ceil(min_fraction * tgt_len))), tgt_len + 1))
        src[row, :n_src] = rng.integers(4, vocab, n_src)
        words = rng.integers(4, vocab, n_tgt - 1)  # the target sentence; + EOS makes n_tgt labels
        tgt_out[row, :n_tgt] = np.append(words, EOS_ID)
        tgt_in[row, :n_tgt] = np.insert(words, 0, BOS_ID)
    return {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out}


def model_configs(
    config: Config, sizes: list[str], bf16: bool, max_len: int, vocab: int
) -> list[tuple[str, ModelConfig]]:
    """('config' | preset name, ModelConfig) with the vocabulary set as the trainer sets it from the tokenizer
    (`vocab`: data.vocab_size unless overridden). A preset keeps every field of the config's model (sharing, norm
    position, ...) except the preset's own (widths, depths, dropout)."""
    out = []
    for size in sizes:
        model = config.model if size == "config" else dataclasses.replace(config.model, **PRESETS[size])
        model = dataclasses.replace(
            model, vocab_size=vocab, target_vocab_size=0 if model.share_embeddings else vocab,
            dtype="bfloat16" if bf16 else "float32", max_len=max(model.max_len, max_len),
        )  # fmt: skip
        out.append((size, model))
    return out


def train_flops(model: ModelConfig, rows: int, src_len: int, tgt_len: int) -> int:
    """Model FLOPs of one training step, counted analytically on the padded shapes.

    A matmul of (m, k) @ (k, n) is 2 m k n FLOPs (multiply + add); training costs 3x the forward matmuls (forward,
    and backward's two matmuls per forward matmul: gradients of the input and of the weight), i.e. the usual
    "6 x multiply-accumulates". With B = rows, S = src_len, T = tgt_len, d = d_model, f = d_ff, V = target vocabulary
    (attention heads split d, so summed over heads QK^T and AV cost as one d-wide product):

        encoder layer:  Q,K,V,O projections 4 * 2BSd^2   + QK^T and AV 2 * 2BS^2d             + FFN 2 * 2BSdf
        decoder layer:  self-attention      4 * 2BTd^2   + 2 * 2BT^2d
                        cross-attention     Q,O 2 * 2BTd^2 + K,V (on the encoder output) 2 * 2BSd^2 + 2 * 2BTSd
                        FFN                 2 * 2BTdf
        output projection (logits):         2BTdV

        train_flops = 3 * (N_enc * encoder layer + N_dec * decoder layer + output projection)

    Not counted (small or not matmuls): embedding gathers, softmax, LayerNorm, dropout, biases, the loss and the
    optimizer update. Everything is on padded shapes (the work the hardware does), including the full T x T causal
    attention square; tokens/s, by contrast, counts real tokens only.
    """
    b, s, t, d, f, v = rows, src_len, tgt_len, model.d_model, model.d_ff, model.tgt_vocab_size
    encoder = 4 * 2 * b * s * d * d + 2 * 2 * b * s * s * d + 2 * 2 * b * s * d * f
    decoder = (
        4 * 2 * b * t * d * d + 2 * 2 * b * t * t * d  # masked self-attention
        + 2 * 2 * b * t * d * d + 2 * 2 * b * s * d * d + 2 * 2 * b * t * s * d  # attention over the encoder output
        + 2 * 2 * b * t * d * f  # feed-forward
    )  # fmt: skip
    forward = model.num_encoder_layers * encoder + model.num_decoder_layers * decoder + 2 * b * t * d * v
    return 3 * forward


# ---------------------------------------------------------------------------------------------------------------------
# The two trainers
# ---------------------------------------------------------------------------------------------------------------------


def bench_jax(config: Config, model, batch: dict, steps: int, warmup: int) -> dict:
    """Time the trainer's jitted `train_step` (state donated, as in training) on one fixed batch."""
    import jax
    from flax import nnx

    from jax_transformer.model.transformer import count_parameters
    from jax_transformer.tasks.translation import translation_steps

    trainer = translation_steps(config, model)
    holder = {"state": trainer.init_state(nnx.state(model, nnx.Param))}

    def step():
        holder["state"], holder["metrics"] = trainer.train_step(holder["state"], batch)
        jax.block_until_ready((holder["state"], holder["metrics"]))

    times, first = common.time_calls(step, steps, warmup)
    metrics = jax.device_get(holder["metrics"])
    return {
        "params": count_parameters(model),
        "times": times,
        "first": first,
        "loss": float(metrics["loss"] / metrics["tokens"]),  # label-smoothed, minus the smoothing entropy
        "lr": float(trainer.schedule(0)),
    }


def bench_torch(config: Config, state_dict: dict, batch: dict, steps: int, warmup: int, lr: float) -> dict:
    """Time forward + label-smoothed CE + backward + clip + Adam + zero_grad of torch_ref on the same batch."""
    import torch
    from torch.nn import functional as F

    from torch_ref.model import Transformer, count_parameters

    model = Transformer(config.model)
    model.load_state_dict({name: torch.tensor(array) for name, array in state_dict.items()})
    model.train()
    cfg = config.train
    optimizer_cls = torch.optim.AdamW if cfg.weight_decay > 0 else torch.optim.Adam
    # (AdamW here decays every parameter; the JAX optimizer decays matrices only: the same work either way.)
    optimizer = optimizer_cls(
        model.parameters(), lr=lr, betas=(cfg.adam_b1, cfg.adam_b2), eps=cfg.adam_eps, weight_decay=cfg.weight_decay
    )
    src, tgt_in, tgt_out = (torch.from_numpy(batch[key]).long() for key in ("src", "tgt_in", "tgt_out"))
    bf16 = config.model.dtype == "bfloat16"
    pad, smoothing, vocab = config.model.pad_id, cfg.label_smoothing, config.model.tgt_vocab_size
    holder = {}

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(src, tgt_in)
            loss = F.cross_entropy(
                logits.reshape(-1, vocab).float(), tgt_out.reshape(-1), ignore_index=pad, label_smoothing=smoothing
            )
        loss.backward()
        if cfg.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        holder["loss"] = loss.detach()

    times, first = common.time_calls(step, steps, warmup)
    return {"params": count_parameters(model), "times": times, "first": first, "loss": float(holder["loss"])}


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Training tokens/s and model-FLOPs utilisation of the JAX trainer and of torch_ref on the same "
        "config, batch and weights (one process, one framework after the other).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", default="configs/multi30k_en_de_8k.py", help="recipe (.py) or a run's config.json")
    parser.add_argument(
        "--vocab", type=int, default=0,
        help="vocabulary size (0: the config's data.vocab_size, which the trainer's tokenizer gives the model)",
    )  # fmt: skip
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="config override as train.py's --config.KEY=VALUE, e.g. --set model.dropout=0 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--rows", type=int, default=128, help="sentences in the batch")
    parser.add_argument("--src-len", type=int, default=24, help="padded source length")
    parser.add_argument("--tgt-len", type=int, default=24, help="padded target length")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first compiles JAX)")
    parser.add_argument("--bf16", action="store_true", help="bf16 compute: JAX model.dtype=bfloat16, torch autocast")
    parser.add_argument(
        "--threads", type=int, default=common.available_cores(),
        help="torch.set_num_threads; JAX/XLA always sizes its pool to the cores in the affinity mask (limit both "
        "with `taskset -c 0 ...`)",
    )  # fmt: skip
    parser.add_argument(
        "--sizes", nargs="+", default=["config"], choices=["config", *PRESETS],
        help="models: 'config' (the config's model) and/or presets of jax_transformer.config.PRESETS with the "
        "config's vocabulary and other model settings",
    )  # fmt: skip
    parser.add_argument("--frameworks", nargs="+", default=["jax", "torch"], choices=["jax", "torch"])
    parser.add_argument("--seed", type=int, default=0, help="seeds the batch and the weights")
    parser.add_argument("--peak-size", type=int, default=2048, help="n of the n x n x n matmul measuring the peak")
    args = parser.parse_args(argv)
    for key in ("rows", "src_len", "tgt_len", "steps", "threads", "peak_size"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (the first step compiles JAX and allocates torch's optimizer state)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config = load_config_file(args.config, args.set)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    config = dataclasses.replace(config, seed=args.seed)
    vocab = args.vocab or config.data.vocab_size
    if vocab < 5:
        print(f"error: the vocabulary ({vocab}) must be > 4 (pad, unk, bos, eos and a word)", file=sys.stderr)
        return 1

    import jax
    import torch
    from flax import nnx

    from jax_transformer.interop.torch_convert import to_state_dict
    from jax_transformer.model.transformer import Transformer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    batch = make_batch(args.rows, args.src_len, args.tgt_len, vocab, args.seed)
    real_src, real_tgt = int((batch["src"] != 0).sum()), int((batch["tgt_out"] != 0).sum())
    real_tokens = real_src + real_tgt
    padded_tokens = args.rows * (args.src_len + args.tgt_len)
    precision = "bf16" if args.bf16 else "fp32"

    print("# Training throughput: JAX trainer vs torch_ref\n", flush=True)
    print("\n".join(common.machine_lines()))
    print(f"- jax {jax.__version__} (backend {jax.default_backend()}), torch {torch.__version__} "
          f"(torch threads {torch.get_num_threads()}), numpy {np.__version__}")  # fmt: skip
    print(common.xla_flags_line())
    overrides = "".join(f" --set {item}" for item in args.set)
    print(f"- config {args.config}{overrides}; batch {args.rows} rows x (src {args.src_len} + tgt {args.tgt_len}) "
          f"padded = {padded_tokens} tokens, {real_tokens} real (src {real_src} + tgt {real_tgt}, "
          f"{100 * real_tokens / padded_tokens:.0f}%); vocabulary {vocab}")  # fmt: skip
    print(f"- {args.warmup} warm-up + {args.steps} timed steps per row; precision {precision}", flush=True)

    peak = common.matmul_peaks([precision], args.peak_size)[precision]  # MFU against the peak of the precision used

    header = ["framework", "precision", "model", "params", "GFLOP/step", "step ms (median)", "p10-p90 ms",
              "tokens/s", "MFU"]  # fmt: skip
    rows, notes = [], []
    max_len = max(args.src_len, args.tgt_len)
    for size, model_config in model_configs(config, args.sizes, args.bf16, max_len, vocab):
        run_config = dataclasses.replace(config, model=model_config)
        flops = train_flops(model_config, args.rows, args.src_len, args.tgt_len)
        m = model_config
        label = f"{size}: d{m.d_model} {m.num_encoder_layers}+{m.num_decoder_layers}L ff{m.d_ff} V{m.tgt_vocab_size}"
        model = Transformer(model_config, rngs=nnx.Rngs(params=args.seed, dropout=args.seed + 1))
        state_dict = to_state_dict(model)  # fp32 numpy copies, taken before the JAX step donates the parameters
        results = {}
        lr = None
        if "jax" in args.frameworks:
            print(f"  measuring jax   {label} ...", file=sys.stderr, flush=True)
            results["jax"] = bench_jax(run_config, model, batch, args.steps, args.warmup)
            lr = results["jax"]["lr"]
        del model
        if "torch" in args.frameworks:
            print(f"  measuring torch {label} ...", file=sys.stderr, flush=True)
            if lr is None:
                from jax_transformer.train.optimizer import learning_rate_schedule

                lr = float(learning_rate_schedule(run_config.train, model_config.d_model)(0))
            results["torch"] = bench_torch(run_config, state_dict, batch, args.steps, args.warmup, lr)
        for framework, result in results.items():
            step = common.median(result["times"])
            p10, p90 = (1e3 * common.quantile(result["times"], q) for q in (0.1, 0.9))
            spread = f"{p10:.1f}-{p90:.1f}"
            rows.append([framework, precision, label, f"{result['params']:,}", f"{flops / 1e9:.1f}",
                         f"{1e3 * step:.1f}", spread, f"{real_tokens / step:,.0f}",
                         f"{100 * flops / step / peak:.1f}%"])  # fmt: skip
            notes.append(f"{framework} {size}: first step {result['first']:.2f} s"
                         f"{' (includes jit compilation)' if framework == 'jax' else ''}, "
                         f"training loss after {args.warmup + args.steps} steps {result['loss']:.3f}"
                         f"{' (minus the smoothing entropy)' if framework == 'jax' else ''}")  # fmt: skip

    print()
    print(common.markdown_table(header, rows))
    print()
    print("tokens/s: real (non-pad) source + target tokens per second of median step time. GFLOP/step: analytic "
          "matmul FLOPs of one training step on the padded shapes (3 x forward; see train_flops). MFU: "
          f"GFLOP/step / step time / the {precision} matmul peak above.")  # fmt: skip
    for note in notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
