"""§3 of the paper: attention, multi-head attention with its KV cache, embeddings and positions, the position-wise
feed-forward network, the encoder and decoder layers and stacks, the encoder-decoder and the encoder classifier.
The model imports nothing of data, training, decoding or checkpoints."""

from jax_transformer.model.transformer import (  # noqa: F401
    EncoderClassifier,
    Transformer,
    causal_mask,
    count_parameters,
    padding_mask,
    sinusoidal_positions,
)
