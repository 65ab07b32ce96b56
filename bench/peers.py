"""Training throughput of this project against peer implementations of the same Transformer, same batch.

    python bench/peers.py                                  # tiny, small, base; every peer; fp32 and bf16
    python bench/peers.py --sizes tiny small --steps 10
    python bench/peers.py --peers torch_ref marian --precisions fp32

One training step (forward, label-smoothed cross-entropy ignoring padding, backward, Adam update) is timed on the
fixed, seeded batch of `train_throughput.make_batch` (default 128 pairs x 24 + 24 tokens, vocabulary 8000, real
lengths uniform in [40%, 100%] of the padded length) for the model presets tiny / small / base of
`jax_transformer.config.PRESETS` (with the recipe's other model settings; dropout as in the preset, training mode):

- jax: this project's trainer, `Steps.train_step` (via `train_throughput.bench_jax`); bf16 = model.dtype bfloat16.
- torch_ref: the PyTorch mirror (via `train_throughput.bench_torch`, same weights as jax); bf16 = torch.autocast.
- nn.Transformer: `torch.nn.Transformer` (post-norm, batch_first) with one shared nn.Embedding scaled by sqrt(d),
  sinusoidal positions, dropout on embeddings + positions, and the output projection tied to the embedding.
- marian: Hugging Face `MarianMTModel` from a `MarianConfig` of the same shape (random init, nothing downloaded;
  shared, tied embeddings, ReLU, post-norm); the loss is F.cross_entropy on its logits with label smoothing and
  labels -100 at padding (its own `labels=` loss has no smoothing, so it is not used).

All torch peers use torch.optim.Adam with the recipe's betas / eps / clip and the schedule's first learning rate.
Reported per row: the median step time of the timed steps after the warm-up ones, real (non-pad) source + target
tokens/s, and MFU = `train_throughput.train_flops` (analytic matmul FLOPs on the padded shapes, identical for every
implementation of a size) / step time / the measured fp32 matmul peak (the larger of jnp.dot and torch.matmul).
"ours / best peer" is the speed ratio of the faster of our two precisions to the fastest peer row of that size.
The header prints the XLA_FLAGS in effect (none by default: see `common.xla_flags_line` for the flags measured).
"""

import argparse
import dataclasses
import math
import os
import sys

import common  # first: puts the repository root on sys.path
import numpy as np
import train_throughput as tt

from jax_transformer.config import PRESETS, UserError, load_config_file

PEERS = ("torch_ref", "nn.Transformer", "marian")


# ---------------------------------------------------------------------------------------------------------------------
# Peer models (torch)
# ---------------------------------------------------------------------------------------------------------------------


def build_nn_transformer(model_config):
    """torch.nn.Transformer + shared scaled embedding + sinusoidal positions + tied output projection."""
    import torch
    from torch import nn

    m = model_config

    class NNTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(m.vocab_size, m.d_model, padding_idx=m.pad_id)
            nn.init.normal_(self.embedding.weight, std=m.d_model**-0.5)
            position = torch.arange(m.max_len).unsqueeze(1)
            div = torch.exp(torch.arange(0, m.d_model, 2) * (-math.log(10000.0) / m.d_model))
            table = torch.zeros(m.max_len, m.d_model)
            table[:, 0::2], table[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
            self.register_buffer("positions", table, persistent=False)
            self.dropout = nn.Dropout(m.dropout)
            self.transformer = nn.Transformer(
                d_model=m.d_model, nhead=m.num_heads, num_encoder_layers=m.num_encoder_layers,
                num_decoder_layers=m.num_decoder_layers, dim_feedforward=m.d_ff, dropout=m.dropout,
                batch_first=True,
            )  # fmt: skip

        def embed(self, ids):
            x = self.embedding(ids) * math.sqrt(m.d_model) + self.positions[: ids.shape[1]]
            return self.dropout(x)

        def forward(self, src, tgt_in):
            t = tgt_in.shape[1]
            causal = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
            src_pad, tgt_pad = src == m.pad_id, tgt_in == m.pad_id
            h = self.transformer(
                self.embed(src), self.embed(tgt_in), tgt_mask=causal, src_key_padding_mask=src_pad,
                tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad, tgt_is_causal=True,
            )  # fmt: skip
            return h @ self.embedding.weight.t()

    return NNTransformer()


def build_marian(model_config):
    """MarianMTModel (random init) of the same shape; returns (model, forward(src, tgt_in) -> logits)."""
    from transformers import MarianConfig, MarianMTModel

    from jax_transformer.data.tokenizer import BOS_ID, EOS_ID

    m = model_config
    config = MarianConfig(
        vocab_size=m.vocab_size, decoder_vocab_size=m.vocab_size, d_model=m.d_model,
        encoder_layers=m.num_encoder_layers, decoder_layers=m.num_decoder_layers,
        encoder_attention_heads=m.num_heads, decoder_attention_heads=m.num_heads,
        encoder_ffn_dim=m.d_ff, decoder_ffn_dim=m.d_ff, max_position_embeddings=m.max_len,
        dropout=m.dropout, attention_dropout=m.attention_dropout, activation_dropout=m.ffn_dropout,
        activation_function="relu", scale_embedding=True, share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True, pad_token_id=m.pad_id, eos_token_id=EOS_ID, bos_token_id=BOS_ID,
        decoder_start_token_id=BOS_ID, forced_eos_token_id=None, use_cache=False,
    )  # fmt: skip
    model = MarianMTModel(config)

    def forward(src, tgt_in):
        return model(
            input_ids=src, attention_mask=(src != m.pad_id).long(), decoder_input_ids=tgt_in,
            decoder_attention_mask=(tgt_in != m.pad_id).long(), use_cache=False,
        ).logits  # fmt: skip

    return model, forward


def bench_torch_peer(name: str, run_config, batch: dict, steps: int, warmup: int, lr: float) -> dict:
    """Time forward + label-smoothed CE (padding ignored) + backward + clip + Adam + zero_grad of a peer model."""
    import torch
    from torch.nn import functional as F

    model_config, cfg = run_config.model, run_config.train
    if name == "nn.Transformer":
        model = build_nn_transformer(model_config)
        forward = model
    else:
        model, forward = build_marian(model_config)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(cfg.adam_b1, cfg.adam_b2), eps=cfg.adam_eps)
    src, tgt_in, tgt_out = (torch.from_numpy(batch[key]).long() for key in ("src", "tgt_in", "tgt_out"))
    labels = tgt_out.masked_fill(tgt_out == model_config.pad_id, -100).reshape(-1)
    bf16, vocab = model_config.dtype == "bfloat16", model_config.tgt_vocab_size
    holder = {}

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = forward(src, tgt_in)
            loss = F.cross_entropy(
                logits.reshape(-1, vocab).float(), labels, ignore_index=-100, label_smoothing=cfg.label_smoothing
            )
        loss.backward()
        if cfg.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        holder["loss"] = loss.detach()

    params = sum(p.numel() for p in model.parameters())  # tied weights counted once (parameters() deduplicates)
    times, first = common.time_calls(step, steps, warmup)
    return {"params": params, "times": times, "first": first, "loss": float(holder["loss"])}


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Training tokens/s and MFU of this project (JAX) vs torch_ref, torch.nn.Transformer and "
        "Hugging Face MarianMTModel on the same batch and model shape.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", default="configs/multi30k_en_de.py", help="recipe (.py) or a run's config.json")
    parser.add_argument("--vocab", type=int, default=0, help="vocabulary (0: the config's data.vocab_size)")
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "base"], choices=list(PRESETS))
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS, help="peers besides jax")
    parser.add_argument("--no-jax", action="store_true", help="skip this project's JAX rows")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--rows", type=int, default=128, help="sentences in the batch")
    parser.add_argument("--src-len", type=int, default=24, help="padded source length")
    parser.add_argument("--tgt-len", type=int, default=24, help="padded target length")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row (sizes other than base/big)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first compiles JAX)")
    parser.add_argument("--large-steps", type=int, default=3, help="timed steps per row for base and big")
    parser.add_argument("--large-warmup", type=int, default=1, help="untimed steps per row for base and big")
    parser.add_argument("--threads", type=int, default=common.available_cores(), help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0, help="seeds the batch and the weights")
    parser.add_argument("--peak-size", type=int, default=2048, help="n of the n x n x n matmul measuring the peak")
    args = parser.parse_args(argv)
    for key in ("rows", "src_len", "tgt_len", "steps", "warmup", "large_steps", "large_warmup", "threads"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config = dataclasses.replace(load_config_file(args.config), seed=args.seed)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    vocab = args.vocab or config.data.vocab_size

    import jax
    import torch
    import transformers
    from flax import nnx

    from jax_transformer.interop.torch_convert import to_state_dict
    from jax_transformer.model.transformer import Transformer
    from jax_transformer.train.optimizer import learning_rate_schedule

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    batch = tt.make_batch(args.rows, args.src_len, args.tgt_len, vocab, args.seed)
    real_src, real_tgt = int((batch["src"] != 0).sum()), int((batch["tgt_out"] != 0).sum())
    real_tokens, padded_tokens = real_src + real_tgt, args.rows * (args.src_len + args.tgt_len)

    print("# Training throughput: this project vs peers\n", flush=True)
    print("\n".join(common.machine_lines()))
    print(f"- jax {jax.__version__} (backend {jax.default_backend()}), flax {_version('flax')}, optax "
          f"{_version('optax')}, torch {torch.__version__} (threads {torch.get_num_threads()}), transformers "
          f"{transformers.__version__}, numpy {np.__version__}")  # fmt: skip
    print(common.xla_flags_line())
    print(f"- config {args.config}; batch {args.rows} rows x (src {args.src_len} + tgt {args.tgt_len}) padded = "
          f"{padded_tokens} tokens, {real_tokens} real (src {real_src} + tgt {real_tgt}, "
          f"{100 * real_tokens / padded_tokens:.0f}%); vocabulary {vocab}")  # fmt: skip
    print(f"- warm-up + timed steps per row: {args.warmup} + {args.steps} (base/big: {args.large_warmup} + "
          f"{args.large_steps})", flush=True)  # fmt: skip
    peaks = {"jax": common.jax_matmul_peak(args.peak_size), "torch": common.torch_matmul_peak(args.peak_size)}
    peak, n = max(peaks.values()), args.peak_size
    print(
        f"- fp32 matmul peak ({n}x{n} @ {n}x{n}, median of 7): jax {peaks['jax'] / 1e9:.1f} GFLOP/s, torch "
        f"{peaks['torch'] / 1e9:.1f} GFLOP/s; MFU is against {peak / 1e9:.1f} GFLOP/s for every row",
        flush=True,
    )
    if "bf16" in args.precisions:  # why the bf16 rows differ: what each framework's bf16 matmul reaches here
        bf16 = {"jax": common.jax_matmul_peak(n, "bfloat16"), "torch": common.torch_matmul_peak(n, "bfloat16"),
                "jax_f32": common.jax_matmul_peak(n, "bfloat16", out_dtype="float32")}  # fmt: skip
        print(f"- bf16 matmul, same shape: jax bf16 -> bf16 {bf16['jax'] / 1e9:.1f} GFLOP/s, jax bf16 -> fp32 (what "
              f"our bf16 Linear layers use, model.bf16_matmul) {bf16['jax_f32'] / 1e9:.1f} GFLOP/s, torch "
              f"{bf16['torch'] / 1e9:.1f} GFLOP/s (not used for MFU)", flush=True)  # fmt: skip

    header = ["implementation", "precision", "model", "params", "GFLOP/step", "step ms", "p10-p90 ms", "tokens/s",
              "MFU"]  # fmt: skip
    rows, notes, ratios = [], [], []
    max_len = max(args.src_len, args.tgt_len)
    for size in args.sizes:
        large = size in ("base", "big")
        steps, warmup = (args.large_steps, args.large_warmup) if large else (args.steps, args.warmup)
        results = {}  # (implementation, precision) -> result
        label = None
        for precision in args.precisions:
            ((_, model_config),) = tt.model_configs(config, [size], precision == "bf16", max_len, vocab)
            run_config = dataclasses.replace(config, model=model_config)
            m = model_config
            label = f"{size}: d{m.d_model} {m.num_encoder_layers}+{m.num_decoder_layers}L ff{m.d_ff} h{m.num_heads}"
            flops = tt.train_flops(model_config, args.rows, args.src_len, args.tgt_len)
            lr = float(learning_rate_schedule(run_config.train, m.d_model)(0))
            model = Transformer(model_config, rngs=nnx.Rngs(params=args.seed, dropout=args.seed + 1))
            state_dict = to_state_dict(model)  # before the JAX step donates the parameters
            if not args.no_jax:
                _progress("jax", precision, label)
                results["jax", precision] = tt.bench_jax(run_config, model, batch, steps, warmup)
            del model
            for peer in args.peers:
                _progress(peer, precision, label)
                if peer == "torch_ref":
                    results[peer, precision] = tt.bench_torch(run_config, state_dict, batch, steps, warmup, lr)
                else:
                    results[peer, precision] = bench_torch_peer(peer, run_config, batch, steps, warmup, lr)
        best = {}
        for (name, precision), result in results.items():
            step = common.median(result["times"])
            p10, p90 = (1e3 * common.quantile(result["times"], q) for q in (0.1, 0.9))
            rows.append([name, precision, label, f"{result['params']:,}", f"{flops / 1e9:.1f}", f"{1e3 * step:.1f}",
                         f"{p10:.1f}-{p90:.1f}", f"{real_tokens / step:,.0f}",
                         f"{100 * flops / step / peak:.1f}%"])  # fmt: skip
            notes.append(f"{name} {precision} {size}: first step {result['first']:.2f} s, loss after "
                         f"{warmup + steps} steps {result['loss']:.3f}"
                         f"{' (minus the smoothing entropy)' if name == 'jax' else ''}")  # fmt: skip
            group = "ours" if name == "jax" else "peer"
            if group not in best or step < best[group][0]:
                best[group] = (step, f"{name} {precision}")
        if "ours" in best and "peer" in best:
            ratio = best["peer"][0] / best["ours"][0]
            ratios.append(f"{size}: ours ({best['ours'][1]}) / best peer ({best['peer'][1]}) = {ratio:.2f}x "
                          f"tokens/s")  # fmt: skip

    print()
    print(common.markdown_table(header, rows))
    print()
    for line in ratios:
        print(f"- {line}")
    print()
    print("tokens/s: real (non-pad) source + target tokens per second of median step time. GFLOP/step: analytic "
          "matmul FLOPs of one training step on the padded shapes (train_throughput.train_flops; the same for every "
          "implementation of a size). MFU: GFLOP/step / step time / the fp32 matmul peak above.")  # fmt: skip
    for note in notes:
        print(f"- {note}")
    return 0


def _progress(name: str, precision: str, label: str) -> None:
    print(f"  measuring {name} {precision} {label} ...", file=sys.stderr, flush=True)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
