"""Spreading one run over many devices and hosts: the mesh, the partition rules, sharded state and batches.

The same program runs on one device or many (SPMD): the train/eval steps are `jax.jit`-compiled with explicit
`NamedSharding` in/out shardings over a `Mesh` with axes ('data', 'model'), and XLA's GSPMD partitioner inserts the
collectives (all-reduce of gradients, all-gather of FSDP parameters, the tensor-parallel reductions). That is what
"pjit" means today: `pjit` was merged into `jax.jit`; `pmap` is legacy and not used here.

- data parallel (the default, mesh.data=-1): batch rows are split over 'data', parameters are replicated.
- FSDP (mesh.fsdp=True): parameters and optimizer state are split over 'data' too, each along its largest axis that
  'data' divides and the tensor-parallel rule leaves free; XLA gathers them where they are used.
- tensor parallel (mesh.model > 1), Megatron-style: the query/key/value projections and the FFN's first layer are
  split by output columns (each device computes whole heads, a slice of d_ff), the attention output projection and
  the FFN's second layer by input rows (each device's partial sums are all-reduced).

The rules live here, not in model.py: the model knows nothing of devices. Multi-host runs start every process with
the same command; `initialize_distributed` connects them, each process puts only its own rows of every batch on its
devices (`put_batch`), and orbax writes each checkpoint once, cooperatively.
"""

import json
import os
import re

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jax_transformer.config import ConfigError, MeshConfig

DATA, MODEL = "data", "model"

# Tensor-parallel layout of parameters, matched (re.search) against their path, e.g.
# 'params/encoder/layers/0/self_attn/query/kernel' - or 'opt_state/0/mu/encoder/layers/0/self_attn/query/kernel' for
# Adam's moments, which thereby follow their parameter. The first match wins; kernels are (in_features, out_features).
# Everything unlisted (embeddings, LayerNorms, the output projection, scalars) is replicated (before FSDP).
PARTITION_RULES: tuple[tuple[str, P], ...] = (
    (r"attn/(query|key|value)/kernel$", P(None, MODEL)),  # column split: each device holds num_heads / model heads
    (r"attn/(query|key|value)/bias$", P(MODEL)),
    (r"attn/out/kernel$", P(MODEL, None)),  # row split: partial sums over the local heads, all-reduced
    (r"feed_forward/linear1/kernel$", P(None, MODEL)),  # column split of d_ff
    (r"feed_forward/linear1/bias$", P(MODEL)),
    (r"feed_forward/linear2/kernel$", P(MODEL, None)),  # row split of d_ff
)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


# ---------------------------------------------------------------------------------------------------------------------
# Processes and the mesh
# ---------------------------------------------------------------------------------------------------------------------


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.strip().lstrip("-").isdigit() else None


def distributed_requested(cfg: MeshConfig) -> bool:
    """Whether this process is one of several: set in the config or the environment, or started by `srun` / `mpirun`
    with more than one task (jax.distributed.initialize then detects the rest itself; under SLURM it expects one task
    per GPU)."""
    many = lambda name: (_env_int(name) or 1) > 1
    return bool(
        cfg.coordinator_address
        or cfg.num_processes > 1
        or os.environ.get("JAX_COORDINATOR_ADDRESS")
        or many("JAX_NUM_PROCESSES")
        or many("SLURM_STEP_NUM_TASKS")  # set by srun (not in a plain sbatch script)
        or many("OMPI_COMM_WORLD_SIZE")
    )


def initialize_distributed(cfg: MeshConfig) -> None:
    """Connect this process to the others (`jax.distributed.initialize`) when the run is multi-process; a no-op for a
    single process or when already connected. Must run before anything else touches JAX's devices.

    Values come from the config, else JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, else JAX's own
    cluster detection (SLURM, Open MPI, Cloud TPU)."""
    if not distributed_requested(cfg) or jax.distributed.is_initialized():
        return
    num_processes = cfg.num_processes or _env_int("JAX_NUM_PROCESSES")
    process_id = cfg.process_id if cfg.process_id >= 0 else _env_int("JAX_PROCESS_ID")
    try:
        jax.distributed.initialize(
            coordinator_address=cfg.coordinator_address or None, num_processes=num_processes, process_id=process_id
        )
    except (ValueError, RuntimeError) as e:
        raise ConfigError(
            f"could not start multi-process JAX ({str(e).splitlines()[0]}); fix: set mesh.coordinator_address, "
            "mesh.num_processes and mesh.process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) "
            "before anything else uses JAX"
        ) from None


def is_main_process() -> bool:
    """Process 0 alone writes logs, config.json and the tokenizer; orbax coordinates checkpoint writes itself."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process gets here (a no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def allgather_json(value) -> list:
    """`value` (anything JSON-able) of every process, in process order; every process must call it. Used for what
    each process keeps apart, such as its position in its own share of the training data."""
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.array([len(data)], np.int32)).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: len(data)] = data
    rows = multihost_utils.process_allgather(padded)  # (processes, longest)
    return [json.loads(bytes(row[:size])) for row, size in zip(rows, sizes, strict=True)]


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
    """The (data, model) device mesh of `cfg` over `devices` (default: all devices of all processes).

    Devices are laid out by `jax.make_mesh`, so 'model' (the chattiest axis) varies fastest and stays within a host
    when it can. Axes are 'Auto': GSPMD propagates shardings through the model from the in/out shardings."""
    devices = list(jax.devices() if devices is None else devices)
    count = len(devices)
    _require(count % cfg.model == 0, f"mesh.model={cfg.model} does not divide the {count} devices")
    data = count // cfg.model if cfg.data == -1 else cfg.data
    _require(
        data * cfg.model == count,
        f"mesh.data={cfg.data} x mesh.model={cfg.model} must equal the number of devices ({count}); "
        "fix: set mesh.data=-1 to use all devices the model axis leaves",
    )
    return jax.make_mesh((data, cfg.model), (DATA, MODEL), axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


# ---------------------------------------------------------------------------------------------------------------------
# Partition rules
# ---------------------------------------------------------------------------------------------------------------------


def path_name(path) -> str:
    """'params/encoder/layers/0/self_attn/query/kernel' for a pytree key path (the Variable's '.value' dropped)."""
    parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
    return "/".join(parts[:-1] if parts and parts[-1] == "value" else parts)


def partition_spec(name: str, shape: tuple, mesh: Mesh, fsdp: bool) -> P:
    """The PartitionSpec of the array at path `name`: the first matching tensor-parallel rule (else replicated; mesh
    axes of size 1 are left out), then with FSDP the largest free axis that 'data' divides goes over 'data'."""
    spec = next((spec for pattern, spec in PARTITION_RULES if re.search(pattern, name)), P())
    spec = [axis if axis and mesh.shape[axis] > 1 else None for axis in spec] + [None] * (len(shape) - len(spec))
    if fsdp and mesh.shape[DATA] > 1:
        free = [i for i, axis in enumerate(spec) if axis is None and shape[i] % mesh.shape[DATA] == 0]
        if free:
            spec[max(free, key=lambda i: shape[i])] = DATA
    for i, axis in enumerate(spec):
        if axis is not None and shape[i] % mesh.shape[axis]:
            raise ConfigError(
                f"{name} {tuple(shape)}: axis {i} cannot be split {mesh.shape[axis]} ways over '{axis}'; "
                f"fix: choose mesh.{axis} dividing model.num_heads, model.d_model and model.d_ff"
            )
    return P(*spec)


def state_shardings(state, mesh: Mesh, fsdp: bool, num_heads: int):
    """NamedShardings for every array of `state` (parameters, or the whole training state with the optimizer's
    moments): a pytree of the same structure. `state` may hold arrays or `jax.ShapeDtypeStruct`s."""
    _require(
        num_heads % mesh.shape[MODEL] == 0,
        f"mesh.model={mesh.shape[MODEL]} must divide model.num_heads={num_heads} (whole heads per device)",
    )

    def one(path, leaf):
        return NamedSharding(mesh, partition_spec(path_name(path), leaf.shape, mesh, fsdp))

    return jax.tree.map_with_path(one, state)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch arrays (rows, ...) split by rows over 'data' and replicated over 'model'."""
    return NamedSharding(mesh, P(DATA))


def describe(shardings) -> dict[str, str]:
    """{parameter path: its PartitionSpec} - what the rules decided, for logs and tests."""
    leaves = jax.tree_util.tree_flatten_with_path(shardings)[0]
    return {path_name(path): str(tuple(s.spec)) for path, s in leaves}


# ---------------------------------------------------------------------------------------------------------------------
# Putting state and batches on the mesh
# ---------------------------------------------------------------------------------------------------------------------


def shard_state(state, shardings):
    """`state` (arrays that every process holds in full, e.g. a freshly initialised model) laid out as `shardings`.
    Each process transfers only the pieces its own devices hold."""

    def put(x, sharding):
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, state, shardings)


def pad_rows(batch: dict, multiple: int) -> dict:
    """Append all-padding rows (id 0) so that the row count is a multiple of the 'data' axis. Padding rows carry no
    target tokens, so they add nothing to the loss, the token count or the gradient."""
    rows = next(iter(batch.values())).shape[0]
    extra = -rows % multiple
    if not extra:
        return batch
    return {k: np.concatenate([v, np.zeros((extra, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}


def process_rows(sharding: NamedSharding, rows: int) -> tuple[int, int]:
    """The rows [start, stop) of a global batch of `rows` rows that this process's devices hold."""
    spans = {(index[0].start or 0, rows if index[0].stop is None else index[0].stop)
             for index in sharding.addressable_devices_indices_map((rows,)).values()}  # fmt: skip
    start, stop = min(s for s, _ in spans), max(e for _, e in spans)
    if sum(e - s for s, e in spans) != stop - start:
        raise ValueError(f"this process's devices hold non-contiguous batch rows {sorted(spans)}")
    return start, stop


def put_batch(batch: dict, sharding: NamedSharding) -> dict:
    """A global batch (the same numpy arrays on every process, rows divisible by the 'data' axis) as jax.Arrays split
    by rows: each process hands JAX only its own slice (`jax.make_array_from_process_local_data`)."""
    out = {}
    for key, value in batch.items():
        start, stop = process_rows(sharding, value.shape[0])
        out[key] = jax.make_array_from_process_local_data(sharding, value[start:stop], value.shape)
    return out


def data_shard(cfg: MeshConfig) -> tuple[int, int]:
    """(index, count): this process's devices hold block `index` of `count` equal blocks of rows of every global batch
    on the mesh of `cfg`, so it reads share `index` of `count` of the training examples (processes holding the same
    rows, e.g. across the 'model' axis, read the same share). One process: (0, 1)."""
    if jax.process_count() == 1:
        return 0, 1
    mesh = make_mesh(cfg)
    rows = mesh.shape[DATA]
    start, stop = process_rows(batch_sharding(mesh), rows)
    return start // (stop - start), rows // (stop - start)


def put_local_batch(batch: dict, sharding: NamedSharding, data_shards: int) -> dict:
    """This process's block of rows of a global batch of `data_shards` such blocks (`data_shard`), as jax.Arrays
    of the global batch: what a process that reads only its own share of the data hands JAX."""
    out = {}
    for key, value in batch.items():
        shape = (value.shape[0] * data_shards, *value.shape[1:])
        out[key] = jax.make_array_from_process_local_data(sharding, value, shape)
    return out
