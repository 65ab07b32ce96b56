"""Does our trainer learn as fast as PyTorch's own Transformer? JAX vs `torch.nn.Transformer`, same batches, same start.

  python bench/learning_curve_vs_torch.py --steps 300                  # the main recipe's model, dropout off
  python bench/learning_curve_vs_torch.py --steps 300 --dropout 0.1    # with residual/embedding dropout 0.1

Both sides train the model of `--config` (default: the main Multi30k recipe) on the same Multi30k batches, in the same
order, from the same tokenizer (this project's bucket stream and sentencepiece) and the same initial weights: ours
through the engine's compiled `train_step` (what `train.py` uses), the reference a plain PyTorch loop around the
`torch.nn.Transformer` of `bench/peers.py` (the config's norm placement and final norms, dropout sites and rates,
shared and tied embeddings scaled by sqrt(d_model), our sinusoids; `tests/test_bench_peers.py` checks that it computes
our logits), Adam with the same betas, epsilon and learning-rate schedule, label smoothing through `F.cross_entropy`.
Without dropout the two curves differ only by floating-point rounding, which grows over the steps; a training bug
on our side (masks, shifted targets, loss normalisation, the optimizer, dropout) shows up as a curve that falls
clearly more slowly.

Prints the training nll (nats per target token, no smoothing) every --log-every steps for both, side by side. This is
a diagnostic, not a test: nothing is asserted.
"""

import argparse
import os
import sys
import tempfile
import time

import common
from peers import build_nn_transformer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(common.REPO_ROOT, "configs", "multi30k_en_de_8k.py"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="model.dropout of both models (the recipe's is ignored)")  # fmt: skip
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
    from jax_transformer.data.stream import BucketStream
    from jax_transformer.interop.torch_convert import to_state_dict
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
    stream = iter(BucketStream(examples, config.data.max_tokens, config.data.length_bucket_step, seed=0))
    # read once, fed to both sides: the stream is one iterator (a second iter() would continue where the first stopped)
    batches = [next(stream) for _ in range(args.steps)]
    model = Transformer(config.model, rngs=nnx.Rngs(params=0, dropout=1))
    initial_weights = to_state_dict(model)  # before the JAX step donates them
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
        pending, out, started = [], {}, time.time()
        for step, batch in enumerate(batches, 1):
            pending.append(train_one(batch, step - 1))
            if step % args.log_every == 0:
                window = sum_metrics(pending)
                out[step], pending = window["nll"] / window["tokens"], []
        return out, time.time() - started

    def jax_step(batch, _):
        nonlocal state
        state, metrics = steps.train_step(state, steps.shard_batch(batch))
        return {"nll": metrics["nll"], "tokens": metrics["tokens"]}

    ours, ours_s = curve(jax_step)

    model = build_nn_transformer(config.model, initial_weights).train()
    optimizer = torch.optim.Adam(
        model.parameters(), lr=1.0, betas=(config.train.adam_b1, config.train.adam_b2), eps=config.train.adam_eps
    )
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
