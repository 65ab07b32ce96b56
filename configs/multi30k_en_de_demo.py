"""A short run of the main recipe (`make demo`): 550 updates on the bundled Multi30k, 3.9 minutes on a 2-core CPU.

configs/multi30k_en_de_8k.py (the main recipe's model, data, vocabulary, seed and learning-rate peak, in packed rows of
64, fp32), set up for a short run:
- 2,048 tokens per update instead of 4,096 and a 200-step warmup instead of 400: more updates per minute, which is
  what a short run needs;
- dropout 0.1 instead of 0.3 (less regularisation learns faster in a short run);
- greedy validation BLEU at the end only, on the first 300 validation sentences.
It shows the whole pipeline: data, tokenizer, training, validation BLEU, checkpoints.
Measured figures: README.md#two-commands-on-a-fresh-machine and docs/results.md#multi30k-translation.
"""

import dataclasses
import os

from jax_transformer.config import load_config_file

_BASE = os.path.join(os.path.dirname(__file__), "multi30k_en_de_8k.py")


def get_config():
    config = load_config_file(_BASE)
    data = dataclasses.replace(config.data, max_tokens=2048)
    train = dataclasses.replace(config.train, steps=550, warmup_steps=200, eval_every=550, bleu_every=0,
                                save_every=550, bleu_max_sentences=300)  # fmt: skip
    model = dataclasses.replace(config.model, dropout=0.1)
    return dataclasses.replace(config, name="multi30k_en_de_demo", model=model, data=data, train=train)
