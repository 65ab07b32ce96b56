"""German->English Multi30k: the English->German main recipe (configs/multi30k_en_de.py) with the languages swapped.

The same model, shared vocabulary, batches, 13,000 updates and schedule; beam 5 with alpha 1.0, chosen on de->en's val
(`scripts/tune_decode.py runs/multi30k_de_en/avg10 --beams 5 --alphas 0.6 0.8 1.0 1.2 1.5 2.0`; en->de's is 1.5).
Run: `python scripts/multi30k_results.py --config configs/multi30k_de_en.py`.
Measured figures: docs/results.md#multi30k-translation.
"""

import dataclasses
import os

from jax_transformer.config import load_config_file

_BASE = os.path.join(os.path.dirname(__file__), "multi30k_en_de.py")


def get_config():
    config = load_config_file(_BASE)
    data = dataclasses.replace(config.data, src_lang="de", tgt_lang="en")
    decode = dataclasses.replace(config.decode, alpha=1.0)
    return dataclasses.replace(config, name="multi30k_de_en", data=data, decode=decode)
