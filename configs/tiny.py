"""A tiny model for tests and smoke runs: trains in seconds on a CPU (quality is not the point)."""

from jax_transformer.config import Config, DataConfig, TrainConfig, model_preset


def get_config() -> Config:
    return Config(
        name="tiny",
        model=model_preset("test", max_len=256),
        data=DataConfig(vocab_size=500, max_len=64, max_tokens=512),
        train=TrainConfig(
            steps=20,
            schedule="inverse_sqrt",
            learning_rate=1e-3,
            warmup_steps=5,
            clip_grad_norm=1.0,
            log_every=5,
            eval_every=10,
            bleu_max_sentences=32,
            save_every=10,
            keep_checkpoints=2,
        ),  # fmt: skip
    )
