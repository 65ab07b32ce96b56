"""English->German Multi30k: the project's main recipe, a small Transformer sized for a 2-core CPU.

Wu et al. (ACL 2021)'s Transformer-tiny: 4+4 layers, d_model 128, d_ff 256, 4 heads, a shared 8,000-piece vocabulary.
8,000 updates of 4,096 tokens in packed rows of 64 (one batch shape, 93% real tokens; no Multi30k pair is longer);
pre-norm layers with an inverse-sqrt schedule peaking at 3e-3 after 400 warmup steps (it learns several times faster
on a CPU budget than post-norm with a long warmup); dropout 0.3 (0.1 learns faster at first, then overfits); label
smoothing 0.1. Evaluation averages the last 10 checkpoints and decodes with beam 5, alpha 1.2 (both chosen on val).
Computes in fp32 on any CPU; `--config.model.dtype=bfloat16` is 1.3x faster where the CPU has bf16 units (the
measured row used it).

Run: `python scripts/multi30k_results.py --config configs/multi30k_en_de.py model.dtype=bfloat16` (train, average,
score, plot). Measured figures and how they were obtained: docs/results.md#multi30k-translation.
"""

from jax_transformer.config import Config, DataConfig, DecodeConfig, TrainConfig, model_preset


def get_config() -> Config:
    return Config(
        name="multi30k_en_de",
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
