"""SST-2 sentiment (GLUE; train 67,349 / dev 872, bundled in data/sst2) by fine-tuning all-MiniLM-L6-v2.

The bundled sentence-transformers MiniLM (6 layers, d_model 384) with a mean-pooled linear head; AdamW, linear warmup
(6%) and decay, clipping at 1.0. SST-2 sentences are short: with max_len 64 only 4 training sentences are truncated,
and 8-token length buckets give 8 batch shapes with 79.8% real tokens. Two epochs (4,214 updates) with R-Drop
(alpha 1.0: every batch runs twice under different dropout masks), the pretrained token embeddings frozen, and dev
evaluation of an exponential moving average of the weights (decay 0.999), every 250 updates. Measured with
`--config.train.bf16=true`, one run at a time on the 2-core CPU (2026-12-02/03): best dev accuracy 90.60, 90.94,
90.83, 91.17, 90.37, 91.51, 89.91% (seeds 0-6; median 90.83%, mean 90.76%; 90.29% on average at the last step),
37-40 minutes each on the AMD machine.

With the token embeddings trained (train.freeze_token_embeddings=False), seeds 0-3 score 90.71, 90.37, 90.25, 90.94%
(mean 90.57%, 89.94% at the last step; seed 0 took 29 minutes on the Intel AMX machine). Earlier recipes on the same
data (best checkpoint): 3 epochs plain, lr 1e-4: 89.9%; lr 5e-5: 90.1%; 3 epochs with layer-wise lr decay 0.85 at lr
1.5e-4 and the EMA: 90.25%; this recipe at 3 epochs and lr 5e-5: 90.02%. A uniform soup of four seeds' best checkpoints
(python -m jax_transformer.soup) scores 90.37%. The 91% target is met by two runs in seven, not by the median: every
recipe levels off at 89.5-91.5% from the first epoch on while training accuracy climbs past 95%.
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
