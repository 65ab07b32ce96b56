"""Parallel training: the mesh, the partition rules, and simulated multi-device and multi-host runs on CPU.

The multi-device checks run in worker processes (tests/multihost_worker.py), since the number of CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N) must be set before JAX is imported: one process with 8 devices,
and two processes with 4 devices each joined by jax.distributed.initialize (CPU collectives go through Gloo). The
three start together and these tests check what they wrote.
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AbstractMesh

from jax_transformer.config import (
    Config,
    ConfigError,
    MeshConfig,
    TrainConfig,
    UserError,
    apply_overrides,
    load_config_file,
    model_preset,
)
from jax_transformer.model.transformer import Transformer
from jax_transformer.tasks.translation import train, translation_steps
from jax_transformer.train import sharding
from jax_transformer.train.checkpoint import Checkpointer
from jax_transformer.train.loop import data_position, restore_data_position
from jax_transformer.train.run_log import read_metrics
from tests.multihost_worker import run_config
from tests.test_train import _write_slice

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")
TOL = 1e-5  # fp32: a different reduction order across devices, nothing more

# ---------------------------------------------------------------------------------------------------------------------
# Config, mesh and rules (in this process, one device)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        (dict(data=0), "mesh.data must be positive or -1"),
        (dict(model=0), "mesh.model must be positive"),
        (dict(num_processes=2, process_id=2), "mesh.process_id=2 must be below mesh.num_processes=2"),
        (dict(coordinator_address="10.0.0.1"), "host:port"),
    ],
)
def test_mesh_config_is_validated(kwargs, expected):
    with pytest.raises(ConfigError, match=expected):
        MeshConfig(**kwargs)


def test_mesh_section_in_overrides_and_old_configs():
    config = apply_overrides(Config(), ["mesh.model=2", "mesh.fsdp=true"])
    assert (config.mesh.data, config.mesh.model, config.mesh.fsdp) == (-1, 2, True)
    old = Config().to_dict()
    del old["mesh"]  # a config.json written before the mesh section existed
    assert Config.from_dict(old).mesh == MeshConfig()


def test_make_mesh_checks_the_device_count():
    mesh = sharding.make_mesh(MeshConfig())
    assert dict(mesh.shape) == {"data": jax.device_count(), "model": 1}
    fake = [jax.devices()[0]] * 8  # only the count matters for the checks
    with pytest.raises(ConfigError, match=r"mesh.data=3 x mesh.model=2 must equal the number of devices \(8\)"):
        sharding.make_mesh(MeshConfig(data=3, model=2), fake)
    with pytest.raises(ConfigError, match="mesh.model=3 does not divide the 8 devices"):
        sharding.make_mesh(MeshConfig(model=3), fake)


def _spec(name, shape, data, model, fsdp=False):
    return tuple(sharding.partition_spec(name, shape, AbstractMesh((data, model), ("data", "model")), fsdp))


def test_partition_rules():
    q, out = "params/encoder/layers/0/self_attn/query/kernel", "params/decoder/layers/1/cross_attn/out/kernel"
    ff1, ff2 = "opt_state/0/mu/encoder/layers/0/feed_forward/linear1/kernel", "params/x/feed_forward/linear2/kernel"
    emb, norm = "params/source_embedding/embedding", "params/encoder/layers/0/self_attn_norm/scale"
    # pure data parallel: everything replicated
    assert _spec(q, (32, 32), 8, 1) == (None, None) and _spec(emb, (100, 32), 8, 1) == (None, None)
    # tensor parallel (Megatron): column split of q/k/v and linear1 (and their biases), row split of out and linear2
    assert _spec(q, (32, 32), 4, 2) == (None, "model")
    assert _spec("params/a/self_attn/value/bias", (32,), 4, 2) == ("model",)
    assert _spec(out, (32, 32), 4, 2) == ("model", None)
    assert _spec("params/a/cross_attn/out/bias", (32,), 4, 2) == (None,)
    assert _spec(ff1, (32, 64), 4, 2) == (None, "model") and _spec(ff2, (64, 32), 4, 2) == ("model", None)
    assert _spec(emb, (100, 32), 4, 2) == (None, None) and _spec(norm, (32,), 4, 2) == (None,)
    # FSDP: the largest free axis that 'data' divides
    assert _spec(emb, (104, 32), 8, 1, fsdp=True) == ("data", None)
    assert _spec(emb, (100, 32), 8, 1, fsdp=True) == (None, "data")  # 100 is not divisible by 8
    assert _spec(ff2, (64, 32), 4, 2, fsdp=True) == ("model", "data")
    assert _spec(norm, (32,), 8, 1, fsdp=True) == ("data",) and _spec("step", (), 8, 1, fsdp=True) == ()
    assert _spec(norm, (30,), 8, 1, fsdp=True) == (None,)  # nothing divisible: replicated
    with pytest.raises(ConfigError, match="cannot be split 3 ways over 'model'"):
        _spec(q, (32, 32), 1, 3)


def test_tensor_parallel_needs_whole_heads():
    config = Config(model=model_preset("test", vocab_size=32))  # 4 heads
    with pytest.raises(ConfigError, match="mesh.model=8 must divide model.num_heads=4"):
        sharding.state_shardings({}, AbstractMesh((1, 8), ("data", "model")), False, config.model.num_heads)


def test_base_recipe_shards_on_a_4x2_mesh_with_fsdp():
    config = load_config_file(os.path.join(ROOT, "configs", "wmt14_en_de_base.py"), ["mesh.model=2", "mesh.fsdp=true"])
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=37000))
    params = nnx.state(nnx.eval_shape(lambda: Transformer(config.model, rngs=nnx.Rngs(0))), nnx.Param)
    mesh = AbstractMesh((4, 2), ("data", "model"))
    specs = sharding.describe(sharding.state_shardings(params, mesh, True, config.model.num_heads))
    assert specs["encoder/layers/5/self_attn/query/kernel"] == "('data', 'model')"
    assert specs["decoder/layers/0/feed_forward/linear2/kernel"] == "('model', 'data')"
    assert specs["source_embedding/embedding"] == "('data', None)"  # 37000 x 512, 37000 = 4 x 9250


def test_when_a_run_is_multi_process(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not sharding.distributed_requested(MeshConfig())
    sharding.initialize_distributed(MeshConfig())  # one process: nothing to do
    assert sharding.distributed_requested(MeshConfig(coordinator_address="node0:1234", num_processes=2))
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    assert not sharding.distributed_requested(MeshConfig())
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "16")  # srun with 16 tasks
    assert sharding.distributed_requested(MeshConfig())


def test_streamed_data_position_is_kept_per_process():
    class Stream:  # a streaming input: each process reads its own share, so each has its own position
        process_local, restored = True, None

        def state(self):
            return {"next": 7}

        def restore(self, state):
            self.restored = state

    stream = Stream()
    saved = data_position(stream)
    assert saved == {"processes": [{"next": 7}]}  # one process here: its own position, as process 0's
    restore_data_position(stream, {"processes": [{"next": 3}]})
    assert stream.restored == {"next": 3}
    with pytest.raises(UserError, match=r"written by 2 training process\(es\).*this run has 1; fix: resume with 2"):
        restore_data_position(stream, {"processes": [{"next": 3}, {"next": 4}]})


def test_padding_rows():
    batch = {"src": np.ones((5, 3), np.int32), "tgt_out": np.ones((5, 2), np.int32)}
    padded = sharding.pad_rows(batch, 4)
    assert padded["src"].shape == (8, 3) and padded["tgt_out"].shape == (8, 2)
    assert (padded["src"][5:] == 0).all() and (padded["src"][:5] == 1).all()
    assert sharding.pad_rows(batch, 5) is batch


# ---------------------------------------------------------------------------------------------------------------------
# Simulated 8 devices, and 2 processes x 4 devices
# ---------------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """Start the 8-device worker and the two 4-device host processes together; wait for all three."""
    out = tmp_path_factory.mktemp("parallel")
    corpus = _write_slice(out / "corpus", n_train=200, n_valid=16)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    # the compilation cache of conftest.py: re-runs skip most of the workers' compilations
    cache = os.path.join(tempfile.gettempdir(), "jax_transformer_test_cache")
    env.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")  # fmt: skip
    port = str(_free_port())
    commands = {
        "devices": [sys.executable, WORKER, "devices", str(out)],
        **{f"host{pid}": [sys.executable, WORKER, "hosts", str(out), port, str(pid), corpus] for pid in (0, 1)},
    }
    procs = {name: subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True) for name, cmd in commands.items()}  # fmt: skip
    logs = {}
    for name, proc in procs.items():
        try:
            logs[name] = proc.communicate(timeout=400)[0]
        except subprocess.TimeoutExpired:
            for other in procs.values():
                other.kill()
            logs[name] = proc.communicate()[0] + "\n[killed after 400 s]"
    failed = {name: logs[name][-3000:] for name, proc in procs.items() if proc.returncode != 0}
    return out, failed


def _results(workers, name):
    out, failed = workers
    relevant = {k: v for k, v in failed.items() if k.startswith(name)}
    assert not relevant, "\n\n".join(f"== {k}\n{v}" for k, v in relevant.items())
    return out


def _load(path) -> dict:
    with np.load(path) as arrays:
        return dict(arrays)


def _max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def test_data_fsdp_and_tensor_parallel_equal_one_device(workers):
    results = json.loads((_results(workers, "devices") / "devices.json").read_text())
    assert results["device_count"] == 8
    for name in ("dp8", "fsdp8", "tp4x2"):
        r = results[name]
        print(f"{name}: max |param diff| after 1 step {r['first_step_param_diff']:.1e}, after 3 steps "
              f"{r['final_param_diff']:.1e}; max |loss diff| {r['loss_diff']:.1e}")  # fmt: skip
        assert r["first_step_param_diff"] <= TOL and r["final_param_diff"] <= TOL and r["loss_diff"] <= TOL, name
    print(f"steps/s (a correctness run, not a speed claim): 1 device {results['steps_per_s_1']:.0f}, "
          f"8 simulated devices on 2 CPU cores {results['steps_per_s_dp8']:.0f}")  # fmt: skip


def test_parameters_and_optimizer_state_are_sharded_as_the_rules_say(workers):
    results = json.loads((_results(workers, "devices") / "devices.json").read_text())
    q = "encoder/layers/0/self_attn/query/kernel"  # (32, 32)
    out, ff1, ff2 = "decoder/layers/0/cross_attn/out/kernel", "encoder/layers/0/feed_forward/linear1/kernel", \
        "decoder/layers/0/feed_forward/linear2/kernel"  # fmt: skip
    emb = "source_embedding/embedding"  # (32, 32)

    tp = results["tp4x2"]
    for prefix in ("params/", "opt_state/1/0/mu/", "opt_state/1/0/nu/"):  # Adam's moments follow their parameter
        assert tp["specs"][prefix + q] == "(None, 'model')" and tp["shard_shapes"][prefix + q] == [32, 16]
        assert tp["specs"][prefix + out] == "('model', None)" and tp["shard_shapes"][prefix + out] == [16, 32]
    assert tp["shard_shapes"]["params/" + ff1] == [32, 32] and tp["shard_shapes"]["params/" + ff2] == [32, 32]
    assert tp["shard_shapes"]["params/" + emb] == [32, 32]  # replicated

    fsdp = results["fsdp8"]
    assert fsdp["specs"]["params/" + q] == "('data', None)" and fsdp["shard_shapes"]["params/" + q] == [4, 32]
    assert fsdp["shard_shapes"]["opt_state/1/0/mu/" + emb] == [4, 32]
    assert fsdp["shard_shapes"]["params/encoder/layers/0/self_attn_norm/scale"] == [4]

    restored = results["switch"]  # a replicated checkpoint (from "dp8") restored onto the 4x2 mesh
    assert restored["restored_query_kernel_spec"] == "(None, 'model')"
    assert restored["restored_query_kernel_shard_shape"] == [32, 16]

    assert results["dp8"]["replicated"] and not results["fsdp8"]["replicated"]  # pure data parallel: all replicated


def test_checkpoint_moves_between_meshes(workers):
    out = _results(workers, "devices")
    results = json.loads((out / "devices.json").read_text())
    # saved on 8-way data parallel after step 1, restored onto 4x2 data x tensor parallel, trained 2 more steps
    switch = results["switch"]
    print(f"dp8 -> checkpoint -> 4x2 data x TP: max |param diff| to not switching {switch['diff_to_unswitched']:.1e}, "
          f"to one device {switch['diff_to_reference']:.1e}")  # fmt: skip
    assert switch["diff_to_unswitched"] <= TOL and switch["diff_to_reference"] <= TOL and switch["loss_diff"] <= TOL

    # saved 8-way FSDP (each device wrote its shards), restored here on one device: the same values, bit for bit
    fsdp8, checkpoints = _load(out / "fsdp8.npz"), Checkpointer(str(out / "fsdp8_checkpoints"), read_only=True)
    flat = jax.tree_util.tree_flatten_with_path(checkpoints.restore_arrays(3)["params"])[0]
    restored = {sharding.path_name(path): np.asarray(x) for path, x in flat}
    assert _max_diff(restored, fsdp8) == 0.0
    # ... and as a typed training state on a one-device mesh (what resuming does)
    model_cfg = model_preset("test", vocab_size=32, num_encoder_layers=1, num_decoder_layers=1)
    config = Config(model=model_cfg, train=TrainConfig(clip_grad_norm=1.0))  # the worker's model and optimizer
    model = Transformer(config.model, rngs=nnx.Rngs(0))
    steps = translation_steps(config, model)
    state, _ = checkpoints.restore(3, steps.init_state(nnx.state(model, nnx.Param)))
    kernel = state["params"]["encoder"]["layers"][0]["self_attn"]["query"]["kernel"]
    assert kernel.sharding.device_set == {jax.devices()[0]}
    np.testing.assert_array_equal(np.asarray(kernel), fsdp8["encoder/layers/0/self_attn/query/kernel"])
    assert int(state["step"]) == 3


@pytest.fixture(scope="module")
def one_process_run(workers):
    """The run of the two processes again, here on one device, straight to step 6 (no evaluation: it changes no
    state)."""
    out, _ = workers
    config = run_config(str(out), str(out / "corpus"), MeshConfig(), steps=6, eval_every=0)
    config = dataclasses.replace(config, run_dir=str(out / "one_process_run"))
    train(config)
    return config.run_dir


def _params(run_dir, step) -> dict:
    tree = Checkpointer(os.path.join(run_dir, "checkpoints"), read_only=True).restore_arrays(step)["params"]
    return {sharding.path_name(path): np.asarray(x) for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_two_processes_equal_one(workers, one_process_run):
    out = _results(workers, "host")
    hosts = [json.loads((out / f"hosts{pid}.json").read_text()) for pid in (0, 1)]
    for pid, r in enumerate(hosts):
        assert (r["process_count"], r["device_count"], r["local_device_count"]) == (2, 8, 4)
        assert r["rows"] == [8 * pid, 8 * pid + 8]  # each process puts only its half of a batch's rows on devices
    assert hosts[0]["step"] == hosts[1]["step"] == 4 and hosts[0]["loss"] == hosts[1]["loss"]
    two = [r for r in read_metrics(str(out / "run")) if r["kind"] == "train"]
    one = [r for r in read_metrics(one_process_run) if r["kind"] == "train"][:2]
    assert [r["step"] for r in two] == [r["step"] for r in one] == [2, 4]
    for a, b in zip(two, one, strict=True):
        assert abs(a["loss"] - b["loss"]) <= TOL and abs(a["grad_norm"] - b["grad_norm"]) <= TOL
    # the checkpoint the two processes wrote together (4x2 FSDP + tensor parallel) restores on one device
    diff = _max_diff(_params(out / "run", 4), _params(one_process_run, 4))
    print(f"2 processes x 4 devices (4x2 FSDP + tensor parallel, dropout on) vs 1 device after 4 steps: "
          f"max |param diff| {diff:.1e}")  # fmt: skip
    assert diff <= TOL


def test_multihost_run_writes_once_and_resumes_on_one_device(workers, one_process_run):
    out = _results(workers, "host")
    run_dir = out / "run"
    records = [(r["kind"], r["step"]) for r in read_metrics(str(run_dir))]
    assert records == [("start", 0), ("train", 2), ("train", 4), ("valid", 4)]  # process 0 alone logged
    assert read_metrics(str(run_dir))[0]["hardware"].endswith(" cores")  # where it ran
    assert "bleu" in read_metrics(str(run_dir))[-1]  # greedy decoding over the sharded parameters worked
    assert (run_dir / "spm.model").exists() and (run_dir / "config.json").exists()
    assert Checkpointer(str(run_dir / "checkpoints"), read_only=True).all_steps() == [2, 4]

    # continue the run of the 2 processes here, on one device: the same as never switching
    config = Config.load(str(run_dir / "config.json"))
    more = dataclasses.replace(config.train, steps=6, eval_every=0)
    config = dataclasses.replace(config, mesh=MeshConfig(), train=more)
    assert train(config)["step"] == 6
    assert [(r["kind"], r["step"]) for r in read_metrics(str(run_dir))][-1] == ("train", 6)
    diff = _max_diff(_params(run_dir, 6), _params(one_process_run, 6))
    print(f"4 steps on 2 processes + 2 on 1 device vs 6 on 1 device: max |param diff| {diff:.1e}")
    assert diff <= TOL


def test_two_processes_stream_disjoint_halves_and_resume_exactly(workers):
    """Packed rows streamed by 2 processes (4x2 FSDP + tensor parallel, 'data' across them): each reads its own half
    of the training pairs, and the run stopped by a SIGTERM to process 0 alone during update 3 (both stop at step 4,
    the next log step; each saves its own position in its share) and run again equals the uninterrupted run bit for
    bit."""
    out = _results(workers, "host")
    streams = [json.loads((out / f"stream{pid}.json").read_text()) for pid in (0, 1)]
    for pid, r in enumerate(streams):
        assert r["data_shard"] == [pid, 2] and r["rows"] == 4 and r["share"] == 100  # half the rows, half the pairs
    halves = [{tuple(map(tuple, pair)) for pair in r["pairs"]} for r in streams]
    expected = [{tuple(map(tuple, pair)) for pair in r["expected"]} for r in streams]
    # each process read exactly the pairs at its indices (pid, pid + 2, ...) that fit data.max_len: all of its share
    # (over one epoch of reads) and nothing of the other's
    assert len(expected[0]) > 50 and len(expected[1]) > 50 and expected[0].isdisjoint(expected[1])
    assert halves[0] == expected[0] and halves[1] == expected[1]
    assert [r["stopped"] for r in streams] == ["interrupted at step 4: checkpoint saved; run the same command again "
                                               "to resume"] * 2  # fmt: skip
    a, b = _params(out / "stream_straight", 6), _params(out / "stream_stopped", 6)
    assert set(a) == set(b) and len(a) > 10
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])  # bitwise
    straight = [r for r in read_metrics(str(out / "stream_straight")) if r["kind"] == "train"]
    stopped = [r for r in read_metrics(str(out / "stream_stopped")) if r["kind"] == "train"]
    assert [r["loss"] for r in straight] == [r["loss"] for r in stopped]  # steps 2, 4 before the stop; 6 after
