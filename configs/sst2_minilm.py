"""SST-2 sentiment (GLUE; train 67,349 / dev 872, bundled in data/sst2) by fine-tuning all-MiniLM-L6-v2.

The bundled sentence-transformers MiniLM (6 layers, d_model 384) with a mean-pooled linear head; AdamW, linear warmup
(6%) and decay, clipping at 1.0. SST-2 sentences are short: with max_len 64 only 4 training sentences are truncated,
and 8-token length buckets give 8 batch shapes with 79.8% real tokens. Three epochs (6,321 updates) on the 2-core CPU,
alone: dev accuracy 89.9% (best checkpoint, the last), 30 minutes (2026-12-01); one epoch gave 89.1% (2026-11-25).
The 91% target is not reached: dev accuracy stays within 89-90% from the second epoch on, while training accuracy
climbs to 98%.
"""

from jax_transformer.classify_config import ClassifyConfig, ClassifyDataConfig, ClassifyTrainConfig


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
            epochs=3,
            batch_size=32,
            learning_rate=1e-4,
            warmup_ratio=0.06,
            weight_decay=0.01,
            clip_grad_norm=1.0,
            log_every=50,
            eval_every=500,
        ),
    )
