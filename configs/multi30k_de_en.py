"""German->English Multi30k: the English->German recipe with the languages swapped."""

import dataclasses
import os

from jax_transformer.config import load_config_file

_BASE = os.path.join(os.path.dirname(__file__), "multi30k_en_de.py")


def get_config():
    config = load_config_file(_BASE)
    return dataclasses.replace(
        config, name="multi30k_de_en", data=dataclasses.replace(config.data, src_lang="de", tgt_lang="en")
    )
