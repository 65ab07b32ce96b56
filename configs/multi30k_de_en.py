"""German->English Multi30k: the English->German recipe with the languages swapped, at 4,000 updates and alpha 0.6.

Its measured row was trained with 4-token length buckets by the in-memory batcher of an earlier version (what
`data.pack_length=0 data.max_len=100 data.length_bucket_step=4` now stream); like the en->de recipe it now packs its
rows, which is not measured yet for de->en. The longer en->de length: --config.train.steps=8000
--config.decode.alpha=1.2 (a finished 4,000-step run resumes from its last checkpoint; see docs/training.md).
Run: `python scripts/multi30k_results.py --config configs/multi30k_de_en.py --average 5`.
Measured figures: docs/results.md#multi30k-translation.
"""

import dataclasses
import os

from jax_transformer.config import load_config_file

_BASE = os.path.join(os.path.dirname(__file__), "multi30k_en_de.py")


def get_config():
    config = load_config_file(_BASE)
    return dataclasses.replace(
        config,
        name="multi30k_de_en",
        data=dataclasses.replace(config.data, src_lang="de", tgt_lang="en"),
        train=dataclasses.replace(config.train, steps=4000),
        decode=dataclasses.replace(config.decode, alpha=0.6),
    )
