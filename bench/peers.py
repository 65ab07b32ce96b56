"""Training throughput of this project against peer implementations of the same Transformer, same batch and weights.

    python bench/peers.py                                  # tiny, small, base; post- and pre-norm; fp32 and bf16
    python bench/peers.py --sizes tiny small --norms pre --steps 20
    python bench/peers.py --peers torch_ref hf --precisions fp32

One training step (forward, label-smoothed cross-entropy ignoring padding, backward, Adam update) is timed on the
fixed, seeded batch of `train_throughput.make_batch` (default 128 pairs x 24 + 24 tokens, vocabulary 8000, real
lengths uniform in [40%, 100%] of the padded length) for the model presets tiny / small / base of
`jax_transformer.config.PRESETS` (with the recipe's other model settings and the preset's dropout, training mode),
once with post-norm layers (§3.1: LayerNorm(x + Sublayer(x)), no final LayerNorm) and once with pre-norm layers
(x + Sublayer(LayerNorm(x)), a final LayerNorm after each stack). Every implementation of a row has the same
architecture and starts from the same weights (our JAX initialisation, copied):

- jax: this project's trainer, the engine's `train_step` (via `train_throughput.bench_jax`); bf16 = model.dtype
  bfloat16 (bf16 operands, fp32 parameters).
- torch_ref: the PyTorch mirror (via `train_throughput.bench_torch`); bf16 = torch.autocast.
- nn.Transformer: `torch.nn.Transformer` (batch_first, `norm_first` for pre-norm; its final LayerNorms removed for
  post-norm, kept for pre-norm) with one shared nn.Embedding scaled by sqrt(d), the same sinusoidal table, and the
  output projection tied to the embedding. Its dropout is set site by site to ours: embeddings + positions and the
  residual branches at model.dropout, the attention weights at model.attention_dropout, the feed-forward activation
  at model.ffn_dropout (nn.Transformer's own default puts one rate on all of them).
- hf: Hugging Face `MarianMTModel` for post-norm, `PegasusForConditionalGeneration` for pre-norm (Pegasus is Marian
  with pre-norm layers and final LayerNorms), built by `jax_transformer.interop.hf_export.to_hf` from the same
  weights; their `dropout` / `attention_dropout` / `activation_dropout` are the same three sites. The loss is
  F.cross_entropy on its logits with label smoothing and labels -100 at padding (its own `labels=` loss has no
  smoothing, so it is not used).

`tests/test_bench_peers.py` checks that these peers are the same model: nn.Transformer's eval logits equal ours
(post- and pre-norm), and its dropout runs at the same sites and rates as torch_ref's.

All torch peers use torch.optim.Adam with the recipe's betas / eps / clip and the schedule's first learning rate, and
the same torch thread count (`--threads`, default the cores available). All implementations run in one process
under one host-memory setting (`common.py`: glibc's defaults unless JAX_TRANSFORMER_MALLOC=keep; printed).
Reported per row: the median step time of the timed steps after the warm-up ones (`--steps`, default 10 at every
size), real (non-pad) source + target tokens/s, and MFU = `train_throughput.train_flops` (analytic matmul FLOPs on
the padded shapes, identical for every implementation of a size) / step time / the measured matmul peak of the
precision of the row: fp32 rows against the larger of the fp32 jnp.dot and torch.matmul peaks, bf16 rows against
the largest bf16 peak (jnp.dot bf16 -> bf16, jnp.dot bf16 -> fp32 and torch.matmul bf16; oneDNN uses AMX or
avx512_bf16 where the CPU has them). "ours / best peer" is the speed ratio of our faster precision to the fastest
peer row of the same size and norm placement. The header prints the XLA_FLAGS in effect (none by default).
"""

import argparse
import dataclasses
import math
import os
import sys

import common
import numpy as np
import train_throughput as tt

from jax_transformer.config import PRESETS, UserError, load_config_file

PEERS = ("torch_ref", "nn.Transformer", "hf")


# ---------------------------------------------------------------------------------------------------------------------
# Peer models (torch), each holding the weights of our model (a torch_ref state dict)
# ---------------------------------------------------------------------------------------------------------------------


def build_nn_transformer(model_config, state_dict: dict):
    """torch.nn.Transformer with our norm placement and dropout sites, shared scaled embedding, our sinusoidal table
    and tied output projection, holding the weights of `state_dict` (torch_ref names)."""
    import torch
    from torch import nn

    from torch_ref.model import sinusoidal_positions

    m = model_config
    if not (m.share_embeddings and m.tie_output and m.positional == "sinusoidal" and not m.embedding_norm):
        raise ValueError("the nn.Transformer peer needs shared, tied embeddings, sinusoidal positions and no "
                         "embedding LayerNorm (as the recipe)")  # fmt: skip
    pre_norm = m.norm_position == "pre"

    class NNTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(m.vocab_size, m.d_model)
            table = sinusoidal_positions(m.max_len, m.d_model, m.sinusoidal_layout)
            self.register_buffer("positions", torch.from_numpy(np.asarray(table, np.float32)), persistent=False)
            self.dropout = nn.Dropout(m.dropout)  # §5.4: on embeddings + positions
            self.transformer = nn.Transformer(
                d_model=m.d_model, nhead=m.num_heads, num_encoder_layers=m.num_encoder_layers,
                num_decoder_layers=m.num_decoder_layers, dim_feedforward=m.d_ff, dropout=m.dropout,
                activation=m.activation, layer_norm_eps=m.layer_norm_eps, batch_first=True, norm_first=pre_norm,
                bias=m.use_bias,
            )  # fmt: skip
            if not pre_norm:  # nn.Transformer always adds a LayerNorm after each stack; post-norm layers have none
                self.transformer.encoder.norm = None
                self.transformer.decoder.norm = None
            for layer in [*self.transformer.encoder.layers, *self.transformer.decoder.layers]:
                layer.dropout = nn.Dropout(m.ffn_dropout)  # after the feed-forward activation
                for attention in (layer.self_attn, getattr(layer, "multihead_attn", None)):
                    if attention is not None:
                        attention.dropout = m.attention_dropout  # on the attention weights

        def embed(self, ids):
            x = self.embedding(ids)
            if m.scale_embeddings:
                x = x * math.sqrt(m.d_model)
            return self.dropout(x + self.positions[: ids.shape[1]])

        def forward(self, src, tgt_in):
            t = tgt_in.shape[1]
            causal = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
            src_pad, tgt_pad = src == m.pad_id, tgt_in == m.pad_id
            h = self.transformer(
                self.embed(src), self.embed(tgt_in), tgt_mask=causal, src_key_padding_mask=src_pad,
                tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad, tgt_is_causal=True,
            )  # fmt: skip
            return h @ self.embedding.weight.t()

    model = NNTransformer()
    model.load_state_dict(nn_transformer_state_dict(state_dict, m), strict=True)
    return model


def nn_transformer_state_dict(state_dict: dict, model_config) -> dict:
    """torch_ref parameter names -> NNTransformer's (query/key/value stacked into nn.MultiheadAttention's in_proj)."""
    import torch

    def tensor(name):
        return torch.tensor(np.asarray(state_dict[name]))  # a copy: the arrays may be read-only

    out = {"embedding.weight": tensor("source_embedding.weight")}
    attention = {"self_attn": "self_attn", "cross_attn": "multihead_attn"}
    norms = {
        "encoder": {"self_attn_norm": "norm1", "feed_forward_norm": "norm2"},
        "decoder": {"self_attn_norm": "norm1", "cross_attn_norm": "norm2", "feed_forward_norm": "norm3"},
    }
    for stack, layers in (("encoder", model_config.num_encoder_layers), ("decoder", model_config.num_decoder_layers)):
        for i in range(layers):
            ours, theirs = f"{stack}.layers.{i}", f"transformer.{stack}.layers.{i}"
            for our_name, their_name in attention.items():
                if stack == "encoder" and our_name == "cross_attn":
                    continue
                leaves = ["weight", "bias"] if model_config.use_bias else ["weight"]
                for leaf in leaves:
                    out[f"{theirs}.{their_name}.in_proj_{leaf}"] = torch.cat(
                        [tensor(f"{ours}.{our_name}.{p}.{leaf}") for p in ("query", "key", "value")])  # fmt: skip
                    out[f"{theirs}.{their_name}.out_proj.{leaf}"] = tensor(f"{ours}.{our_name}.out.{leaf}")
            for linear in ("linear1", "linear2"):
                for leaf in ("weight", "bias"):
                    out[f"{theirs}.{linear}.{leaf}"] = tensor(f"{ours}.feed_forward.{linear}.{leaf}")
            for our_norm, their_norm in norms[stack].items():
                for leaf in ("weight", "bias"):
                    out[f"{theirs}.{their_norm}.{leaf}"] = tensor(f"{ours}.{our_norm}.{leaf}")
        if model_config.norm_position == "pre":
            for leaf in ("weight", "bias"):
                out[f"transformer.{stack}.norm.{leaf}"] = tensor(f"{stack}.final_norm.{leaf}")
    return out


def build_hf(model_config, model):
    """MarianMTModel (post-norm) or PegasusForConditionalGeneration (pre-norm) holding our model's weights; returns
    (name, module, forward(src, tgt_in) -> logits)."""
    from jax_transformer.config import Config
    from jax_transformer.data.tokenizer import BOS_ID, EOS_ID
    from jax_transformer.interop.hf_export import hf_architecture, to_hf

    hf_model = to_hf(model, Config(model=model_config), pad_id=model_config.pad_id, bos_id=BOS_ID, eos_id=EOS_ID)
    name = {"marian": "HF Marian", "pegasus": "HF Pegasus"}[hf_architecture(model_config)]
    pad = model_config.pad_id

    def forward(src, tgt_in):
        return hf_model(
            input_ids=src, attention_mask=(src != pad).long(), decoder_input_ids=tgt_in,
            decoder_attention_mask=(tgt_in != pad).long(), use_cache=False,
        ).logits  # fmt: skip

    return name, hf_model, forward


def bench_torch_peer(model, forward, run_config, batch: dict, steps: int, warmup: int, lr: float) -> dict:
    """Time forward + label-smoothed CE (padding ignored) + backward + clip + Adam + zero_grad of a peer model."""
    import torch
    from torch.nn import functional as F

    model_config, cfg = run_config.model, run_config.train
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

    # tied weights counted once (parameters() deduplicates); fixed sinusoid tables (requires_grad False) not counted
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    times, first = common.time_calls(step, steps, warmup)
    return {"params": params, "times": times, "first": first, "loss": float(holder["loss"])}


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Training tokens/s and MFU of this project (JAX) vs torch_ref, torch.nn.Transformer and "
        "Hugging Face Marian / Pegasus on the same batch, architecture and weights.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", default="configs/multi30k_en_de_8k.py", help="recipe (.py) or a run's config.json")
    parser.add_argument("--vocab", type=int, default=0, help="vocabulary (0: the config's data.vocab_size)")
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "base"], choices=list(PRESETS))
    parser.add_argument("--norms", nargs="+", default=["post", "pre"], choices=["post", "pre"],
                        help="norm placements: a row group for each")  # fmt: skip
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS, help="peers besides jax")
    parser.add_argument("--no-jax", action="store_true", help="skip this project's JAX rows")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--rows", type=int, default=128, help="sentences in the batch")
    parser.add_argument("--src-len", type=int, default=24, help="padded source length")
    parser.add_argument("--tgt-len", type=int, default=24, help="padded target length")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row, at every size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first compiles JAX)")
    parser.add_argument("--threads", type=int, default=common.available_cores(), help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0, help="seeds the batch and the weights")
    parser.add_argument("--peak-size", type=int, default=2048, help="n of the n x n x n matmul measuring the peaks")
    args = parser.parse_args(argv)
    for key in ("rows", "src_len", "tgt_len", "steps", "warmup", "threads", "peak_size"):
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
    print(f"- warm-up + timed steps per row: {args.warmup} + {args.steps}", flush=True)
    peaks = common.matmul_peaks(args.precisions, args.peak_size)

    header = ["implementation", "precision", "model", "params", "GFLOP/step", "step ms", "p10-p90 ms", "tokens/s",
              "MFU"]  # fmt: skip
    rows, notes, ratios = [], [], []
    max_len = max(args.src_len, args.tgt_len)
    for size in args.sizes:
        for norm in args.norms:
            results = {}  # (implementation, precision) -> result
            label = None
            for precision in args.precisions:
                ((_, model_config),) = tt.model_configs(config, [size], precision == "bf16", max_len, vocab)
                model_config = dataclasses.replace(model_config, norm_position=norm)
                run_config = dataclasses.replace(config, model=model_config)
                m = model_config
                label = (f"{size} {norm}-norm: d{m.d_model} {m.num_encoder_layers}+{m.num_decoder_layers}L "
                         f"ff{m.d_ff} h{m.num_heads}")  # fmt: skip
                flops = tt.train_flops(model_config, args.rows, args.src_len, args.tgt_len)
                lr = float(learning_rate_schedule(run_config.train, m.d_model)(0))
                model = Transformer(model_config, rngs=nnx.Rngs(params=args.seed, dropout=args.seed + 1))
                state_dict = to_state_dict(model)  # before the JAX step donates the parameters
                # the HF peer copies the weights out of the model: before the JAX step donates them
                hf = build_hf(dataclasses.replace(model_config, dtype="float32"), model) if "hf" in args.peers else None
                if not args.no_jax:
                    _progress("jax", precision, label)
                    results["jax", precision] = tt.bench_jax(run_config, model, batch, steps=args.steps,
                                                             warmup=args.warmup)  # fmt: skip
                del model
                for peer in args.peers:
                    _progress(peer, precision, label)
                    if peer == "torch_ref":
                        result = tt.bench_torch(run_config, state_dict, batch, args.steps, args.warmup, lr)
                        name = peer
                    elif peer == "nn.Transformer":
                        module = build_nn_transformer(model_config, state_dict)
                        result = bench_torch_peer(module, module, run_config, batch, args.steps, args.warmup, lr)
                        name = peer
                    else:
                        name, module, forward = hf
                        result = bench_torch_peer(module, forward, run_config, batch, args.steps, args.warmup, lr)
                    results[name, precision] = result
                    module = None
                hf = None
            best = {}
            for (name, precision), result in results.items():
                step = common.median(result["times"])
                p10, p90 = (1e3 * common.quantile(result["times"], q) for q in (0.1, 0.9))
                rows.append([name, precision, label, f"{result['params']:,}", f"{flops / 1e9:.1f}",
                             f"{1e3 * step:.1f}", f"{p10:.1f}-{p90:.1f}", f"{real_tokens / step:,.0f}",
                             f"{100 * flops / step / peaks[precision]:.1f}%"])  # fmt: skip
                notes.append(f"{name} {precision} {size} {norm}-norm: first step {result['first']:.2f} s, loss "
                             f"after {args.warmup + args.steps} steps {result['loss']:.3f}"
                             f"{' (minus the smoothing entropy)' if name == 'jax' else ''}")  # fmt: skip
                group = "ours" if name == "jax" else "peer"
                if group not in best or step < best[group][0]:
                    best[group] = (step, f"{name} {precision}")
            if "ours" in best and "peer" in best:
                ratio = best["peer"][0] / best["ours"][0]
                ratios.append(f"{size} {norm}-norm: ours ({best['ours'][1]}) / best peer ({best['peer'][1]}) = "
                              f"{ratio:.2f}x tokens/s")  # fmt: skip

    print()
    print(common.markdown_table(header, rows))
    print()
    for line in ratios:
        print(f"- {line}")
    print()
    print("Compared: one training step of the same architecture (norm placement, dropout sites and rates, tied "
          "embeddings), the same weights, batch, loss, optimizer and thread count. tokens/s: real (non-pad) source + "
          "target tokens per second of median step time. GFLOP/step: analytic matmul FLOPs of one training step on "
          "the padded shapes (train_throughput.train_flops; the same for every implementation of a size). MFU: "
          "GFLOP/step / step time / the matmul peak of the row's precision (above).")  # fmt: skip
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
