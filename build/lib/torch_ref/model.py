"""The PyTorch mirror of `jax_transformer/model.py`.

Same classes, same attribute names in the same order, same equations, so the two files can be read side by side
and weights convert by name (`jax_transformer/convert.py`). Only the leaf names differ, as each framework spells
them: Flax `kernel` (in, out) is torch `weight` (out, in); Flax LayerNorm `scale` and Embed `embedding` are `weight`.

`config` is a `ModelConfig` (the dataclass below, with the fields and defaults of
`jax_transformer.config.ModelConfig`; `load_config` reads it from an exported `config.json`), or any object with
those fields (JAX's ModelConfig, a SimpleNamespace), converted with `as_config`; this package never imports JAX.
Fresh parameters are initialised as the Flax model's (`init_like_flax`), so a fresh model trains from scratch alike.
"""

import dataclasses
import json
import math
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The architecture: the fields and defaults of `jax_transformer.config.ModelConfig` (see there for their
    meaning; parity_tests check that the two field lists agree)."""

    vocab_size: int = 37000
    target_vocab_size: int = 0  # 0: same as vocab_size
    d_model: int = 512
    num_heads: int = 8
    d_ff: int = 2048
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dropout: float = 0.1
    attention_dropout: float = 0.0
    ffn_dropout: float = 0.0
    activation: str = "relu"
    norm_position: str = "post"
    layer_norm_eps: float = 1e-5
    positional: str = "sinusoidal"
    sinusoidal_layout: str = "interleaved"
    max_len: int = 1024
    share_embeddings: bool = True
    tie_output: bool = True
    use_bias: bool = True
    scale_embeddings: bool = True
    type_vocab_size: int = 0
    embedding_norm: bool = False
    pad_id: int = 0
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        if self.d_model % self.num_heads:
            raise ValueError(f"model.d_model={self.d_model} must be divisible by model.num_heads={self.num_heads}")

    @property
    def tgt_vocab_size(self) -> int:
        return self.target_vocab_size or self.vocab_size

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))


def as_config(config) -> ModelConfig:
    """`config` as a torch_ref ModelConfig: itself, or the fields of a dict or of any object that has them (JAX's
    ModelConfig, the SimpleNamespace of older versions); missing fields take the defaults (configs exported before
    an option existed), unknown ones are ignored with a warning."""
    if isinstance(config, ModelConfig):
        return config
    data = dict(config) if isinstance(config, dict) else dict(vars(config)) if hasattr(config, "__dict__") else {}
    if dataclasses.is_dataclass(config):
        data = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        warnings.warn(f"model config fields unknown to torch_ref, ignored: {', '.join(unknown)}", stacklevel=2)
    return ModelConfig(**{k: v for k, v in data.items() if k in _FIELDS})


def load_config(path_or_dict) -> ModelConfig:
    """A model config from an exported `config.json` (its `model` section) or a plain dict."""
    data = path_or_dict
    if isinstance(path_or_dict, str):
        with open(path_or_dict, encoding="utf-8") as f:
            data = json.load(f)
    return as_config(data.get("model", data))


def init_like_flax(model: nn.Module, d_model: int) -> None:
    """The Flax model's initialisers (jax_transformer/model/transformer.py), in place: Xavier-uniform Linear weights
    and zero biases, N(0, d_model^-0.5) embeddings (tokens, token types, learned positions), LayerNorm 1 and 0."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=d_model**-0.5)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def target_vocab_size(config) -> int:
    return config.target_vocab_size or config.vocab_size


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


# ---------------------------------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------------------------------


def padding_mask(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """True where a key position holds a real token. (batch, len) -> (batch, 1, 1, len)."""
    return (ids != pad_id)[:, None, None, :]


def causal_mask(length: int, device=None) -> torch.Tensor:
    """§3.2.3: position i may attend to positions <= i only. -> (1, 1, length, length)."""
    return torch.tril(torch.ones(length, length, dtype=torch.bool, device=device))[None, None]


def segment_mask(q_segments: torch.Tensor, k_segments: torch.Tensor) -> torch.Tensor:
    """Packed rows: a query may attend to the keys of its own sentence only; segment 0 is padding (see the JAX
    function). (batch, q_len), (batch, k_len) -> (batch, 1, q_len, k_len)."""
    same = q_segments[:, :, None] == k_segments[:, None, :]  # (batch, q_len, k_len)
    return (same & (k_segments != 0)[:, None, :])[:, None]


# ---------------------------------------------------------------------------------------------------------------------
# Attention (§3.2)
# ---------------------------------------------------------------------------------------------------------------------


def scaled_dot_product_attention(query, key, value, mask=None, dropout=None):
    """§3.2.1, Eq. 1: Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V. Same contract as the JAX function."""
    d_k = query.shape[-1]
    query = query / math.sqrt(d_k)
    scores = torch.einsum("bhqd,bhkd->bhqk", query, key).float()  # (batch, heads, q_len, k_len), fp32 softmax
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(torch.float32).min)
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:  # a fully masked row would be uniform over masked keys: zero it
        weights = weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    weights = weights.to(value.dtype)
    if dropout is not None:
        weights = dropout(weights)
    output = torch.einsum("bhqk,bhkd->bhqd", weights, value)  # (batch, heads, q_len, d_k)
    return output, weights


class MultiHeadAttention(nn.Module):
    """§3.2.2: MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)."""

    def __init__(self, d_model, num_heads, *, dropout=0.0, use_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.query = nn.Linear(d_model, d_model, bias=use_bias)
        self.key = nn.Linear(d_model, d_model, bias=use_bias)
        self.value = nn.Linear(d_model, d_model, bias=use_bias)
        self.out = nn.Linear(d_model, d_model, bias=use_bias)
        self.attention_dropout = nn.Dropout(dropout)

    def split_heads(self, x):  # (batch, len, d_model) -> (batch, heads, len, head_dim)
        batch, length, _ = x.shape
        return x.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, x):  # (batch, heads, len, head_dim) -> (batch, len, d_model)
        batch, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)

    def project_key_value(self, inputs_kv):
        return self.split_heads(self.key(inputs_kv)), self.split_heads(self.value(inputs_kv))

    def forward(self, inputs_q, inputs_kv=None, mask=None, *, key_value=None):
        """Returns (output (batch, q_len, d_model), attention weights (batch, heads, q_len, k_len))."""
        query = self.split_heads(self.query(inputs_q))
        key, value = key_value if key_value is not None else self.project_key_value(inputs_kv)
        heads, weights = scaled_dot_product_attention(query, key, value, mask, self.attention_dropout)
        return self.out(self.merge_heads(heads)), weights


# ---------------------------------------------------------------------------------------------------------------------
# Feed-forward, embeddings and positions (§3.3 - §3.5)
# ---------------------------------------------------------------------------------------------------------------------

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": lambda x: F.gelu(x, approximate="none"),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


class FeedForward(nn.Module):
    """§3.3, Eq. 2: FFN(x) = max(0, x W_1 + b_1) W_2 + b_2 (ReLU; GELU as an option)."""

    def __init__(self, d_model, d_ff, *, activation="relu", dropout=0.0):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.activation = activation
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):  # (batch, len, d_model) -> (batch, len, d_model)
        return self.linear2(self.dropout(ACTIVATIONS[self.activation](self.linear1(x))))


def sinusoidal_positions(length: int, d_model: int, layout: str = "interleaved") -> np.ndarray:
    """§3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))."""
    position = np.arange(length, dtype=np.float64)[:, None]  # (length, 1)
    inv_freq = 1.0 / (10000.0 ** (np.arange(0, d_model, 2, dtype=np.float64) / d_model))
    angles = position * inv_freq  # (length, ceil(d_model/2))
    table = np.zeros((length, d_model), dtype=np.float64)
    if layout == "interleaved":
        table[:, 0::2] = np.sin(angles)
        table[:, 1::2] = np.cos(angles[:, : d_model // 2])
    else:
        half = (d_model + 1) // 2
        table[:, :half] = np.sin(angles)
        table[:, half:] = np.cos(angles[:, : d_model // 2])
    return table.astype(np.float32)


def _layer_norm(config):
    return nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)


# ---------------------------------------------------------------------------------------------------------------------
# Layers (§3.1)
# ---------------------------------------------------------------------------------------------------------------------


class ResidualLayer(nn.Module):
    """The residual connection around each sub-layer, shared by the encoder and decoder layers (which own `dropout`
    and `pre_norm`)."""

    def residual(self, x, sublayer, norm):
        """§3.1 + §5.4: post-norm LayerNorm(x + Dropout(Sublayer(x)));
        pre-norm x + Dropout(Sublayer(LayerNorm(x)))."""
        if self.pre_norm:
            return x + self.dropout(sublayer(norm(x)))
        return norm(x + self.dropout(sublayer(x)))


def _attention(config):
    return MultiHeadAttention(
        config.d_model, config.num_heads, dropout=config.attention_dropout, use_bias=config.use_bias
    )


def _feed_forward(config):
    return FeedForward(config.d_model, config.d_ff, activation=config.activation, dropout=config.ffn_dropout)


class EncoderLayer(ResidualLayer):
    """§3.1: self-attention, then a feed-forward network; each wrapped in a residual connection and LayerNorm."""

    def __init__(self, config):
        super().__init__()
        self.self_attn = _attention(config)
        self.self_attn_norm = _layer_norm(config)
        self.feed_forward = _feed_forward(config)
        self.feed_forward_norm = _layer_norm(config)
        self.dropout = nn.Dropout(config.dropout)
        self.pre_norm = config.norm_position == "pre"

    def forward(self, x, mask):  # x: (batch, src_len, d_model); mask: (batch, 1, 1, src_len)
        x = self.residual(x, lambda h: self.self_attn(h, h, mask)[0], self.self_attn_norm)
        return self.residual(x, self.feed_forward, self.feed_forward_norm)


class DecoderLayer(ResidualLayer):
    """§3.1: masked self-attention, attention over the encoder output, then a feed-forward network."""

    def __init__(self, config):
        super().__init__()
        self.self_attn = _attention(config)
        self.self_attn_norm = _layer_norm(config)
        self.feed_forward = _feed_forward(config)
        self.feed_forward_norm = _layer_norm(config)
        self.dropout = nn.Dropout(config.dropout)
        self.pre_norm = config.norm_position == "pre"
        self.cross_attn = _attention(config)
        self.cross_attn_norm = _layer_norm(config)

    def forward(self, x, memory, self_mask, cross_mask, *, cross_key_value=None, cache=None, index=0):
        """As the JAX layer: the whole prefix (`cache` None), or incremental decoding with this layer's `cache`
        {'key', 'value'}: (batch, heads, max_len, head_dim), where the keys/values of x are written at `index` (in
        place, unlike JAX). Returns (output (batch, tgt_len, d_model), the cache, None without one)."""

        def self_attention(h):
            key_value = self.self_attn.project_key_value(h)  # (batch, heads, tgt_len, head_dim) each
            if cache is not None:
                for name, new in zip(("key", "value"), key_value, strict=True):
                    cache[name][:, :, index : index + new.shape[2]] = new.to(cache[name].dtype)
                key_value = (cache["key"], cache["value"])
            return self.self_attn(h, mask=self_mask, key_value=key_value)[0]

        x = self.residual(x, self_attention, self.self_attn_norm)
        x = self.residual(
            x, lambda h: self.cross_attn(h, memory, cross_mask, key_value=cross_key_value)[0], self.cross_attn_norm
        )
        return self.residual(x, self.feed_forward, self.feed_forward_norm), cache


# ---------------------------------------------------------------------------------------------------------------------
# Stacks (§3.1) and the encoder-decoder
# ---------------------------------------------------------------------------------------------------------------------


class LayerStack(nn.Module):
    """What the encoder and decoder stacks share: positions (+ LayerNorm when `embedding_norm`) + dropout on the
    (scaled) token embeddings, N layers, and a final LayerNorm when pre-norm."""

    def __init__(self, config, layer_cls, num_layers: int):
        super().__init__()
        self.config = config = as_config(config)
        if config.positional == "learned":
            self.position_embedding = nn.Embedding(config.max_len, config.d_model)
        else:
            table = sinusoidal_positions(config.max_len, config.d_model, config.sinusoidal_layout)
            self.register_buffer("sinusoid_table", torch.from_numpy(table), persistent=False)
        self.embedding_norm = _layer_norm(config) if config.embedding_norm else None
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([layer_cls(config) for _ in range(num_layers)])
        self.final_norm = _layer_norm(config) if config.norm_position == "pre" else None

    def embed_positions(self, x, offset=0, positions=None):
        """§3.5: add positional encodings for positions offset .. offset+len-1, or for the given `positions`
        (batch, len) of packed rows, where each sentence counts from 0; (LayerNorm,) then dropout (§5.4)."""
        length = x.shape[1]
        if positions is None and (length > self.config.max_len or offset + length > self.config.max_len):
            raise ValueError(f"positions up to {offset} + {length} exceed model.max_len={self.config.max_len}")
        if self.config.positional == "learned":
            index = offset + torch.arange(length, device=x.device) if positions is None else positions
            encoding = self.position_embedding(index)
        elif positions is None:
            encoding = self.sinusoid_table[offset : offset + length]
        else:
            encoding = self.sinusoid_table[positions]  # (batch, len, d_model)
        x = x + (encoding if encoding.dim() == 3 else encoding[None]).to(x.dtype)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        return self.dropout(x)

    def finish(self, x):
        return self.final_norm(x) if self.final_norm is not None else x


class Encoder(LayerStack):
    """Positions + dropout, then N encoder layers (+ final LayerNorm when pre-norm)."""

    def __init__(self, config):
        config = as_config(config)
        super().__init__(config, EncoderLayer, config.num_encoder_layers)

    def forward(self, x, mask, positions=None):  # (batch, src_len, d_model) token embeddings -> same shape
        x = self.embed_positions(x, positions=positions)
        for layer in self.layers:
            x = layer(x, mask)
        return self.finish(x)


class Decoder(LayerStack):
    """Positions + dropout, then N decoder layers (+ final LayerNorm when pre-norm)."""

    def __init__(self, config):
        config = as_config(config)
        super().__init__(config, DecoderLayer, config.num_decoder_layers)

    def forward(self, x, memory, self_mask, cross_mask, *, caches=None, index=0, cross_key_values=None,
                positions=None):  # fmt: skip
        """As the JAX Decoder: returns ((batch, tgt_len, d_model), the caches, None without)."""
        x = self.embed_positions(x, offset=index, positions=positions)
        num_layers = len(self.layers)
        layer_caches = caches if caches is not None else [None] * num_layers
        layer_cross = cross_key_values if cross_key_values is not None else [None] * num_layers
        new_caches = []
        for layer, cache, cross in zip(self.layers, layer_caches, layer_cross, strict=True):
            x, cache = layer(x, memory, self_mask, cross_mask, cross_key_value=cross, cache=cache, index=index)
            new_caches.append(cache)
        return self.finish(x), (new_caches if caches is not None else None)


class Transformer(nn.Module):
    """The encoder-decoder of §3 (Figure 1): encode(source) once, decode(target prefix) to next-token logits."""

    def __init__(self, config):
        super().__init__()
        self.config = config = as_config(config)
        self.source_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.target_embedding = (
            None if config.share_embeddings else nn.Embedding(target_vocab_size(config), config.d_model)
        )
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.output_projection = None
        if not config.tie_output:
            self.output_projection = nn.Linear(config.d_model, target_vocab_size(config), bias=False)
        init_like_flax(self, config.d_model)
        self.to(_dtype(config.param_dtype))

    def target_token_embedding(self) -> nn.Embedding:
        return self.target_embedding if self.target_embedding is not None else self.source_embedding

    def embed(self, embedding: nn.Embedding, ids):
        """§3.4: token embeddings, multiplied by sqrt(d_model). (batch, len) -> (batch, len, d_model)."""
        x = embedding(ids)
        if self.config.scale_embeddings:
            x = x * math.sqrt(self.config.d_model)
        return x

    def encode(self, src_ids, src_segments=None, src_positions=None):
        """(batch, src_len) ids -> encoder output (batch, src_len, d_model) and its mask (batch, 1, 1, src_len);
        packed rows pass segment ids and positions, and the mask is `segment_mask` (batch, 1, src_len, src_len)."""
        if src_segments is None:
            src_mask = padding_mask(src_ids, self.config.pad_id)
        else:
            src_mask = segment_mask(src_segments, src_segments)
        return self.encoder(self.embed(self.source_embedding, src_ids), src_mask, src_positions), src_mask

    def logits(self, x):
        """Pre-softmax projection (§3.4), returned in fp32. (batch, len, d_model) -> (batch, len, vocab)."""
        if self.output_projection is not None:
            return self.output_projection(x).float()
        return (x @ self.target_token_embedding().weight.to(x.dtype).T).float()

    def decode(self, tgt_ids, memory, cross_mask, tgt_segments=None, tgt_positions=None):
        """(batch, tgt_len) target prefix ids (BOS first) -> next-token logits (batch, tgt_len, tgt_vocab).
        `cross_mask`: the source padding mask, or for packed rows `segment_mask(tgt_segments, src_segments)`."""
        tgt_len = tgt_ids.shape[1]
        if tgt_segments is None:
            self_mask = causal_mask(tgt_len, tgt_ids.device) & padding_mask(tgt_ids, self.config.pad_id)
        else:
            self_mask = causal_mask(tgt_len, tgt_ids.device) & segment_mask(tgt_segments, tgt_segments)
        embedded = self.embed(self.target_token_embedding(), tgt_ids)
        x, _ = self.decoder(embedded, memory, self_mask, cross_mask, positions=tgt_positions)
        return self.logits(x)

    # Incremental decoding with a key/value cache: the encoder runs once, cross-attention keys/values are projected
    # once per source, and each step feeds one token while its self-attention keys/values are appended to the cache.

    def init_cache(self, batch: int, max_len: int) -> list[dict]:
        """Empty self-attention caches, one {'key', 'value'} of (batch, heads, max_len, head_dim) per decoder layer."""
        shape = (batch, self.config.num_heads, max_len, self.config.d_model // self.config.num_heads)
        weight = self.source_embedding.weight
        zeros = lambda: torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        return [{"key": zeros(), "value": zeros()} for _ in self.decoder.layers]

    def cross_key_values(self, memory) -> list[tuple]:
        """Each decoder layer's cross-attention keys/values of the encoder output, computed once per source."""
        return [layer.cross_attn.project_key_value(memory) for layer in self.decoder.layers]

    def decode_step(self, token_ids, index, cache, cross_key_values, src_mask):
        """Next-token logits for the tokens at position `index`: (batch,) ids -> ((batch, tgt_vocab), cache)."""
        x = self.embed(self.target_token_embedding(), token_ids[:, None])  # (batch, 1, d_model)
        visible = (torch.arange(cache[0]["key"].shape[2], device=x.device) <= index)[None, None, None, :]
        x, cache = self.decoder(
            x, None, visible, src_mask, caches=cache, index=index, cross_key_values=cross_key_values
        )  # fmt: skip
        return self.logits(x)[:, 0], cache

    def forward(self, src_ids, tgt_ids, src_segments=None, tgt_segments=None, src_positions=None,
                tgt_positions=None):  # fmt: skip
        """Teacher-forced logits: (batch, src_len), (batch, tgt_len) -> (batch, tgt_len, tgt_vocab); packed rows
        pass segment ids and positions of both sides (see the JAX model)."""
        if src_segments is None:
            memory, src_mask = self.encode(src_ids)
            return self.decode(tgt_ids, memory, src_mask)
        memory, _ = self.encode(src_ids, src_segments, src_positions)
        cross_mask = segment_mask(tgt_segments, src_segments)  # (batch, 1, tgt_len, src_len)
        return self.decode(tgt_ids, memory, cross_mask, tgt_segments, tgt_positions)


class EncoderClassifier(nn.Module):
    """An encoder-only model (BERT-style) with a sequence classification head; see the JAX class of the same name.
    `pooling` 'mean' averages the final hidden states over real tokens, 'cls' takes the first token."""

    def __init__(self, config, num_labels: int, *, pooling="mean", classifier_dropout=0.1):
        super().__init__()
        self.config = config = as_config(config)
        self.pooling = pooling
        type_vocab_size = config.type_vocab_size
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.token_type_embedding = nn.Embedding(type_vocab_size, config.d_model) if type_vocab_size else None
        self.encoder = Encoder(config)
        self.classifier_dropout = nn.Dropout(classifier_dropout)
        self.classifier = nn.Linear(config.d_model, num_labels)
        init_like_flax(self, config.d_model)
        self.to(_dtype(config.param_dtype))

    def encode(self, ids, token_types=None):
        """(batch, len) ids -> hidden states (batch, len, d_model) and mask (batch, 1, 1, len)."""
        mask = padding_mask(ids, self.config.pad_id)
        x = self.token_embedding(ids)
        if self.config.scale_embeddings:
            x = x * math.sqrt(self.config.d_model)
        if self.token_type_embedding is not None:
            x = x + self.token_type_embedding(torch.zeros_like(ids) if token_types is None else token_types)
        return self.encoder(x, mask), mask

    def pool(self, hidden, mask):  # (batch, len, d_model), (batch, 1, 1, len) -> (batch, d_model) in fp32
        hidden = hidden.float()
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask[:, 0, 0, :, None].float()  # (batch, len, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def forward(self, ids, token_types=None):
        """(batch, len) ids -> class logits (batch, num_labels), fp32."""
        pooled = self.pool(*self.encode(ids, token_types))
        return self.classifier(self.classifier_dropout(pooled).to(self.classifier.weight.dtype)).float()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
