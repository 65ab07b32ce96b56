"""English->German Multi30k, the earlier main recipe: 8,000 updates of 4,096 tokens (1 hour 45 minutes on 2 cores).

The model, data, vocabulary, dropout, label smoothing and learning-rate peak of configs/multi30k_en_de.py, with
8,000 updates of 4,096 tokens in packed rows of 64 (one batch shape, 93% real tokens) and an inverse-sqrt schedule
(peak 3e-3 after 400 warmup steps); validation loss every 250 updates, greedy BLEU every 500. Evaluation averages the
last 10 checkpoints and decodes with beam 5, alpha 1.2 (both chosen on val). Computes in fp32 on any CPU;
`model.dtype=bfloat16` is 1.3x faster where the CPU has bf16 units (the measured rows used it). The runs of
docs/results.md numbered 1-9 and 11 are this recipe with the overrides their rows give; the demo and the speed
benchmarks use its batches.

Run: `python scripts/multi30k_results.py --config configs/multi30k_en_de_8k.py model.dtype=bfloat16`.
"""

from jax_transformer.config import Config, DataConfig, DecodeConfig, TrainConfig, model_preset


def get_config() -> Config:
    return Config(
        name="multi30k_en_de_8k",
        model=model_preset("tiny", dropout=0.3, norm_position="pre", max_len=256),
        data=DataConfig(
            path="data/multi30k", src_lang="en", tgt_lang="de", vocab_size=8000, max_len=64, max_tokens=4096,
            pack_length=64,  # 93.2% real tokens in one shape; length buckets of 3 tokens: 90.6% in 32 shapes
        ),  # fmt: skip
        train=TrainConfig(
            steps=8000,
            schedule="inverse_sqrt",
            learning_rate=3e-3,
            warmup_steps=400,
            label_smoothing=0.1,
            log_every=50,
            eval_every=250,  # validation loss; greedy BLEU on the whole val split every bleu_every steps
            bleu_every=500,
            save_every=250,
            keep_checkpoints=10,
        ),  # fmt: skip
        decode=DecodeConfig(beam_size=5, alpha=1.2),
    )
