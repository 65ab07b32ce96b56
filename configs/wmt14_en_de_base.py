"""The paper's base model on WMT 2014 English->German (§5, §6.1), for GPUs: bf16 compute, fp32 parameters.

Needs TFDS `wmt14_translate/de-en` prepared in TFDS_DATA_DIR (`tfds build wmt14_translate/de-en` on a machine with
internet). Each step takes 96 packed rows of 256 tokens, 24,576 token slots per side (§5.1: about 25,000 source and
25,000 target tokens), split over every device of the mesh, pure data parallel over all visible GPUs by default; the
pairs stream from the prepared split, each host reading its own share (docs/training.md#batches-51); 100k steps
with 4,000 warmup steps of Eq. 3 (§5.3); checkpoints every 1,000 steps, the last 5 kept for averaging as §6.1 does
(`python -m jax_transformer.average RUN --last 5`).
Run: `python train.py --config configs/wmt14_en_de_base.py`; several nodes, fewer or smaller GPUs: docs/distributed.md.
Not measured yet: docs/distributed.md#known-limitations.
"""

from jax_transformer.config import Config, DataConfig, DecodeConfig, MeshConfig, TrainConfig, model_preset


def get_config() -> Config:
    return Config(
        name="wmt14_en_de_base",
        model=model_preset("base", dtype="bfloat16", max_len=512),
        data=DataConfig(
            format="tfds",
            tfds_name="wmt14_translate/de-en",
            src_lang="en",
            tgt_lang="de",
            valid_split="validation",
            test_split="test",
            vocab_size=37000,
            spm_model_type="bpe",
            spm_max_sentences=4_000_000,
            max_len=256,
            pack_length=256,  # packed rows (as the Flax WMT example): one batch shape, and each host reads its share
            max_tokens=24576,  # 96 rows of 256: whole rows for 1, 2, 4, 8, 16 or 32 data-parallel devices
        ),  # fmt: skip
        train=TrainConfig(
            steps=100_000,
            schedule="noam",
            learning_rate=1.0,
            warmup_steps=4000,
            label_smoothing=0.1,
            log_every=100,
            eval_every=5000,
            bleu_max_sentences=1000,
            save_every=1000,
            keep_checkpoints=5,
        ),  # fmt: skip
        decode=DecodeConfig(beam_size=4, alpha=0.6),
        mesh=MeshConfig(data=-1, model=1),  # all GPUs data parallel; the model (63M parameters) fits on each
    )
