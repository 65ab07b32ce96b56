"""A tiny model trained to copy its input: decoding tests need a model whose outputs mean something."""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_transformer.config import Config, TrainConfig, model_preset
from jax_transformer.model.transformer import Transformer
from jax_transformer.tasks.translation import translation_steps

BOS, EOS = 2, 3


def copy_batch(num: int = 32, length: int = 8, vocab: int = 16, seed: int = 0) -> dict:
    """Sequences of ids 4..vocab-1 (0-3 are PAD, UNK, BOS, EOS): src = seq + EOS, target = the same."""
    seqs = np.random.default_rng(seed).integers(4, vocab, size=(num, length)).astype(np.int32)
    column = lambda value: np.full((num, 1), value, np.int32)
    return {
        "src": np.concatenate([seqs, column(EOS)], 1),
        "tgt_in": np.concatenate([column(BOS), seqs], 1),
        "tgt_out": np.concatenate([seqs, column(EOS)], 1),
    }


def train_copy_model(steps: int = 400, **model_overrides):
    """Returns (steps object, trained state, the training batch). About 10 s on a 2-core CPU."""
    config = Config(
        model=model_preset("test", vocab_size=16, **model_overrides),
        train=TrainConfig(schedule="constant", learning_rate=3e-3, warmup_steps=20, label_smoothing=0.0,
                          clip_grad_norm=1.0),  # fmt: skip
    )
    model = Transformer(config.model, rngs=nnx.Rngs(params=0, dropout=1))
    runner = translation_steps(config, model)
    state = runner.init_state(nnx.state(model, nnx.Param))
    batch = copy_batch()
    for _ in range(steps):
        state, _ = runner.train_step(state, batch)
    return runner, state, batch


def token_accuracy(runner, state, batch) -> float:
    logits = runner.eval_model(state["params"])(batch["src"], batch["tgt_in"])
    return float(jnp.mean(jnp.argmax(logits, -1) == batch["tgt_out"]))
