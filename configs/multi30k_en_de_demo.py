"""A short run of the main recipe (`make demo`): its first 500 updates on the bundled Multi30k, minutes on a CPU.

configs/multi30k_en_de.py (same model, data, seed and schedule) stopped at step 500, with dropout 0.1 instead of 0.3
(less regularisation learns faster in a short run) and greedy validation BLEU on the first 300 validation sentences.
It shows the whole pipeline: data, tokenizer, training, validation BLEU, checkpoints.
Measured figures: README.md#two-commands-on-a-fresh-machine and docs/results.md#multi30k-translation.
"""

import dataclasses
import os

from jax_transformer.config import load_config_file

_BASE = os.path.join(os.path.dirname(__file__), "multi30k_en_de.py")


def get_config():
    config = load_config_file(_BASE)
    train = dataclasses.replace(config.train, steps=500, eval_every=500, bleu_every=0, save_every=500,
                                bleu_max_sentences=300)  # fmt: skip
    model = dataclasses.replace(config.model, dropout=0.1)
    return dataclasses.replace(config, name="multi30k_en_de_demo", model=model, train=train)
