"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017) in Flax NNX.

Read top to bottom: attention (§3.2), feed-forward (§3.3), embeddings and positions (§3.4, §3.5), layers and stacks
(§3.1), the encoder-decoder. `torch_ref/model.py` mirrors this file class for class and attribute for attribute.

Conventions: shapes are (batch, length, features); masks are boolean "may attend" arrays that broadcast to
(batch, heads, q_len, k_len); token id `config.pad_id` is padding. This file knows nothing about data, training,
decoding or checkpoints; what runs in which dtype under bf16 compute is decided, from the dtype alone, in
precision.py.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_transformer.config import ModelConfig
from jax_transformer.model.dropout import Dropout  # nnx.Dropout with a mask that is cheap on CPU (see dropout.py)
from jax_transformer.model.precision import (  # mixed precision under bf16 compute (see precision.py)
    Linear,
    attention_compute_dtype,
    bf16_matmul,
)

# Initialisers (the paper does not specify them; these are the common choice of tensor2tensor/fairseq):
# Xavier-uniform projections, N(0, d_model^-0.5) embeddings so that embedding * sqrt(d_model) has unit scale.
LINEAR_INIT = nnx.initializers.xavier_uniform()


def embedding_init(d_model: int):
    return nnx.initializers.normal(stddev=d_model**-0.5)


# ---------------------------------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------------------------------


def padding_mask(ids: jax.Array, pad_id: int) -> jax.Array:
    """True where a key position holds a real token. (batch, len) -> (batch, 1, 1, len)."""
    return (ids != pad_id)[:, None, None, :]


def causal_mask(length: int) -> jax.Array:
    """§3.2.3: position i may attend to positions <= i only. -> (1, 1, length, length)."""
    return jnp.tril(jnp.ones((length, length), dtype=bool))[None, None, :, :]


def segment_mask(q_segments: jax.Array, k_segments: jax.Array) -> jax.Array:
    """Packed rows (several sentences per row, as in T5 and the Flax WMT example): a query may attend to the keys of
    its own sentence only. Segment ids number the sentences of a row 1, 2, ..; 0 is padding, which nothing attends
    to. (batch, q_len), (batch, k_len) -> (batch, 1, q_len, k_len)."""
    same = q_segments[:, :, None] == k_segments[:, None, :]  # (batch, q_len, k_len)
    return (same & (k_segments != 0)[:, None, :])[:, None]


# ---------------------------------------------------------------------------------------------------------------------
# Attention (§3.2)
# ---------------------------------------------------------------------------------------------------------------------


def scaled_dot_product_attention(query, key, value, mask=None, dropout=None):
    """§3.2.1, Eq. 1: Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V.

    query: (batch, heads, q_len, d_k); key, value: (batch, heads, k_len, d_k); mask: bool, broadcastable to
    (batch, heads, q_len, k_len), True = may attend. `dropout` (a callable) is applied to the attention weights.
    Returns (output (batch, heads, q_len, d_k), weights (batch, heads, q_len, k_len)). A query row with no
    visible key gets all-zero weights and a zero output instead of NaN.
    """
    dtype = value.dtype
    compute = attention_compute_dtype(dtype)  # fp32 under bf16 compute, on every backend (see precision.py)
    query, key, value = (x.astype(compute) for x in (query, key, value))
    d_k = query.shape[-1]
    query = query / jnp.asarray(math.sqrt(d_k), query.dtype)
    scores = jnp.einsum("bhqd,bhkd->bhqk", query, key)  # (batch, heads, q_len, k_len)
    scores = scores.astype(jnp.float32)  # softmax in fp32 also under bf16 compute
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1)
    if mask is not None:  # a fully masked row would be uniform over masked keys: zero it
        weights = jnp.where(jnp.any(mask, axis=-1, keepdims=True), weights, 0.0)
    weights = weights.astype(value.dtype)
    if dropout is not None:
        weights = dropout(weights)
    output = jnp.einsum("bhqk,bhkd->bhqd", weights, value)  # (batch, heads, q_len, d_k)
    return output.astype(dtype), weights


class MultiHeadAttention(nnx.Module):
    """§3.2.2: MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V).

    The h per-head projections are stored as one (d_model, d_model) matrix each for queries, keys and values.
    Self-attention passes the same sequence as `inputs_q` and `inputs_kv`; cross-attention passes the encoder output
    as `inputs_kv`. Incremental decoding passes precomputed heads instead (`key_value`, see `project_key_value`).

    With `sow_weights` set (off by default, so training and decoding state never carries them), each call sows its
    attention weights (batch, heads, q_len, k_len) as `nnx.Intermediate` 'attention_weights', to be read with
    `nnx.capture(model, nnx.Intermediate)` (see `viz.attention_maps`).
    """

    def __init__(self, d_model, num_heads, *, dropout=0.0, use_bias=True, dtype=None, param_dtype=jnp.float32, rngs):
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        linear = functools.partial(
            Linear, d_model, d_model, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
            kernel_init=LINEAR_INIT, rngs=rngs,
        )  # fmt: skip
        self.query = linear()
        self.key = linear()
        self.value = linear()
        self.out = linear()
        self.attention_dropout = Dropout(dropout, rngs=rngs)
        self.sow_weights = False

    def split_heads(self, x):  # (batch, len, d_model) -> (batch, heads, len, head_dim)
        batch, length, _ = x.shape
        return x.reshape(batch, length, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    def merge_heads(self, x):  # (batch, heads, len, head_dim) -> (batch, len, d_model)
        batch, _, length, _ = x.shape
        return x.transpose(0, 2, 1, 3).reshape(batch, length, self.num_heads * self.head_dim)

    def project_key_value(self, inputs_kv):
        """Keys and values of a sequence, split into heads: computed once per source for cross-attention caching."""
        return self.split_heads(self.key(inputs_kv)), self.split_heads(self.value(inputs_kv))

    def __call__(self, inputs_q, inputs_kv=None, mask=None, *, key_value=None):
        """Returns (output (batch, q_len, d_model), attention weights (batch, heads, q_len, k_len))."""
        query = self.split_heads(self.query(inputs_q))
        key, value = key_value if key_value is not None else self.project_key_value(inputs_kv)
        heads, weights = scaled_dot_product_attention(query, key, value, mask, self.attention_dropout)
        if self.sow_weights:
            self.sow(nnx.Intermediate, "attention_weights", weights)
        return self.out(self.merge_heads(heads)), weights


# ---------------------------------------------------------------------------------------------------------------------
# Feed-forward, embeddings and positions (§3.3 - §3.5)
# ---------------------------------------------------------------------------------------------------------------------

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # BERT's exact erf GELU
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
}


class FeedForward(nnx.Module):
    """§3.3, Eq. 2: FFN(x) = max(0, x W_1 + b_1) W_2 + b_2 (ReLU; GELU as an option)."""

    def __init__(self, d_model, d_ff, *, activation="relu", dropout=0.0, dtype=None, param_dtype=jnp.float32, rngs):
        kwargs = dict(dtype=dtype, param_dtype=param_dtype, kernel_init=LINEAR_INIT, rngs=rngs)
        self.linear1 = Linear(d_model, d_ff, **kwargs)
        self.linear2 = Linear(d_ff, d_model, **kwargs)
        self.activation = activation
        self.dropout = Dropout(dropout, rngs=rngs)

    def __call__(self, x):  # (batch, len, d_model) -> (batch, len, d_model)
        return self.linear2(self.dropout(ACTIVATIONS[self.activation](self.linear1(x))))


@functools.lru_cache(maxsize=16)
def sinusoidal_positions(length: int, d_model: int, layout: str = "interleaved") -> np.ndarray:
    """§3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).

    'interleaved' puts sin and cos of frequency i at features 2i and 2i+1 (the paper's formula); 'concatenated' puts
    all sines first and all cosines second (tensor2tensor and Hugging Face Marian). Returns (length, d_model) fp32.
    """
    position = np.arange(length, dtype=np.float64)[:, None]  # (length, 1)
    inv_freq = 1.0 / (10000.0 ** (np.arange(0, d_model, 2, dtype=np.float64) / d_model))  # (ceil(d_model/2),)
    angles = position * inv_freq  # (length, ceil(d_model/2))
    table = np.zeros((length, d_model), dtype=np.float64)
    if layout == "interleaved":
        table[:, 0::2] = np.sin(angles)
        table[:, 1::2] = np.cos(angles[:, : d_model // 2])
    else:
        half = (d_model + 1) // 2
        table[:, :half] = np.sin(angles)
        table[:, half:] = np.cos(angles[:, : d_model // 2])
    table = table.astype(np.float32)
    table.setflags(write=False)  # cached and shared: nobody may edit it
    return table


def _layer_norm(config: ModelConfig, rngs):
    return nnx.LayerNorm(
        config.d_model, epsilon=config.layer_norm_eps, dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs
    )


# ---------------------------------------------------------------------------------------------------------------------
# Layers (§3.1)
# ---------------------------------------------------------------------------------------------------------------------


class ResidualLayer(nnx.Module):
    """What the encoder and decoder layers share: self-attention and the feed-forward network, each with its
    LayerNorm, and the residual connection (with dropout) around every sub-layer."""

    def __init__(self, config: ModelConfig, *, rngs):
        self.self_attn = _attention(config, rngs)
        self.self_attn_norm = _layer_norm(config, rngs)
        self.feed_forward = _feed_forward(config, rngs)
        self.feed_forward_norm = _layer_norm(config, rngs)
        self.dropout = Dropout(config.dropout, rngs=rngs)
        self.pre_norm = config.norm_position == "pre"

    def residual(self, x, sublayer, norm):
        """§3.1 + §5.4: post-norm LayerNorm(x + Dropout(Sublayer(x)));
        pre-norm x + Dropout(Sublayer(LayerNorm(x)))."""
        if self.pre_norm:
            return x + self.dropout(sublayer(norm(x)))
        return norm(x + self.dropout(sublayer(x)))


def _attention(config: ModelConfig, rngs):
    return MultiHeadAttention(
        config.d_model, config.num_heads, dropout=config.attention_dropout, use_bias=config.use_bias,
        dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs,
    )  # fmt: skip


def _feed_forward(config: ModelConfig, rngs):
    return FeedForward(
        config.d_model, config.d_ff, activation=config.activation, dropout=config.ffn_dropout, dtype=config.dtype,
        param_dtype=config.param_dtype, rngs=rngs,
    )  # fmt: skip


class EncoderLayer(ResidualLayer):
    """§3.1: self-attention, then a feed-forward network; each wrapped in a residual connection and LayerNorm."""

    def __call__(self, x, mask):  # x: (batch, src_len, d_model); mask: (batch, 1, 1, src_len)
        x = self.residual(x, lambda h: self.self_attn(h, h, mask)[0], self.self_attn_norm)
        return self.residual(x, self.feed_forward, self.feed_forward_norm)


class DecoderLayer(ResidualLayer):
    """§3.1: masked self-attention, attention over the encoder output, then a feed-forward network."""

    def __init__(self, config: ModelConfig, *, rngs):
        super().__init__(config, rngs=rngs)  # the same construction order as before: the same initial weights
        self.cross_attn = _attention(config, rngs)
        self.cross_attn_norm = _layer_norm(config, rngs)

    def __call__(self, x, memory, self_mask, cross_mask, *, cross_key_value=None, cache=None, index=0):
        """x: (batch, tgt_len, d_model); memory: (batch, src_len, d_model), or None with `cross_key_value`, its
        precomputed cross-attention heads; self_mask: (batch|1, 1, tgt_len, k_len); cross_mask: (batch, 1, 1, src_len).

        The whole target prefix at once (`cache` None; k_len = tgt_len), or incremental decoding: `cache` holds this
        layer's self-attention keys/values {'key', 'value'}: (batch, heads, max_len, head_dim), filled below `index`;
        the keys/values of x (positions index ..) are written there and self-attention runs over the whole cache
        (k_len = max_len, `self_mask` hides what is not filled yet). Returns (output (batch, tgt_len, d_model), the
        updated cache, None without one)."""
        new_cache = None

        def self_attention(h):
            nonlocal new_cache
            if cache is None:  # the whole prefix: keys and values are projected inside the attention
                return self.self_attn(h, h, self_mask)[0]
            key_value = self.self_attn.project_key_value(h)  # (batch, heads, tgt_len, head_dim) each
            new_cache = {
                name: jax.lax.dynamic_update_slice_in_dim(cache[name], new.astype(cache[name].dtype), index, axis=2)
                for name, new in zip(("key", "value"), key_value, strict=True)
            }
            key_value = (new_cache["key"], new_cache["value"])
            return self.self_attn(h, mask=self_mask, key_value=key_value)[0]

        x = self.residual(x, self_attention, self.self_attn_norm)
        x = self.residual(
            x, lambda h: self.cross_attn(h, memory, cross_mask, key_value=cross_key_value)[0], self.cross_attn_norm
        )
        return self.residual(x, self.feed_forward, self.feed_forward_norm), new_cache


# ---------------------------------------------------------------------------------------------------------------------
# Stacks (§3.1) and the encoder-decoder
# ---------------------------------------------------------------------------------------------------------------------


class LayerStack(nnx.Module):
    """What the encoder and decoder stacks share: positions (+ LayerNorm when `embedding_norm`, as BERT) + dropout on
    the (scaled) token embeddings, N layers, and a final LayerNorm when pre-norm (pre-norm layers leave their output
    unnormalised)."""

    def __init__(self, config: ModelConfig, layer_cls, num_layers: int, *, rngs):
        self.config = config
        if config.positional == "learned":
            self.position_embedding = nnx.Embed(
                config.max_len, config.d_model, dtype=config.dtype, param_dtype=config.param_dtype,
                embedding_init=embedding_init(config.d_model), rngs=rngs,
            )  # fmt: skip
        self.embedding_norm = _layer_norm(config, rngs) if config.embedding_norm else None
        self.dropout = Dropout(config.dropout, rngs=rngs)
        self.layers = nnx.List([layer_cls(config, rngs=rngs) for _ in range(num_layers)])
        self.final_norm = _layer_norm(config, rngs) if config.norm_position == "pre" else None

    def embed_positions(self, x, offset=0, positions=None):
        """§3.5: add positional encodings for positions offset .. offset+len-1, or for the given `positions`
        (batch, len) of packed rows, where each sentence counts from 0; (LayerNorm,) then dropout (§5.4)."""
        length = x.shape[1]
        if positions is None and (
            length > self.config.max_len or (isinstance(offset, int) and offset + length > self.config.max_len)
        ):
            raise ValueError(f"positions up to {offset} + {length} exceed model.max_len={self.config.max_len}")
        if self.config.positional == "learned":
            encoding = self.position_embedding(offset + jnp.arange(length) if positions is None else positions)
        else:
            table = jnp.asarray(
                sinusoidal_positions(self.config.max_len, self.config.d_model, self.config.sinusoidal_layout)
            )
            if positions is None:
                encoding = jax.lax.dynamic_slice_in_dim(table, offset, length, axis=0)
            else:
                encoding = table[positions]  # (batch, len, d_model)
        x = x + (encoding if encoding.ndim == 3 else encoding[None]).astype(x.dtype)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        return self.dropout(x)

    def finish(self, x):
        return self.final_norm(x) if self.final_norm is not None else x


class Encoder(LayerStack):
    """Positions + dropout, then N encoder layers (+ final LayerNorm when pre-norm)."""

    def __init__(self, config: ModelConfig, *, rngs):
        super().__init__(config, EncoderLayer, config.num_encoder_layers, rngs=rngs)

    def __call__(self, x, mask, positions=None):  # (batch, src_len, d_model) token embeddings -> same shape
        x = self.embed_positions(x, positions=positions)
        for layer in self.layers:
            x = layer(x, mask)
        return self.finish(x)


class Decoder(LayerStack):
    """Positions + dropout, then N decoder layers (+ final LayerNorm when pre-norm)."""

    def __init__(self, config: ModelConfig, *, rngs):
        super().__init__(config, DecoderLayer, config.num_decoder_layers, rngs=rngs)

    def __call__(self, x, memory, self_mask, cross_mask, *, caches=None, index=0, cross_key_values=None,
                 positions=None):  # fmt: skip
        """x: (batch, tgt_len, d_model) token embeddings of positions index .. (or `positions`, packed rows); see
        `DecoderLayer.__call__` for the rest (`caches`, `cross_key_values`: one per layer). Returns ((batch, tgt_len,
        d_model), the updated caches, None without)."""
        x = self.embed_positions(x, offset=index, positions=positions)
        num_layers = len(self.layers)
        layer_caches = caches if caches is not None else [None] * num_layers
        layer_cross = cross_key_values if cross_key_values is not None else [None] * num_layers
        new_caches = []
        for layer, cache, cross in zip(self.layers, layer_caches, layer_cross, strict=True):
            x, cache = layer(x, memory, self_mask, cross_mask, cross_key_value=cross, cache=cache, index=index)
            new_caches.append(cache)
        return self.finish(x), (new_caches if caches is not None else None)


class Transformer(nnx.Module):
    """The encoder-decoder of §3 (Figure 1): encode(source) once, decode(target prefix) to next-token logits."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        embed = functools.partial(
            nnx.Embed, features=config.d_model, dtype=config.dtype, param_dtype=config.param_dtype,
            embedding_init=embedding_init(config.d_model), rngs=rngs,
        )  # fmt: skip
        self.source_embedding = embed(config.vocab_size)
        # §3.4: "we share the same weight matrix between the two embedding layers and the pre-softmax linear
        # transformation"
        self.target_embedding = None if config.share_embeddings else embed(config.tgt_vocab_size)
        self.encoder = Encoder(config, rngs=rngs)
        self.decoder = Decoder(config, rngs=rngs)
        self.output_projection = None if config.tie_output else Linear(
            config.d_model, config.tgt_vocab_size, use_bias=False, dtype=config.dtype,
            param_dtype=config.param_dtype, kernel_init=LINEAR_INIT, rngs=rngs,
        )  # fmt: skip

    def target_token_embedding(self) -> nnx.Embed:
        return self.target_embedding if self.target_embedding is not None else self.source_embedding

    def embed(self, embedding: nnx.Embed, ids):
        """§3.4: token embeddings, multiplied by sqrt(d_model). (batch, len) -> (batch, len, d_model)."""
        x = embedding(ids)
        if self.config.scale_embeddings:
            x = x * jnp.asarray(math.sqrt(self.config.d_model), x.dtype)
        return x

    def encode(self, src_ids, src_segments=None, src_positions=None):
        """(batch, src_len) ids -> encoder output (batch, src_len, d_model) and its mask (batch, 1, 1, src_len).
        Packed rows pass segment ids and positions (batch, src_len); the mask is then `segment_mask` (batch, 1,
        src_len, src_len)."""
        if src_segments is None:
            src_mask = padding_mask(src_ids, self.config.pad_id)
        else:
            src_mask = segment_mask(src_segments, src_segments)
        return self.encoder(self.embed(self.source_embedding, src_ids), src_mask, src_positions), src_mask

    def logits(self, x):
        """Pre-softmax projection (§3.4), in fp32 for a stable loss. (batch, len, d_model) -> (batch, len, vocab)."""
        if self.output_projection is not None:
            return self.output_projection(x).astype(jnp.float32)
        embedding = self.target_token_embedding()
        if x.dtype == jnp.bfloat16:  # x @ E^T as `attend` does, with bf16 operands and an fp32 result (precision.py)
            return bf16_matmul(x, embedding.embedding[...].astype(jnp.bfloat16).T)
        return embedding.attend(x).astype(jnp.float32)

    def decode(self, tgt_ids, memory, cross_mask, tgt_segments=None, tgt_positions=None):
        """(batch, tgt_len) target prefix ids (BOS first) -> next-token logits (batch, tgt_len, tgt_vocab).
        `cross_mask`: the source padding mask (batch, 1, 1, src_len), or for packed rows `segment_mask(tgt_segments,
        src_segments)` (batch, 1, tgt_len, src_len)."""
        tgt_len = tgt_ids.shape[1]
        if tgt_segments is None:
            self_mask = causal_mask(tgt_len) & padding_mask(tgt_ids, self.config.pad_id)  # (batch, 1, tgt, tgt)
        else:
            self_mask = causal_mask(tgt_len) & segment_mask(tgt_segments, tgt_segments)
        embedded = self.embed(self.target_token_embedding(), tgt_ids)
        x, _ = self.decoder(embedded, memory, self_mask, cross_mask, positions=tgt_positions)
        return self.logits(x)

    # Incremental decoding with a key/value cache: the encoder runs once, cross-attention keys/values are projected
    # once per source, and each step feeds one token while its self-attention keys/values are appended to the cache.

    def init_cache(self, batch: int, max_len: int) -> list[dict]:
        """Empty self-attention caches, one {'key', 'value'} of (batch, heads, max_len, head_dim) per decoder layer."""
        shape = (batch, self.config.num_heads, max_len, self.config.head_dim)
        zeros = lambda: jnp.zeros(shape, self.config.dtype)
        return [{"key": zeros(), "value": zeros()} for _ in self.decoder.layers]

    def cross_key_values(self, memory) -> list[tuple]:
        """Each decoder layer's cross-attention keys/values of the encoder output, computed once per source."""
        return [layer.cross_attn.project_key_value(memory) for layer in self.decoder.layers]

    def decode_step(self, token_ids, index, cache, cross_key_values, src_mask):
        """Next-token logits for the tokens at position `index`: (batch,) ids -> ((batch, tgt_vocab), new cache)."""
        x = self.embed(self.target_token_embedding(), token_ids[:, None])  # (batch, 1, d_model)
        visible = (jnp.arange(cache[0]["key"].shape[2]) <= index)[None, None, None, :]  # (1, 1, 1, max_len)
        x, cache = self.decoder(
            x, None, visible, src_mask, caches=cache, index=index, cross_key_values=cross_key_values
        )  # fmt: skip
        return self.logits(x)[:, 0], cache

    def __call__(self, src_ids, tgt_ids, src_segments=None, tgt_segments=None, src_positions=None,
                 tgt_positions=None):  # fmt: skip
        """Teacher-forced logits: (batch, src_len), (batch, tgt_len) -> (batch, tgt_len, tgt_vocab).

        Packed rows (`data.pack_length`) hold several sentence pairs: segment ids (1, 2, .. per pair, 0 for padding)
        and positions (counting from 0 in each sentence) of the source and target, each (batch, len), keep every
        pair's attention within its own sentences, so each pair gets the logits it would get alone."""
        if src_segments is None:
            memory, src_mask = self.encode(src_ids)
            return self.decode(tgt_ids, memory, src_mask)
        memory, _ = self.encode(src_ids, src_segments, src_positions)
        cross_mask = segment_mask(tgt_segments, src_segments)  # (batch, 1, tgt_len, src_len)
        return self.decode(tgt_ids, memory, cross_mask, tgt_segments, tgt_positions)


class EncoderClassifier(nnx.Module):
    """An encoder-only model (BERT-style: the §3.1 encoder stack alone) with a sequence classification head.

    Token embeddings (+ token-type embeddings when `type_vocab_size` > 0) go through the `Encoder` (learned or
    sinusoidal positions, optional embedding LayerNorm); the head pools the final hidden states, `pooling` 'mean'
    (the average over real tokens, what sentence-transformers models such as all-MiniLM-L6-v2 were trained for) or
    'cls' (the first token), then dropout and one linear layer to `num_labels` logits.
    """

    def __init__(self, config: ModelConfig, num_labels: int, *, pooling="mean", classifier_dropout=0.1, rngs):
        self.config = config
        self.pooling = pooling
        embed = functools.partial(
            nnx.Embed, features=config.d_model, dtype=config.dtype, param_dtype=config.param_dtype,
            embedding_init=embedding_init(config.d_model), rngs=rngs,
        )  # fmt: skip
        self.token_embedding = embed(config.vocab_size)
        self.token_type_embedding = embed(config.type_vocab_size) if config.type_vocab_size else None
        self.encoder = Encoder(config, rngs=rngs)
        self.classifier_dropout = Dropout(classifier_dropout, rngs=rngs)
        self.classifier = nnx.Linear(  # in fp32 (the pooled features are fp32) also under bf16 compute
            config.d_model, num_labels, param_dtype=config.param_dtype, kernel_init=LINEAR_INIT, rngs=rngs
        )

    def encode(self, ids, token_types=None):
        """(batch, len) ids (and token types, default 0) -> hidden states (batch, len, d_model), mask (batch, 1, 1,
        len)."""
        mask = padding_mask(ids, self.config.pad_id)
        x = self.token_embedding(ids)
        if self.config.scale_embeddings:
            x = x * jnp.asarray(math.sqrt(self.config.d_model), x.dtype)
        if self.token_type_embedding is not None:
            x = x + self.token_type_embedding(jnp.zeros_like(ids) if token_types is None else token_types)
        return self.encoder(x, mask), mask

    def pool(self, hidden, mask):  # (batch, len, d_model), (batch, 1, 1, len) -> (batch, d_model) in fp32
        hidden = hidden.astype(jnp.float32)
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask[:, 0, 0, :, None].astype(jnp.float32)  # (batch, len, 1)
        return jnp.sum(hidden * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)

    def __call__(self, ids, token_types=None):
        """(batch, len) ids -> class logits (batch, num_labels), fp32."""
        pooled = self.pool(*self.encode(ids, token_types))
        return self.classifier(self.classifier_dropout(pooled)).astype(jnp.float32)


def count_parameters(model: nnx.Module) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
