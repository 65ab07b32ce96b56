"""Does our trainer learn as fast as an independent implementation? JAX vs `torch.nn.Transformer`, same batches.

  python bench/learning_curve_vs_torch.py --steps 300                  # the main recipe's model, dropout off
  python bench/learning_curve_vs_torch.py --steps 300 --dropout 0.1    # with the recipe's dropout

Both sides train the model of `--config` (default: the main Multi30k recipe) on the same Multi30k batches, in the same
order, from the same tokenizer (this project's BatchIterator and sentencepiece): ours through `train_lib.Steps` (the
compiled step `train.py` uses), the reference a plain PyTorch loop around `torch.nn.Transformer` (the config's pre- or
post-norm layers, ReLU; nn.Transformer always ends both stacks with a LayerNorm, which our post-norm stacks do not
have), shared and tied embeddings scaled by sqrt(d_model), interleaved sinusoids, Xavier init, Adam with the same betas,
epsilon and learning-rate schedule, label smoothing through `F.cross_entropy`). Initial weights differ (each framework
draws its own), so the curves agree to within seed noise, not exactly; a training bug on our side (masks, shifted
targets, loss normalisation, the optimizer, dropout) shows up as a curve that falls clearly more slowly.

Prints the training nll (nats per target token, no smoothing) every --log-every steps for both, side by side. This is
a diagnostic, not a test: nothing is asserted.
"""

import argparse
import math
import os
import sys
import tempfile
import time

import common  # noqa: F401  (puts the repository root on sys.path)


def torch_reference(model_cfg, train_cfg, dropout: float):
    import warnings

    import numpy as np
    import torch
    from torch import nn

    warnings.filterwarnings("ignore", message="enable_nested_tensor")  # a note about pre-norm layers, not a problem
    d = model_cfg.d_model

    class Reference(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(model_cfg.vocab_size, d)
            nn.init.normal_(self.embedding.weight, 0.0, d**-0.5)
            self.transformer = nn.Transformer(
                d, model_cfg.num_heads, model_cfg.num_encoder_layers, model_cfg.num_decoder_layers,
                model_cfg.d_ff, dropout, batch_first=True, norm_first=model_cfg.norm_position == "pre",
                layer_norm_eps=model_cfg.layer_norm_eps,
            )  # fmt: skip
            for p in self.transformer.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
            position = np.arange(model_cfg.max_len)[:, None]
            angles = position / 10000 ** (np.arange(0, d, 2) / d)
            table = np.zeros((model_cfg.max_len, d))
            table[:, 0::2], table[:, 1::2] = np.sin(angles), np.cos(angles)
            self.register_buffer("positions", torch.tensor(table, dtype=torch.float32))
            self.dropout = nn.Dropout(dropout)

        def embed(self, ids):
            return self.dropout(self.embedding(ids) * math.sqrt(d) + self.positions[: ids.shape[1]])

        def forward(self, src, tgt_in):
            length = tgt_in.shape[1]
            causal = torch.triu(torch.ones(length, length, dtype=torch.bool), 1)  # True = may not attend
            src_pad, tgt_pad = src == model_cfg.pad_id, tgt_in == model_cfg.pad_id
            hidden = self.transformer(
                self.embed(src), self.embed(tgt_in), tgt_mask=causal, src_key_padding_mask=src_pad,
                tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad,
            )  # fmt: skip
            return hidden @ self.embedding.weight.T  # (batch, tgt_len, vocab)

    model = Reference()
    optimizer = torch.optim.Adam(
        model.parameters(), lr=1.0, betas=(train_cfg.adam_b1, train_cfg.adam_b2), eps=train_cfg.adam_eps
    )
    return model, optimizer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(common.REPO_ROOT, "configs", "multi30k_en_de.py"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout of both models (the recipe's is ignored)")
    parser.add_argument("--log-every", type=int, default=50)
    args = parser.parse_args(argv)

    import dataclasses

    import jax
    import numpy as np
    import torch
    from flax import nnx
    from torch.nn import functional as F

    from jax_transformer.config import load_config_file
    from jax_transformer.data import pipeline as data_lib
    from jax_transformer.model.transformer import Transformer
    from jax_transformer.tasks.translation import resolve_config, sum_metrics, translation_steps

    torch.manual_seed(0)
    torch.set_num_threads(common.available_cores())
    config = load_config_file(args.config)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, dropout=args.dropout))
    pairs = data_lib.load_split(config.data, config.data.train_split)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = data_lib.get_tokenizer(config.data, tmp, pairs)
    config = resolve_config(config, tokenizer)
    if config.model.positional != "sinusoidal" or config.model.activation != "relu":
        print("this comparison mirrors sinusoidal ReLU models only", file=sys.stderr)
        return 2
    examples = data_lib.encode_examples(pairs, tokenizer, config.data.max_len).examples
    batches = data_lib.BatchIterator(examples, config.data.max_tokens, config.data.length_bucket_step, seed=0)
    model = Transformer(config.model, rngs=nnx.Rngs(params=0, dropout=1))
    steps = translation_steps(config, model)
    state = steps.init_state(nnx.state(model, nnx.Param))
    print(
        f"# {common.cpu_model()}; jax {jax.__version__}, torch {torch.__version__}; {config.name}: d_model "
        f"{config.model.d_model}, dropout {args.dropout}, {config.data.max_tokens} tokens/batch, "
        f"{config.train.schedule} peak {config.train.learning_rate:g}"
    )

    def curve(train_one):
        """Train --steps steps; the nll per target token of each --log-every window. `train_one` returns the step's
        {'nll', 'tokens'} sums, which stay on the device until the window is summed (as in the trainer)."""
        it, pending, out, started = iter(batches), [], {}, time.time()
        for step in range(1, args.steps + 1):
            pending.append(train_one(next(it), step - 1))
            if step % args.log_every == 0:
                window = sum_metrics(pending)
                out[step], pending = window["nll"] / window["tokens"], []
        return out, time.time() - started

    def jax_step(batch, _):
        nonlocal state
        state, metrics = steps.train_step(state, steps.shard_batch(batch))
        return {"nll": metrics["nll"], "tokens": metrics["tokens"]}

    ours, ours_s = curve(jax_step)

    model, optimizer = torch_reference(config.model, config.train, args.dropout)
    vocab = config.model.vocab_size

    def torch_step(batch, count):
        for group in optimizer.param_groups:
            group["lr"] = float(steps.schedule(count))
        src, tgt_in, tgt_out = (torch.from_numpy(np.asarray(batch[k], np.int64)) for k in ("src", "tgt_in", "tgt_out"))
        logits = model(src, tgt_in).reshape(-1, vocab)
        labels = tgt_out.reshape(-1)
        loss = F.cross_entropy(
            logits, labels, ignore_index=config.model.pad_id, label_smoothing=config.train.label_smoothing,
            reduction="sum",
        )  # fmt: skip
        tokens = (labels != config.model.pad_id).sum()
        optimizer.zero_grad()
        (loss / tokens).backward()
        optimizer.step()
        with torch.no_grad():
            nll = F.cross_entropy(logits, labels, ignore_index=config.model.pad_id, reduction="sum")
        return {"nll": float(nll), "tokens": float(tokens)}

    reference, reference_s = curve(torch_step)
    print("| step | ours (JAX) train nll | torch.nn.Transformer train nll |")
    print("|---|---|---|")
    for step in ours:
        print(f"| {step} | {ours[step]:.4f} | {reference[step]:.4f} |")
    print(f"wall time: ours {ours_s:.0f} s, torch.nn.Transformer {reference_s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
