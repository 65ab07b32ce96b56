"""The one bridge between the frameworks: Flax NNX parameters <-> torch_ref `state_dict` and safetensors files.

`torch_ref/model.py` uses the same module paths as `model.py`, so a parameter's torch name is its Flax path with the
leaf renamed as torch spells it: `kernel` (in, out) -> `weight` (out, in), LayerNorm `scale` -> `weight`,
Embed `embedding` -> `weight`, `bias` -> `bias`. Conversion is exact (a transpose at most) and refuses any
missing, unused or mis-shaped parameter. Files are safetensors (no pickle), keyed by the torch names.
"""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_transformer.config import UserError

_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}


class ConversionError(UserError):
    """Parameters that do not match the model they are loaded into."""


def torch_name(path: tuple) -> str:
    """('encoder', 'layers', 0, 'self_attn', 'query', 'kernel') -> 'encoder.layers.0.self_attn.query.weight'."""
    *modules, leaf = (str(p) for p in path)
    if leaf not in _LEAF_TO_TORCH:
        raise ConversionError(f"no torch name for parameter {'.'.join(modules + [leaf])}")
    return ".".join(modules + [_LEAF_TO_TORCH[leaf]])


def _to_torch_layout(leaf: str, array: np.ndarray) -> np.ndarray:
    return array.T if leaf == "kernel" else array  # Flax Linear kernel is (in, out), torch weight (out, in)


def to_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """The model's parameters as a torch-named dict of numpy arrays (fp32 copies, torch layouts)."""
    out = {}
    for path, param in nnx.state(model, nnx.Param).flat_state():
        array = np.asarray(param.get_value(), dtype=np.float32)
        out[torch_name(path)] = np.ascontiguousarray(_to_torch_layout(str(path[-1]), array))
    return out


def load_state_dict(model: nnx.Module, state_dict: dict, source: str = "state dict") -> None:
    """Copy a torch-named dict (numpy arrays or torch tensors) into `model` in place, exactly, checking every name."""
    remaining = dict(state_dict)
    updates = []  # everything is checked before anything is written: a failed load leaves the model as it was
    for path, param in nnx.state(model, nnx.Param).flat_state():
        name = torch_name(path)
        if name not in remaining:
            raise ConversionError(f"{source} has no parameter {name}: it was saved from a different model config")
        value = remaining.pop(name)
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().float().cpu().numpy()
        value = _to_torch_layout(str(path[-1]), np.asarray(value))  # transposing back is the same operation
        expected = param.get_value().shape
        if value.shape != expected:
            raise ConversionError(
                f"{source}: parameter {name} has shape {tuple(value.shape)} but the model expects {tuple(expected)}"
            )
        updates.append((param, value))
    if remaining:
        raise ConversionError(f"{source} has parameters the model does not use: {', '.join(sorted(remaining)[:5])}")
    for param, value in updates:  # jnp.array copies: the model never aliases the source's memory
        param.set_value(jnp.array(value, dtype=param.get_value().dtype))


def save_safetensors(model: nnx.Module, path: str, metadata: dict | None = None) -> None:
    from safetensors.numpy import save_file

    save_file(to_state_dict(model), path, metadata=metadata)


def load_safetensors(model: nnx.Module, path: str) -> None:
    from safetensors.numpy import load_file

    try:
        state_dict = load_file(path)
    except FileNotFoundError:
        raise UserError(f"no weights file at {path}") from None
    except Exception as e:
        raise UserError(f"{path} is not a readable safetensors file ({e})") from None
    load_state_dict(model, state_dict, source=path)
