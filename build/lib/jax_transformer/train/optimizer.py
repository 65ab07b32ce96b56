"""The one optimizer factory (§5.3): learning-rate schedules, Adam / AdamW, gradient clipping, and per-parameter
learning-rate multipliers (layer-wise decay, frozen parameters). Every task builds its optimizer here."""

import jax
import jax.numpy as jnp
import optax

from jax_transformer.config import TrainConfig
from jax_transformer.train.sharding import path_name


def learning_rate_schedule(cfg: TrainConfig, d_model: int) -> optax.Schedule:
    """The learning rate as a function of the update count (0 for the first update).

    'noam' is §5.3, Eq. 3: lrate = scale * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), with step = count + 1.
    'inverse_sqrt' warms up linearly to `learning_rate` then decays as 1/sqrt(step) (fairseq); 'cosine' warms up
    linearly then follows a cosine to `end_learning_rate` at `steps`; 'linear' warms up linearly from 0 then decays
    linearly to 0 at `steps` (BERT fine-tuning); 'constant' warms up linearly then stays.
    """
    peak, warmup = cfg.learning_rate, cfg.warmup_steps

    def warm(step):  # linear warmup factor, 1 after warmup
        return jnp.minimum(1.0, step / max(warmup, 1)) if warmup > 0 else 1.0

    if cfg.schedule == "noam":

        def schedule(count):
            step = jnp.asarray(count, jnp.float32) + 1.0
            return peak * d_model**-0.5 * jnp.minimum(step**-0.5, step * warmup**-1.5)

    elif cfg.schedule == "inverse_sqrt":

        def schedule(count):
            step = jnp.asarray(count, jnp.float32) + 1.0
            return peak * jnp.minimum(step / max(warmup, 1), jnp.sqrt(max(warmup, 1) / step))

    elif cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, peak, max(warmup, 1), max(cfg.steps, warmup + 1), cfg.end_learning_rate
        )
    elif cfg.schedule == "linear":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, max(warmup, 1)),
             optax.linear_schedule(peak, 0.0, max(cfg.steps - warmup, 1))],
            [max(warmup, 1)],
        )  # fmt: skip
    else:

        def schedule(count):
            return peak * warm(jnp.asarray(count, jnp.float32) + 1.0)

    return schedule


def make_optimizer(cfg: TrainConfig, d_model: int, lr_scales=None) -> optax.GradientTransformation:
    """Global-norm clipping (`clip_grad_norm` > 0), then Adam(beta1, beta2, eps) of §5.3 (AdamW when
    `weight_decay` > 0, decaying matrices only), then per-parameter learning-rate multipliers.

    `lr_scales` (a tree like the parameters, e.g. from `layer_lr_scales`) multiplies each parameter's update, i.e. its
    learning rate (the decoupled weight decay included, as in ELECTRA's layer-wise decay); a multiplier of 0 freezes
    that parameter.
    """
    schedule = learning_rate_schedule(cfg, d_model)
    if cfg.weight_decay > 0:
        decay_matrices = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
        adam = optax.adamw(
            schedule, cfg.adam_b1, cfg.adam_b2, cfg.adam_eps, weight_decay=cfg.weight_decay, mask=decay_matrices
        )
    else:
        adam = optax.adam(schedule, cfg.adam_b1, cfg.adam_b2, cfg.adam_eps)
    chain = [adam]
    if cfg.clip_grad_norm > 0:
        chain.insert(0, optax.clip_by_global_norm(cfg.clip_grad_norm))
    if lr_scales is not None:
        chain.append(optax.GradientTransformation(
            lambda params: optax.EmptyState(),
            lambda updates, state, params=None: (jax.tree.map(lambda u, c: u * c, updates, lr_scales), state),
        ))  # fmt: skip
    return chain[0] if len(chain) == 1 else optax.chain(*chain)


def layer_lr_scales(params, decay: float, num_layers: int, freeze_token_embeddings: bool = False):
    """Learning-rate multipliers by depth (ELECTRA, Clark et al. 2020): the head (and anything above the encoder
    layers) 1, encoder layer i of `num_layers` (0 = lowest) decay^(num_layers - i), the embeddings (and their
    LayerNorm) decay^(num_layers + 1); with `freeze_token_embeddings` the token (word) embedding table 0. None when
    every parameter learns at the full rate."""
    if decay >= 1 and not freeze_token_embeddings:
        return None

    def scale(path, _):
        names = path_name(path).split("/")
        if freeze_token_embeddings and names[0] == "token_embedding":
            return 0.0
        if names[:2] == ["encoder", "layers"]:
            depth = int(names[2]) + 1
        elif "embedding" in names[0] or (names[0] == "encoder" and "embedding" in names[1]):
            depth = 0  # token / token-type / position embeddings, embedding LayerNorm
        else:
            depth = num_layers + 1
        return decay ** (num_layers + 1 - depth)

    return jax.tree_util.tree_map_with_path(scale, params)
