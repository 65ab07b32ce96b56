"""SST-2 sentiment (GLUE, bundled in data/sst2) by fine-tuning all-MiniLM-L6-v2 (6 layers, d_model 384).

A mean-pooled linear head; AdamW with linear warmup (6%) and decay, clipping at 1.0; max_len 64 and 8-token length
buckets (SST-2 sentences are short). Two epochs with R-Drop (alpha 1.0: every batch runs twice under different dropout
masks), the pretrained token embeddings frozen, and dev evaluation of an exponential moving average of the weights
(decay 0.999) every 250 updates: each of the three lifts the dev plateau a little.
Run: `python train.py --config configs/sst2_minilm.py` (see docs/finetuning.md).
Measured figures and the recipes compared: docs/results.md#sst-2-classification.
"""

from jax_transformer.config import ClassifyConfig, ClassifyDataConfig, ClassifyTrainConfig


def get_config() -> ClassifyConfig:
    return ClassifyConfig(
        name="sst2_minilm",
        pretrained="all-MiniLM-L6-v2",
        pooling="mean",
        data=ClassifyDataConfig(
            format="tsv",
            path="data/sst2",
            train_file="train.tsv.gz",
            valid_file="dev.tsv.gz",
            text_field="sentence",
            label_field="label",
            labels="0,1",
            label_names="negative,positive",
            max_len=64,
            length_bucket_step=8,
        ),
        train=ClassifyTrainConfig(
            epochs=2,
            batch_size=32,
            learning_rate=1e-4,
            warmup_ratio=0.06,
            weight_decay=0.01,
            clip_grad_norm=1.0,
            log_every=50,
            eval_every=250,
            rdrop_alpha=1.0,
            ema_decay=0.999,
            freeze_token_embeddings=True,
        ),
    )
