"""orbax checkpoints of a run: save every N steps and at the end, keep the last K plus the best, restore exactly.

A checkpoint is `checkpoints/STEP/` with two items: `state` (parameters, optimizer state and step, as arrays) and
`meta` (JSON: the data-pipeline position and the metrics of that step). orbax writes into a temporary folder and
renames it when complete, so an interrupted save never leaves a checkpoint that looks valid. The dropout RNG is a
pure function of (seed, step), so step + pipeline position is all a resumed run needs to continue bit for bit.
"""

import dataclasses
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from jax_transformer.config import UserError


def _metric_for_ranking(metrics: dict) -> float:
    # Higher is better: accuracy (classification) and BLEU as is, loss negated. Checkpoints saved between evaluations
    # carry no metric.
    if "accuracy" in metrics:
        return metrics["accuracy"]
    return metrics["bleu"] if "bleu" in metrics else -metrics["loss"]


def _ranking(meta: dict) -> float | None:
    """A saved checkpoint's ranking value from its meta: the metric it was ranked by when saved ("ranked"), or, for
    a checkpoint written before that was recorded, its evaluated metrics; None if it was not evaluated."""
    metrics = meta.get("ranked", meta.get("metrics"))
    return _metric_for_ranking(metrics) if metrics else None


@dataclasses.dataclass
class _KeepBest(checkpoint_managers.PreservationPolicy):
    """Keeps the checkpoint with the best ranking value (the latest on ties, as `Checkpointer.best_step`).

    orbax's BestN ranks only the metrics its manager holds in memory: those passed to `save` in this process. A
    manager re-opened on a run's directory (a resumed run) holds none for the checkpoints already there, so BestN
    would delete the best of the earlier sessions at the first save after resuming. `earlier` gives their values,
    read from each checkpoint's own meta when the directory is opened."""

    earlier: dict[int, float]

    def should_preserve(self, checkpoints, *, context) -> list[bool]:
        scored = []
        for info in checkpoints:
            value = _metric_for_ranking(info.metrics) if info.metrics is not None else self.earlier.get(info.step)
            if value is not None:
                scored.append((value, info.step))
        best = max(scored)[1] if scored else None
        return [info.step == best for info in checkpoints]


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` with the run's retention policy."""

    def __init__(self, directory: str, keep: int = 5, keep_best: bool = True, read_only: bool = False):
        self.directory = os.path.abspath(directory)
        policies = [checkpoint_managers.LatestN(n=keep)]
        best_policy = _KeepBest(earlier={}) if keep_best and not read_only else None  # read-only deletes nothing
        if best_policy is not None:
            policies.append(best_policy)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=False,  # a 2-core CPU gains nothing; and the saved state is final on return
            create=not read_only,
            read_only=read_only,
        )
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
        if best_policy is not None:  # the checkpoints already there, ranked before the first save applies the policy
            best_policy.earlier.update(self._ranked())

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The kept checkpoint with the best saved metric (`_metric_for_ranking`; the latest on ties), or None when
        none was evaluated. Read from each checkpoint's `meta`: orbax's own `best_step()` answers the latest step
        unless its `best_fn` option is set, and a manager re-opened on an existing directory has no metrics."""
        scored = [(value, step) for step, value in self._ranked().items()]
        return max(scored)[1] if scored else None

    def select(self, step: str | int = "latest", best_or_latest: bool = False) -> int:
        """The kept checkpoint that `step` names: "latest", "best" (the best evaluated one; with `best_or_latest`, the
        latest when none was evaluated) or a kept step number. Anything else is a UserError naming the kept ones."""
        run = os.path.dirname(self.directory)
        steps = self.all_steps()
        if not steps:
            raise UserError(f"{run} has no checkpoints yet; fix: train first (python train.py --config ...)")
        if step == "latest":
            return max(steps)
        if step == "best":
            best = self.best_step()
            if best is None and not best_or_latest:
                raise UserError(f"{run} has no evaluated checkpoint to call best; fix: use --step latest or a number")
            return max(steps) if best is None else best
        if str(step).isdigit() and int(step) in steps:
            return int(step)
        raise UserError(f"{run} has no checkpoint {step}; it keeps: {', '.join(map(str, steps))}, latest, best")

    def _ranked(self) -> dict[int, float]:
        """The ranking value of each kept checkpoint that has one (read from its meta); one whose meta cannot be read
        is left out (a damaged checkpoint is reported when it is restored, not while the others are ranked)."""
        ranked = {}
        for step in self.all_steps():
            try:
                value = _ranking(self.restore_meta(step))
            except UserError:
                continue
            if value is not None:
                ranked[step] = value
        return ranked

    def save(self, step: int, state, meta: dict, metrics: dict | None = None) -> None:
        """Save `state` (a pytree of arrays) and `meta` (JSON-able) as checkpoint `step`; `metrics` (the one metric
        that ranks it, e.g. {"bleu": 31.2}; None when not evaluated) is also written into its meta as "ranked", so
        the ranking survives the process."""
        if metrics is not None:
            meta = {**meta, "ranked": metrics}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=args, metrics=metrics, force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, abstract_state):
        """Restore checkpoint `step` into the structure and shardings of `abstract_state` (arrays, or
        `jax.ShapeDtypeStruct`s with shardings): a checkpoint written on one device mesh restores onto any other."""
        abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()),
            )
        except (ValueError, KeyError, TypeError) as e:
            if self._damaged(step):
                raise self._damaged_error(step, e) from None
            raise UserError(
                f"checkpoint {self.directory}/{step} does not fit this model ({str(e).splitlines()[0][:200]}); "
                "it was written by a different config: use another run directory"
            ) from None
        except Exception as e:  # orbax / tensorstore errors of unreadable files
            raise self._damaged_error(step, e) from None
        return restored["state"], restored["meta"]

    def _damaged(self, step: int) -> bool:
        """Whether checkpoint `step` fails to read even without a target structure (damaged files)."""
        try:
            self.restore_arrays(step)
        except UserError:
            return True
        return False

    def _damaged_error(self, step: int, error: Exception) -> UserError:
        others = [s for s in self.all_steps() if s != step]
        message = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        fix = (f"pass --step with another kept checkpoint ({', '.join(map(str, others))}), or delete "
               f"{self.directory}/{step} to resume training from the latest other one") if others else (
               f"delete {self.directory}/{step} and train again")  # fmt: skip
        return UserError(f"checkpoint {self.directory}/{step} is damaged or incomplete ({message}); fix: {fix}")

    def restore_arrays(self, step: int):
        """Checkpoint `step`'s state as plain nested dicts of arrays (nnx "pure dicts": layer indices as ints, no
        Variable wrappers), without a target structure (for inspection,
        averaging, inference and export), on this process's first device, whatever mesh of devices wrote it."""
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        try:
            metadata = self.manager.item_metadata(step)["state"].tree  # shapes and dtypes of what was saved
            target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
            restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        except Exception as e:  # orbax / tensorstore errors of unreadable files
            raise self._damaged_error(step, e) from None
        return _plain(restored["state"])

    def restore_meta(self, step: int) -> dict:
        try:
            return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:
            raise self._damaged_error(step, e) from None

    def close(self) -> None:
        self.manager.close()


def _plain(tree):
    """orbax restores dicts with string keys and each nnx Variable as {'value': array}; nnx pure dicts (what
    `nnx.replace_by_pure_dict` takes) index list layers by int and hold arrays."""
    if isinstance(tree, dict) and set(tree) == {"value"} and not isinstance(tree["value"], dict):
        return tree["value"]
    if isinstance(tree, dict):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): _plain(v) for k, v in tree.items()}
    return tree


def mean_params(param_trees):
    """The element-wise mean of parameter trees of one structure (fp64 accumulation, fp32 result), as nested dicts."""
    total, count = None, 0
    for params in param_trees:
        params = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
        total = params if total is None else jax.tree.map(np.add, total, params)
        count += 1
    if total is None:
        raise UserError("no checkpoints to average")
    return jax.tree.map(lambda x: (x / count).astype(np.float32), total)


def average_params(checkpointer: Checkpointer, steps: list[int]):
    """The element-wise mean of the parameters of checkpoints `steps`, as nested dicts.

    Averaging the last few checkpoints smooths the noise of the final updates (§6.1: the last 5 for base models, 20
    for big; the Multi30k literature averages the last 10)."""
    return mean_params(checkpointer.restore_arrays(step)["params"] for step in steps)
