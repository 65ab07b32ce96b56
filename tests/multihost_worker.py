"""Worker processes for tests/test_sharding.py: simulated multi-device and multi-host runs on CPU.

XLA_FLAGS (the number of simulated CPU devices) must be set before JAX is imported, so these run as scripts:

  python tests/multihost_worker.py devices OUT              # one process with 8 CPU devices
  python tests/multihost_worker.py hosts OUT PORT PID       # process PID of 2, with 4 CPU devices each

Each writes what it measured to OUT (JSON, npz, checkpoints, a run directory) for the test to check.
"""

import os
import sys

if __name__ == "__main__":  # (the test imports run_config from here: then JAX is already set up)
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 if sys.argv[1] == 'devices' else 4}"
    os.environ["JAX_PLATFORMS"] = "cpu"

import dataclasses  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jax_transformer.config import Config, DataConfig, MeshConfig, TrainConfig, UserError, model_preset  # noqa: E402
from jax_transformer.model.transformer import Transformer  # noqa: E402
from jax_transformer.tasks.translation import translation_steps  # noqa: E402
from jax_transformer.train import sharding  # noqa: E402
from jax_transformer.train.checkpoint import Checkpointer  # noqa: E402
from jax_transformer.train.steps import Steps  # noqa: E402

VOCAB, ROWS, STEPS = 32, 13, 3  # 13 rows: 8 data shards need 3 all-padding rows (sharding.pad_rows)
# Adam's epsilon: the attention key biases have an exactly zero true gradient (softmax ignores a shift shared by all
# keys), so their computed gradients are rounding noise (~1e-9), which Adam with eps=1e-9 turns into full +-lr steps
# that differ with any change of summation order - one device or many alike. eps=1e-4 keeps the comparison about
# parallelism, not about amplified noise; real gradients (>= 1e-3 here) hardly notice it.
ADAM_EPS = 1e-4
MESHES = {  # name: the mesh section
    "dp8": MeshConfig(data=8),
    "fsdp8": MeshConfig(data=8, fsdp=True),
    "tp4x2": MeshConfig(data=4, model=2),
}
BOTH = MeshConfig(data=4, model=2, fsdp=True)  # FSDP + tensor parallel: the 2-process run


def config(mesh: MeshConfig) -> Config:
    # dropout on: the masks must not depend on how the batch is split (threefry is partitionable)
    model = model_preset("test", vocab_size=VOCAB, dropout=0.1, num_encoder_layers=1, num_decoder_layers=1)
    train = TrainConfig(schedule="constant", learning_rate=1e-3, warmup_steps=0, clip_grad_norm=1.0, adam_eps=ADAM_EPS)
    return Config(model=model, train=train, mesh=mesh)


def batches(count: int = STEPS) -> list[dict]:
    """Fixed batches of rows of different lengths (padded with 0)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        lengths = rng.integers(3, 9, size=ROWS)
        batch = {k: np.zeros((ROWS, 9), np.int32) for k in ("src", "tgt_in", "tgt_out")}
        for row, n in enumerate(lengths):
            for key in batch:
                batch[key][row, :n] = rng.integers(4, VOCAB, size=n)
        out.append(batch)
    return out


def make(mesh_cfg: MeshConfig, devices) -> tuple[Steps, dict]:
    cfg = config(mesh_cfg)
    model = Transformer(cfg.model, rngs=nnx.Rngs(params=0, dropout=1))
    steps = translation_steps(cfg, model, mesh=sharding.make_mesh(mesh_cfg, devices))
    return steps, steps.init_state(nnx.state(model, nnx.Param))


def run(steps: Steps, state: dict, data: list[dict]) -> tuple[dict, list[float]]:
    losses = []
    for batch in data:
        state, metrics = steps.train_step(state, steps.shard_batch(batch))
        losses.append(float(metrics["loss"]) / float(metrics["tokens"]))
    return state, losses


def params_of(state) -> dict[str, np.ndarray]:
    """{path: full array} of the parameters (gathered to this process)."""
    from jax.experimental import multihost_utils

    leaves = jax.tree_util.tree_flatten_with_path(state["params"])[0]
    gather = lambda x: np.asarray(x) if x.is_fully_addressable else multihost_utils.process_allgather(x, tiled=True)
    return {sharding.path_name(path): gather(x) for path, x in leaves}


def max_diff(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def devices_mode(out: str) -> None:
    """Single device vs 8-way data parallel, 8-way FSDP and 4x2 data x tensor parallel; a checkpoint switching
    meshes mid-run; steps/s on 1 vs 8 devices."""
    results = {"device_count": jax.device_count()}
    data = batches()

    def trained(name, mesh_cfg, devices, save_at=None):
        steps, state = make(mesh_cfg, devices)
        losses = []
        for i, batch in enumerate(data):
            if i == save_at:
                save(f"{name}_checkpoints", i, state)
            state, metrics = steps.train_step(state, steps.shard_batch(batch))
            losses.append(float(metrics["loss"]) / float(metrics["tokens"]))
            if i == 0:
                first = params_of(state)
        return steps, state, first, losses

    def save(folder, step, state):
        checkpoints = Checkpointer(os.path.join(out, folder))
        checkpoints.save(step, state, {})
        checkpoints.close()

    # 1. the single-device reference (a 1x1 mesh), then each 8-device mesh on the same batches
    ref_steps, ref_state, ref_first, ref_losses = trained("reference", MeshConfig(data=1), jax.devices()[:1])
    ref_final = params_of(ref_state)
    np.savez(os.path.join(out, "reference.npz"), **ref_final)
    results["reference_losses"] = ref_losses
    finals, runs = {}, {"1": (ref_steps, ref_state)}
    for name, mesh_cfg in MESHES.items():
        steps, state, first, losses = trained(name, mesh_cfg, jax.devices(), save_at=1 if name == "dp8" else None)
        finals[name] = params_of(state)
        runs[name] = steps, state
        results[name] = {
            "first_step_param_diff": max_diff(first, ref_first),
            "final_param_diff": max_diff(finals[name], ref_final),
            "loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True)),
            "specs": sharding.describe(steps.state_sharding),
            "replicated": all(x.sharding.is_fully_replicated for x in jax.tree.leaves(state)),
            "shard_shapes": {sharding.path_name(p): list(x.addressable_shards[0].data.shape)
                             for p, x in jax.tree_util.tree_flatten_with_path(state)[0]},  # fmt: skip
        }
        if name == "fsdp8":  # for the test to restore onto its single device
            save("fsdp8_checkpoints", STEPS, state)
            np.savez(os.path.join(out, "fsdp8.npz"), **finals[name])

    # 2. saved on 8-way data parallel after step 1, restored onto 4x2 data x tensor parallel, trained on
    steps, state = make(MESHES["tp4x2"], jax.devices())
    state, _ = Checkpointer(os.path.join(out, "dp8_checkpoints"), read_only=True).restore(1, state)
    kernel = state["params"]["encoder"]["layers"][0]["self_attn"]["query"]["kernel"]
    results["switch"] = {
        "restored_query_kernel_spec": str(tuple(kernel.sharding.spec)),
        "restored_query_kernel_shard_shape": list(kernel.addressable_shards[0].data.shape),
    }
    switched, losses = run(steps, state, data[1:])  # (donates `state`)
    results["switch"] |= {
        "loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses[1:], strict=True)),
        "diff_to_unswitched": max_diff(params_of(switched), finals["dp8"]),
        "diff_to_reference": max_diff(params_of(switched), ref_final),
    }

    # 3. steps/s of the same global batch on 1 and on 8 devices (2 CPU cores simulate the 8: a correctness run only)
    for name in ("1", "dp8"):
        steps, state = runs[name]
        batch = steps.shard_batch(data[0])
        state, _ = steps.train_step(state, batch)
        jax.block_until_ready(state)
        started = time.perf_counter()
        for _ in range(10):
            state, _ = steps.train_step(state, batch)
        jax.block_until_ready(state)
        results[f"steps_per_s_{name}"] = 10 / (time.perf_counter() - started)
    with open(os.path.join(out, "devices.json"), "w") as f:
        json.dump(results, f)


def run_config(out: str, corpus: str, mesh: MeshConfig, steps: int = 4, eval_every: int = 4) -> Config:
    """A short whole training run (the test repeats it on one device)."""
    data = DataConfig(path=corpus, cache_dir=os.path.join(out, "cache"), vocab_size=120, max_len=64, max_tokens=512,
                      length_bucket_step=64, min_bucket_batches=100)  # fmt: skip: one batch shape, few compilations
    train_cfg = TrainConfig(steps=steps, schedule="constant", learning_rate=1e-3, warmup_steps=0, adam_eps=ADAM_EPS,
                            log_every=2, eval_every=eval_every, bleu_max_sentences=8, save_every=2)  # fmt: skip
    model = model_preset("test", num_encoder_layers=1, num_decoder_layers=1, max_len=256, dropout=0.1)
    return Config(name="run", run_dir=os.path.join(out, "run"), model=model, data=data, train=train_cfg, mesh=mesh)


def hosts_mode(out: str, port: str, pid: int, corpus: str) -> None:
    """One of two processes with 4 devices each: a whole training run over both (data, tokenizer, logs and
    checkpoints shared through `out`), 4x2 FSDP + tensor parallel with 'data' across the processes."""
    from jax_transformer.tasks.translation import train

    mesh_cfg = dataclasses.replace(BOTH, coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    result = train(run_config(out, corpus, mesh_cfg))  # calls jax.distributed.initialize
    mesh = sharding.make_mesh(mesh_cfg)
    result |= {"process_count": jax.process_count(), "device_count": jax.device_count(),
               "local_device_count": jax.local_device_count(),
               "rows": sharding.process_rows(sharding.batch_sharding(mesh), 16)}  # fmt: skip
    with open(os.path.join(out, f"hosts{pid}.json"), "w") as f:
        json.dump(result, f)
    streaming_mode(out, mesh_cfg, pid)


def streaming_mode(out: str, mesh_cfg: MeshConfig, pid: int) -> None:
    """Packed rows streamed by both processes (each reads its own share): a run straight to step 6, and the same run
    stopped by a SIGTERM to process 0 alone and run again; and the pairs each process reads."""
    from jax_transformer.data import pipeline as data_lib
    from jax_transformer.tasks.translation import TranslationData, train

    def packed(name):
        config = run_config(out, os.path.join(out, "corpus"), mesh_cfg, steps=6, eval_every=0)
        data = dataclasses.replace(config.data, pack_length=64)
        return dataclasses.replace(config, data=data, run_dir=os.path.join(out, name))

    train(packed("stream_straight"))
    # SIGTERM to process 0 alone, while it reads update 3's batch: both processes stop at the next log step (4)
    original, reads = Steps.shard_local_batch, [0]

    def read(self, batch, *args):
        reads[0] += 1
        if pid == 0 and reads[0] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch, *args)

    Steps.shard_local_batch = read
    try:
        train(packed("stream_stopped"))
        stopped = "not stopped"
    except UserError as e:
        stopped = str(e)
    Steps.shard_local_batch = original
    train(packed("stream_stopped"))
    data = TranslationData(packed("stream_straight"))
    stream = data.batches
    batches = [batch for _, batch in zip(range(30), stream, strict=False)]  # > 1 epoch of this process's share
    span = lambda b, side, r, k: tuple(b[side][r][b[f"{side[:3]}_segments"][r] == k].tolist())  # noqa: E731
    pairs = {(span(b, "src", r, k), span(b, "tgt_out", r, k))
             for b in batches for r in range(len(b["src"])) for k in range(1, b["src_segments"][r].max() + 1)}
    # what this process should read: the pairs at indices pid, pid + 2, ... of the split that fit data.max_len
    cfg = packed("stream_straight").data
    text = data_lib.load_split(cfg, cfg.train_split)
    encoded = data_lib.encode_examples(text[pid::2], data.tokenizer, cfg.max_len)
    expected = {(tuple(s.tolist()), tuple(t.tolist())) for s, t in encoded.examples}
    result = {"data_shard": list(sharding.data_shard(mesh_cfg)), "rows": int(batches[0]["src"].shape[0]),
              "share": stream.share, "pairs": sorted(pairs), "expected": sorted(expected),
              "stopped": stopped}  # fmt: skip
    with open(os.path.join(out, f"stream{pid}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    started = time.time()
    if sys.argv[1] == "devices":
        devices_mode(sys.argv[2])
    else:
        hosts_mode(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    print(f"worker {sys.argv[1]} done in {time.time() - started:.1f}s", flush=True)
