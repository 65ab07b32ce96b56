"""DialogSum dialogue summarization (Chen et al., 2021): the same encoder-decoder, trained on (dialogue, summary) pairs.

Sized for a 2-core CPU: d_model 256, 4 heads, d_ff 512, 3+3 layers, a shared 8,000-piece vocabulary. Sources are
truncated to 320 tokens (none is dropped), summaries kept whole; 32-token length buckets. Pre-norm layers with a short
warmup (400 steps) to a 2e-3 inverse-sqrt peak, as the Multi30k recipe (it learns several times faster on a CPU
budget); dropout 0.1, since 5,000 updates are only about 12 epochs. Evaluation averages the last 5 checkpoints and
decodes with beam 4, length penalty 1.0, at least 10 tokens, no repeated trigram (as BART on CNN/DM); ROUGE-1/2/L.
Run: train.py, then `jax_transformer.average RUN --last 5` and `jax_transformer.evaluate` (docs/summarization.md).
Measured figures: docs/results.md#dialogsum-summarization.
"""

from jax_transformer.config import Config, DataConfig, DecodeConfig, TrainConfig, model_preset


def get_config() -> Config:
    return Config(
        name="dialogsum",
        model=model_preset("small", d_ff=512, dropout=0.1, norm_position="pre", max_len=512),
        data=DataConfig(
            format="jsonl",
            path="data/dialogsum",
            src_field="document",
            tgt_field="summary",
            references_field="references",
            train_split="train",
            valid_split="val",
            test_split="test",
            vocab_size=8000,
            max_len=320,
            max_source_len=320,
            max_tokens=6144,
            length_bucket_step=32,
            min_bucket_batches=4,
        ),  # fmt: skip
        train=TrainConfig(
            steps=5000,
            schedule="inverse_sqrt",
            learning_rate=2e-3,
            warmup_steps=400,
            label_smoothing=0.1,
            clip_grad_norm=1.0,
            log_every=50,
            eval_every=250,
            best_metric="loss",
            save_every=250,
            keep_checkpoints=5,
        ),  # fmt: skip
        decode=DecodeConfig(beam_size=4, alpha=1.0, min_len=10, no_repeat_ngram_size=3, metric="rouge"),
    )
