"""The compiled train / eval steps of any task, over a device mesh, with gradient accumulation.

A task gives a loss function `loss_fn(model, batch, key) -> (loss_sum, sums)`: the loss summed over the batch, and
a dict of sums to log that holds `denominator` (e.g. 'tokens' or 'examples'), by which the gradient is divided. The
model is split once into a static graph definition and a pytree of parameters; the steps are pure functions of
(parameters, optimizer state, batch) compiled with `jax.jit`, with the training state donated so XLA updates it in
place. Dropout keys are `fold_in(key(seed), step)`: a pure function of the step, so a resumed run draws exactly the
masks an uninterrupted one would. The steps are compiled over a device mesh with explicit in/out shardings (batch rows
over 'data', parameters and optimizer state by the rules of `sharding.py`); on one device that is plain jit. The
loop that drives these steps is `loop.py`; the optimizer comes from `optimizer.py`.
"""

import zlib

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from jax_transformer.config import MeshConfig
from jax_transformer.train import sharding


def _per_module_key(path: tuple, key, shape):
    """Each Dropout module owns an RNG stream; reseeding them all with one key would make every layer drop the same
    units in a step. Fold in a stable hash of the module's path (not Python's salted hash(): resume must redraw
    exactly the same masks)."""
    return jax.random.fold_in(key, zlib.crc32("/".join(map(str, path)).encode()) & 0x7FFFFFFF)


def reseed_dropout(model: nnx.Module, key) -> None:
    """Draw this step's dropout masks from `key`, a different stream per Dropout module."""
    nnx.reseed(model, dropout=key, policy=_per_module_key)


def symmetric_kl(logits, other):
    """R-Drop's consistency term (Liang et al. 2021, Eq. 2): (KL(p || q) + KL(q || p)) / 2 over the last axis, where p
    and q are the softmaxes of `logits` and `other`, two predictions of the same input under different dropout masks.
    The two divergences added term by term are sum_v (p_v - q_v)(log p_v - log q_v); the log-normalisers cancel
    (p and q both sum to 1), leaving the logits' difference."""
    p, q = jax.nn.softmax(logits, axis=-1), jax.nn.softmax(other, axis=-1)
    return 0.5 * jnp.sum((p - q) * (logits - other), axis=-1)


class Steps:
    """The jitted functions of one model + optimizer over a device mesh. `state` is a dict pytree:
    params (nnx.State), opt_state, step (int32), nonfinite_step (int32, -1 while every update was finite) and, with
    `ema_decay` > 0, ema (an exponential moving average of the parameters, what evaluation and checkpoints use).

    `loss_fn(model, batch, key)` (train mode, dropout already reseeded from `key`) returns (loss_sum, sums);
    `eval_fn(model, batch)` (eval mode) returns any pytree (sums of metrics, or predictions), replicated.
    `mesh` defaults to `sharding.make_mesh(mesh_config)` (all devices, data parallel). The state lives on the mesh as
    `state_sharding` says; a batch is either a numpy batch whose rows the 'data' axis divides (one process), or
    comes from `shard_batch` (any batch, any number of processes); metrics come back replicated."""

    def __init__(self, model: nnx.Module, loss_fn, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
                 seed: int, denominator: str, eval_fn=None, mesh_config: MeshConfig | None = None,
                 mesh: Mesh | None = None, ema_decay: float = 0.0):  # fmt: skip
        self.loss_fn, self.eval_fn, self.denominator = loss_fn, eval_fn, denominator
        self.tx, self.schedule, self.ema_decay = tx, schedule, ema_decay
        self.base_key = jax.random.key(seed)
        mesh_config = mesh_config or MeshConfig()
        model.train()
        self.train_graphdef, model_params, self.rng_state = nnx.split(model, nnx.Param, ...)
        model.eval()
        self.eval_graphdef, _, _ = nnx.split(model, nnx.Param, ...)

        self.mesh = sharding.make_mesh(mesh_config) if mesh is None else mesh
        abstract_state = jax.eval_shape(self._init_state, model_params)
        num_heads = model.config.num_heads
        self.state_sharding = sharding.state_shardings(abstract_state, self.mesh, mesh_config.fsdp, num_heads)
        self.params_sharding = self.state_sharding["params"]
        self.batch_sharding = sharding.batch_sharding(self.mesh)
        # jit with explicit shardings of every input and output; the state is donated.
        # Names below are shardings: of the state, the parameters, a batch, and replicated scalars.
        state, params, batch = self.state_sharding, self.params_sharding, self.batch_sharding
        scalar = sharding.replicated(self.mesh)
        acc = (params, scalar)  # the accumulator: (gradient sums, metric sums)
        jit = lambda fn, ins, outs, donate=(): jax.jit(fn, in_shardings=ins, out_shardings=outs, donate_argnums=donate)
        self._init = jit(self._init_state, (params,), state)
        self.train_step = jit(self._train_step, (state, batch), (state, scalar), donate=0)
        self.accumulate = jit(self._accumulate, (acc, params, batch, scalar, scalar), acc, donate=0)
        self.apply_accumulated = jit(self._apply_accumulated, (state, acc), (state, scalar), donate=0)
        self.zero_accumulator = jit(self._zero_accumulator, (params, batch), acc)
        self.eval_step = jit(self._eval_step, (params, batch), scalar)

    def _init_state(self, params) -> dict:
        state = {
            "params": params,
            "opt_state": self.tx.init(params),
            "step": jnp.zeros((), jnp.int32),
            "nonfinite_step": jnp.full((), -1, jnp.int32),
        }
        if self.ema_decay > 0:
            state["ema"] = jax.tree.map(jnp.copy, params)
        return state

    def init_state(self, params) -> dict:
        """The training state of freshly initialised `params` (held in full by every process), laid out on the mesh."""
        return self._init(sharding.shard_state(params, self.params_sharding))

    @staticmethod
    def eval_params(state: dict):
        """The weights to evaluate and keep: the moving average when there is one, else the trained weights."""
        return state.get("ema", state["params"])

    def shard_batch(self, batch: dict) -> dict:
        """A global numpy batch (the same on every process) on the mesh: rows padded with all-zero rows (padding, of
        weight 0) to a multiple of the 'data' axis, each process transferring only the rows its devices hold."""
        batch = sharding.pad_rows(batch, self.mesh.shape[sharding.DATA])
        return sharding.put_batch(batch, self.batch_sharding)

    def shard_local_batch(self, batch: dict, data_shards: int) -> dict:
        """This process's own rows of the global batch (`sharding.data_shard`: `data_shards` processes, or groups of
        them, each read their own examples) on the mesh, padded with all-zero rows to the rows its devices take."""
        batch = sharding.pad_rows(batch, max(1, self.mesh.shape[sharding.DATA] // data_shards))
        return sharding.put_local_batch(batch, self.batch_sharding, data_shards)

    def eval_model(self, params):
        return nnx.merge(self.eval_graphdef, params, self.rng_state)

    def _grads(self, params, batch, key):
        """Gradients of the task's summed loss of one batch, and its sums."""

        def loss_fn(params):
            rng_state = jax.tree.map(jnp.asarray, self.rng_state)  # fresh variables at this trace level
            model = nnx.merge(self.train_graphdef, params, rng_state)
            reseed_dropout(model, key)
            return self.loss_fn(model, batch, key)

        (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return grads, sums

    def _apply(self, state, grads, sums):
        """One optimizer update with the gradient averaged over `denominator`; skipped (and remembered) if anything
        is non-finite."""
        grads = jax.tree.map(lambda g: g / jnp.maximum(sums[self.denominator], 1.0), grads)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        finite = jnp.isfinite(grad_norm) & jnp.isfinite(sums["loss"])
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        step = state["step"]
        new_state = {
            "params": keep(params, state["params"]),
            "opt_state": keep(opt_state, state["opt_state"]),
            "step": step + 1,
            "nonfinite_step": jnp.where(~finite & (state["nonfinite_step"] < 0), step + 1, state["nonfinite_step"]),
        }
        if "ema" in state:  # the decay ramps up over the first updates (as tf.train.ExponentialMovingAverage's)
            count = step.astype(jnp.float32)
            decay = jnp.minimum(self.ema_decay, (1.0 + count) / (10.0 + count))
            ema = jax.tree.map(lambda e, p: e + (1.0 - decay) * (p - e), state["ema"], new_state["params"])
            new_state["ema"] = keep(ema, state["ema"])
        return new_state, {**sums, "grad_norm": grad_norm, "lr": self.schedule(step)}

    def _train_step(self, state, batch):
        key = jax.random.fold_in(self.base_key, state["step"])
        grads, sums = self._grads(state["params"], batch, key)
        return self._apply(state, grads, sums)

    def _accumulate(self, acc, params, batch, step, micro_step):
        """Gradient accumulation: add one micro-batch's gradient sums into `acc` (zeros from `zero_accumulator`)."""
        key = jax.random.fold_in(jax.random.fold_in(self.base_key, step), micro_step)
        grads, sums = self._grads(params, batch, key)
        return jax.tree.map(jnp.add, acc, (grads, sums))

    def _apply_accumulated(self, state, acc):
        grads, sums = acc
        return self._apply(state, grads, sums)

    def _zero_accumulator(self, params, batch):
        """Zeros shaped like the gradients and like the sums the loss returns for a batch like `batch`."""
        sums_shape = jax.eval_shape(lambda p: self._grads(p, batch, self.base_key)[1], params)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sums_shape)
        return jax.tree.map(jnp.zeros_like, params), zeros

    def _eval_step(self, params, batch):
        return self.eval_fn(self.eval_model(params), batch)


def sum_metrics(items: list[dict]) -> dict:
    """Add up per-step metric sums on the host (one device sync for many steps)."""
    items = jax.device_get(items)
    return {key: float(sum(item[key] for item in items)) for key in items[0]} if items else {}
