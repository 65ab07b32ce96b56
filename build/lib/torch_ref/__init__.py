"""The PyTorch mirror of jax_transformer: the model (`torch_ref.model`), decoding (`torch_ref.decode`) and loading an
exported model directory (`torch_ref.pretrained`)."""

from .decode import beam_search, greedy_search
from .pretrained import load_pretrained, translate

__all__ = ["beam_search", "greedy_search", "load_pretrained", "translate"]
