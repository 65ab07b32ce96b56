"""Training: loss, schedules, overfitting, a short real run, exact resume, refusals of bad runs and inputs."""

import dataclasses
import gzip
import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_transformer.config import Config, DataConfig, TrainConfig, UserError, model_preset
from jax_transformer.data.tokenizer import Tokenizer
from jax_transformer.decode.search import greedy_search
from jax_transformer.model.transformer import Transformer
from jax_transformer.tasks.translation import label_smoothed_cross_entropy, rdrop_loss, train, translation_steps
from jax_transformer.train.checkpoint import Checkpointer
from jax_transformer.train.loop import TrainingInterrupted
from jax_transformer.train.optimizer import learning_rate_schedule
from jax_transformer.train.steps import Steps
from tests.copy_task import BOS, EOS, token_accuracy, train_copy_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MULTI30K = os.path.join(ROOT, "data", "multi30k")


# ---------------------------------------------------------------------------------------------------------------------
# Loss and schedules
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothed_loss_equals_reference(smoothing):
    rng = np.random.default_rng(0)
    vocab, pad = 11, 0
    logits = rng.normal(size=(3, 5, vocab)).astype(np.float32)
    targets = rng.integers(1, vocab, size=(3, 5))
    targets[0, 3:] = pad
    targets[2, 1:] = pad
    loss, nll, tokens = label_smoothed_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), pad, smoothing)

    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ref_loss = ref_nll = 0.0
    for b in range(3):
        for t in range(5):
            if targets[b, t] == pad:
                continue
            q = np.full(vocab, smoothing / (vocab - 1))
            q[targets[b, t]] = 1 - smoothing
            ref_loss += np.sum(np.where(q > 0, q * (np.log(np.where(q > 0, q, 1)) - log_p[b, t]), 0))  # KL(q || p)
            ref_nll += -log_p[b, t, targets[b, t]]
    assert float(tokens) == np.sum(targets != pad)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    np.testing.assert_allclose(float(nll), ref_nll, rtol=1e-5)


def test_rdrop_loss_equals_reference():
    rng = np.random.default_rng(2)
    vocab, pad, alpha = 11, 0, 2.0
    logits, other = (rng.normal(size=(3, 5, vocab)).astype(np.float32) for _ in range(2))
    targets = rng.integers(1, vocab, size=(3, 5))
    targets[1, 2:] = pad
    loss, nll, tokens, kl = rdrop_loss(jnp.asarray(logits), jnp.asarray(other), jnp.asarray(targets), pad, 0.1, alpha)

    softmax = lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    p, q = softmax(logits.astype(np.float64)), softmax(other.astype(np.float64))
    per_token = 0.5 * (np.sum(p * np.log(p / q), -1) + np.sum(q * np.log(q / p), -1))  # (KL(p||q) + KL(q||p)) / 2
    ref_kl = np.sum(per_token * (targets != pad))
    halves = [label_smoothed_cross_entropy(jnp.asarray(x), jnp.asarray(targets), pad, 0.1) for x in (logits, other)]
    np.testing.assert_allclose(float(kl), ref_kl, rtol=1e-5)
    mean_loss = 0.5 * (float(halves[0][0]) + float(halves[1][0]))
    np.testing.assert_allclose(float(loss), mean_loss + alpha * ref_kl, rtol=1e-5)
    np.testing.assert_allclose(float(nll), 0.5 * (float(halves[0][1]) + float(halves[1][1])), rtol=1e-5)
    assert float(tokens) == np.sum(targets != pad)
    # padding positions count for nothing: other predictions there change no sum
    other[targets == pad] = rng.normal(size=(int(np.sum(targets == pad)), vocab))
    again = rdrop_loss(jnp.asarray(logits), jnp.asarray(other), jnp.asarray(targets), pad, 0.1, alpha)
    np.testing.assert_array_equal(np.asarray(again), np.asarray((loss, nll, tokens, kl)))


def test_noam_schedule_equals_formula():
    cfg = TrainConfig(schedule="noam", learning_rate=2.0, warmup_steps=400)
    schedule = learning_rate_schedule(cfg, d_model=512)
    for step in (1, 10, 399, 400, 401, 4000, 100_000):
        expected = 2.0 * 512**-0.5 * min(step**-0.5, step * 400**-1.5)  # §5.3, Eq. 3
        np.testing.assert_allclose(float(schedule(step - 1)), expected, rtol=1e-6)


def test_inverse_sqrt_and_cosine_schedules():
    inv = learning_rate_schedule(TrainConfig(schedule="inverse_sqrt", learning_rate=5e-3, warmup_steps=100), 128)
    np.testing.assert_allclose(float(inv(49)), 5e-3 * 50 / 100, rtol=1e-6)  # warming up
    np.testing.assert_allclose(float(inv(99)), 5e-3, rtol=1e-6)  # peak at the end of warmup
    np.testing.assert_allclose(float(inv(399)), 5e-3 * (100 / 400) ** 0.5, rtol=1e-6)
    cos = learning_rate_schedule(
        TrainConfig(schedule="cosine", learning_rate=1e-3, warmup_steps=10, steps=110, end_learning_rate=1e-5), 128
    )
    np.testing.assert_allclose(float(cos(10)), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(float(cos(110)), 1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# The compiled steps
# ---------------------------------------------------------------------------------------------------------------------


def _steps(train_cfg: TrainConfig, **model_overrides):
    config = Config(model=model_preset("test", vocab_size=16, **model_overrides), train=train_cfg)
    model = Transformer(config.model, rngs=nnx.Rngs(params=0, dropout=1))
    steps = translation_steps(config, model)
    return steps, steps.init_state(nnx.state(model, nnx.Param))


def test_tiny_model_overfits_a_copy_task():
    runner, state, batch = train_copy_model()
    assert token_accuracy(runner, state, batch) >= 0.99
    out = greedy_search(runner.eval_model(state["params"]), batch["src"], max_len=10, bos_id=BOS, eos_id=EOS)
    assert np.mean(np.asarray(out)[:, :9] == batch["tgt_out"]) >= 0.99


@pytest.mark.parametrize("rdrop_alpha", [0.0, 1.0])
def test_gradient_accumulation_equals_one_big_batch(rdrop_alpha):
    rng = np.random.default_rng(1)
    make = lambda n: {
        "src": rng.integers(1, 16, size=(n, 6)).astype(np.int32),
        "tgt_in": rng.integers(1, 16, size=(n, 5)).astype(np.int32),
        "tgt_out": rng.integers(1, 16, size=(n, 5)).astype(np.int32),
    }
    a, b = make(4), make(4)
    a["tgt_out"][0, 3:] = 0  # padding: token-weighted averaging must ignore it
    both = {k: np.concatenate([a[k], b[k]]) for k in a}
    # adam_eps=1 makes the first Adam update ~ lr * gradient: Adam's usual g / |g| would turn float rounding in
    # near-zero gradients into sign flips, which says nothing about accumulation.
    cfg = TrainConfig(schedule="constant", learning_rate=1.0, warmup_steps=0, adam_eps=1.0, rdrop_alpha=rdrop_alpha)
    steps, state = _steps(cfg, dropout=0.0)
    big, _ = steps.train_step(jax.tree.map(jnp.copy, state), both)
    acc = steps.zero_accumulator(state["params"], a)
    for micro, batch in enumerate((a, b)):
        acc = steps.accumulate(acc, state["params"], batch, state["step"], micro)
    accumulated, _ = steps.apply_accumulated(state, acc)
    for x, y in zip(jax.tree.leaves(big["params"]), jax.tree.leaves(accumulated["params"]), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)


def test_rdrop_step_adds_alpha_times_a_positive_kl_and_without_dropout_is_the_plain_loss():
    rng = np.random.default_rng(3)
    batch = {k: rng.integers(1, 16, size=(4, 6)).astype(np.int32) for k in ("src", "tgt_in", "tgt_out")}
    batch["tgt_out"][1, 4:] = 0  # padding
    losses, kls = [], []
    for alpha in (1.0, 2.0, 3.0):  # same weights, batch and dropout masks: only alpha changes
        steps, state = _steps(TrainConfig(rdrop_alpha=alpha), dropout=0.3)
        _, metrics = steps.train_step(state, batch)
        losses.append(float(metrics["loss"]))
        kls.append(float(metrics["kl"]))
    assert kls[0] > 1e-6  # the two passes drew different masks, so their predictions differ
    np.testing.assert_allclose(kls, kls[0], rtol=1e-6)
    np.testing.assert_allclose(np.diff(losses), kls[0], rtol=1e-4)
    # without dropout the two passes agree: no KL, and the loss is the one-pass loss
    steps, state = _steps(TrainConfig(rdrop_alpha=1.0), dropout=0.0)
    _, rdrop = steps.train_step(state, batch)
    steps, state = _steps(TrainConfig(), dropout=0.0)
    _, plain = steps.train_step(state, batch)
    assert abs(float(rdrop["kl"])) < 1e-6
    np.testing.assert_allclose(float(rdrop["loss"]), float(plain["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(rdrop["grad_norm"]), float(plain["grad_norm"]), rtol=1e-5)


def test_non_finite_update_is_skipped_and_reported():
    steps, state = _steps(TrainConfig(schedule="constant", learning_rate=1e-3, warmup_steps=0))
    kernel = state["params"]["encoder"]["layers"][0]["self_attn"]["query"]["kernel"]
    kernel.set_value(kernel.get_value().at[0, 0].set(jnp.inf))
    before = jax.tree.map(np.asarray, state["params"])
    batch = {k: np.array([[5, 6, 3]], np.int32) for k in ("src", "tgt_in", "tgt_out")}
    state, metrics = steps.train_step(state, batch)
    assert int(state["nonfinite_step"]) == 1
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(state["params"]), strict=True):
        np.testing.assert_array_equal(x, np.asarray(y))  # the update was not applied


# ---------------------------------------------------------------------------------------------------------------------
# Whole runs on a slice of Multi30k
# ---------------------------------------------------------------------------------------------------------------------


def _write_slice(folder, n_train=600, n_valid=48):
    os.makedirs(folder, exist_ok=True)
    for split, n, name in (("train", n_train, "train"), ("val", n_valid, "val")):
        for lang in ("en", "de"):
            with gzip.open(os.path.join(MULTI30K, f"{name}.{lang}.gz"), "rt", encoding="utf-8") as f:
                lines = [next(f) for _ in range(n)]
            with open(os.path.join(folder, f"{split}.{lang}"), "w", encoding="utf-8") as f:
                f.writelines(lines)
    return str(folder)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _write_slice(tmp_path_factory.mktemp("multi30k_slice"))


def _config(corpus, run_dir, pack_length=0, **train):
    data = DataConfig(path=corpus, vocab_size=250, max_len=40, max_tokens=400, length_bucket_step=16,
                      min_bucket_batches=4, cache_dir=os.path.join(corpus, ".cache"),
                      pack_length=pack_length)  # fmt: skip
    train_cfg = dict(steps=12, schedule="inverse_sqrt", learning_rate=2e-3, warmup_steps=4, clip_grad_norm=1.0,
                     log_every=4, eval_every=0, save_every=4, keep_checkpoints=3)  # fmt: skip
    train_cfg.update(train)
    return Config(name="t", run_dir=str(run_dir), model=model_preset("test", max_len=128), data=data,
                  train=TrainConfig(**train_cfg))  # fmt: skip


@pytest.fixture(scope="module")
def straight_run(corpus, tmp_path_factory):
    """`_config`'s 12 steps on length buckets, uninterrupted: what the resume and extend tests must reproduce."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    train(_config(corpus, run_dir))
    return run_dir


def test_short_run_lowers_validation_loss(corpus, tmp_path):
    config = _config(corpus, tmp_path / "run", steps=60, eval_every=10, bleu_every=60, bleu_max_sentences=16)
    train(config)
    valid = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl") if '"valid"' in line]
    assert [v["step"] for v in valid] == [10, 20, 30, 40, 50, 60]
    assert valid[-1]["loss"] < valid[0]["loss"] - 0.3, valid
    assert "bleu" in valid[-1]
    saved = Config.load(str(tmp_path / "run" / "config.json"))
    assert saved.model.vocab_size == Tokenizer.load(str(tmp_path / "run" / "spm.model")).vocab_size  # what was learnt
    assert os.path.exists(tmp_path / "run" / "spm.model")
    assert any(name.startswith("events") for name in os.listdir(tmp_path / "run"))


def test_resume_after_a_crash_equals_an_uninterrupted_run(corpus, tmp_path, straight_run):
    """Crash at step 10 (no final save; the last checkpoint is step 8), re-run: final state is bit-identical. Length
    buckets here; packed rows resume in the SIGTERM tests below."""
    crashed = _config(corpus, tmp_path / "crashed")
    with pytest.raises(TrainingInterrupted):
        train(crashed, crash_at_step=10)
    assert Checkpointer(str(tmp_path / "crashed" / "checkpoints"), read_only=True).latest_step() == 8
    train(crashed)
    a = Checkpointer(str(straight_run / "checkpoints"), read_only=True).restore_arrays(12)
    b = Checkpointer(str(tmp_path / "crashed" / "checkpoints"), read_only=True).restore_arrays(12)
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 10
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bitwise: XLA on CPU is deterministic


def signal_on_read(monkeypatch, read: int, *signums) -> None:
    """Send `signums` to this process while the trainer reads its `read`-th batch (onto the mesh), as a signal may
    arrive at any moment: in the middle of an update."""
    reads = {"n": 0}

    def signalling(original):
        def shard(self, batch, *args):
            reads["n"] += 1
            if reads["n"] == read:
                for signum in signums:
                    os.kill(os.getpid(), signum)
            return original(self, batch, *args)

        return shard

    for name in ("shard_batch", "shard_local_batch"):
        monkeypatch.setattr(Steps, name, signalling(getattr(Steps, name)))


@pytest.mark.parametrize("accum, signalled_read, pack_length", [(1, 7, 0), (2, 5, 40)],
                         ids=["one_batch_buckets", "accumulated_packed"])  # fmt: skip
def test_sigterm_mid_update_stops_after_it_and_resumes_bit_identically(corpus, tmp_path, monkeypatch, straight_run,
                                                                       accum, signalled_read, pack_length):  # fmt: skip
    """SIGTERM arrives while a batch is being read (as a signal may, at any moment): the update under way completes,
    its checkpoint is saved, the run stops with one line; re-run, it ends bit-identical to an uninterrupted run.
    With gradient accumulation the signal comes between an update's two batches."""
    if accum == 1:
        straight = straight_run
    else:
        straight = tmp_path / "straight"
        train(_config(corpus, straight, pack_length, grad_accum_steps=accum))
    handler_before = signal.getsignal(signal.SIGTERM)
    signal_on_read(monkeypatch, signalled_read, signal.SIGTERM)
    stopped = _config(corpus, tmp_path / "stopped", pack_length, grad_accum_steps=accum)
    stop_step = (signalled_read - 1) // accum + 1  # the update the signalled batch belongs to
    with pytest.raises(UserError, match=f"interrupted at step {stop_step}: checkpoint saved"):
        train(stopped)
    assert signal.getsignal(signal.SIGTERM) is handler_before  # the handlers are put back
    assert Checkpointer(str(tmp_path / "stopped" / "checkpoints"), read_only=True).latest_step() == stop_step
    monkeypatch.undo()
    train(stopped)
    a = Checkpointer(str(straight / "checkpoints"), read_only=True).restore_arrays(12)
    b = Checkpointer(str(tmp_path / "stopped" / "checkpoints"), read_only=True).restore_arrays(12)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_second_ctrl_c_stops_mid_update_without_saving(corpus, tmp_path, monkeypatch):
    """Ctrl-C twice while update 7's batch is read: the second stops at once; nothing half-applied is saved, and the
    message names the checkpoint a re-run resumes from (step 4, the last saved)."""
    signal_on_read(monkeypatch, 7, signal.SIGINT, signal.SIGINT)
    config = _config(corpus, tmp_path / "run", 40)
    with pytest.raises(UserError, match="interrupted during update 7, not saved; .* resumes from step 4"):
        train(config)
    assert Checkpointer(str(tmp_path / "run" / "checkpoints"), read_only=True).all_steps() == [4]


def test_extending_a_finished_run_equals_a_longer_run_and_records_the_change(corpus, tmp_path, straight_run):
    """Train to step 8, then re-run with train.steps=12: with an inverse-sqrt schedule (which does not depend on
    train.steps) the result is bit-identical to a 12-step run; the first config is kept and the change logged."""
    extended = _config(corpus, tmp_path / "extended", steps=8)
    train(extended)
    train(dataclasses.replace(extended, train=dataclasses.replace(extended.train, steps=12)))
    a = Checkpointer(str(straight_run / "checkpoints"), read_only=True).restore_arrays(12)
    b = Checkpointer(str(tmp_path / "extended" / "checkpoints"), read_only=True).restore_arrays(12)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert Config.load(str(tmp_path / "extended" / "config.json")).train.steps == 12
    assert Config.load(str(tmp_path / "extended" / "config.before_step8.json")).train.steps == 8
    records = [json.loads(line) for line in open(tmp_path / "extended" / "metrics.jsonl")]
    assert [r for r in records if r["kind"] == "resume"] == [
        {"kind": "resume", "step": 8, "time": pytest.approx(0.0, abs=60.0), "changes": ["train.steps: 8 -> 12"]}
    ]


def test_incompatible_run_directory_is_refused_and_kept(corpus, tmp_path):
    config = _config(corpus, tmp_path / "run", steps=4)
    train(config)
    before = open(tmp_path / "run" / "config.json").read()
    other = dataclasses.replace(config, model=dataclasses.replace(config.model, d_model=64))
    with pytest.raises(UserError, match="different config .*model.d_model"):
        train(other)
    assert open(tmp_path / "run" / "config.json").read() == before
    assert Checkpointer(str(tmp_path / "run" / "checkpoints"), read_only=True).all_steps() == [4]


def test_lengths_past_the_models_positions_are_refused_in_one_line(tmp_path):
    """A training length the positional encoding does not cover is a config error; a validation pair longer than it
    is named (without the check: a ValueError at the first evaluation, or silently clamped positions when packed)."""
    corpus = _write_slice(tmp_path / "corpus", n_train=300, n_valid=8)
    config = _config(corpus, tmp_path / "run")
    with pytest.raises(UserError, match="data.max_len=40 exceeds model.max_len=32"):
        train(dataclasses.replace(config, model=dataclasses.replace(config.model, max_len=32)))
    for lang in ("en", "de"):
        with open(os.path.join(corpus, f"val.{lang}"), "a", encoding="utf-8") as f:
            f.write(" ".join(["A dog runs on the beach."] * 30) + "\n")  # pair 9: far over 128 tokens
    with pytest.raises(UserError, match="validation split 'val', pair 9: .* more than model.max_len=128; fix: "):
        train(config)
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


# ---------------------------------------------------------------------------------------------------------------------
# The command line: one clear line and a non-zero exit for user errors
# ---------------------------------------------------------------------------------------------------------------------


def _run_cli(*args, cwd=ROOT):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)  # fmt: skip


def _bad_corpus(folder, case):
    _write_slice(folder, n_train=40, n_valid=8)
    if case == "missing":
        os.remove(os.path.join(folder, "train.de"))
    elif case == "mismatched":
        with open(os.path.join(folder, "train.de"), "a", encoding="utf-8") as f:
            f.write("eine Zeile zu viel\n")
    elif case == "empty_line":
        lines = open(os.path.join(folder, "train.en"), encoding="utf-8").readlines()
        lines[5] = "\n"
        open(os.path.join(folder, "train.en"), "w", encoding="utf-8").writelines(lines)
    elif case == "invalid_utf8":
        with open(os.path.join(folder, "train.en"), "r+b") as f:
            f.seek(10)
            f.write(b"\xff\xfe")


@pytest.mark.parametrize(
    "case,expected",
    [("missing", "train.de"), ("mismatched", "line"), ("empty_line", "train.en:6"), ("invalid_utf8", "UTF-8")],
)
def test_bad_input_gives_one_line_and_exit_1(tmp_path, case, expected):
    folder = str(tmp_path / "corpus")
    _bad_corpus(folder, case)
    overrides = [f"--config.data.path={folder}", f"--config.run_dir={tmp_path / 'run'}"]
    result = _run_cli("--config", "configs/tiny.py", *overrides, f"--config.data.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr


@pytest.mark.parametrize(
    "override,expected",
    [
        ("--config.model.d_mdoel=3", "unknown config key model.d_mdoel"),
        ("--config.train.steps=ten", "train.steps must be of type int"),
        ("--config.model.num_heads=5", "divisible"),
        ("--config.model=3", "is a section"),
    ],
)
def test_cli_override_errors(override, expected):
    result = _run_cli("--config", "configs/tiny.py", override)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:") and expected in result.stderr, result.stderr


def test_dropout_masks_differ_between_layers_and_steps():
    """Every Dropout module draws its own mask, and masks change from step to step (but not between two runs)."""
    from jax_transformer.train.steps import reseed_dropout

    steps, state = _steps(TrainConfig(), dropout=0.5)

    @jax.jit
    def masks(params, key):
        model = nnx.merge(steps.train_graphdef, params, jax.tree.map(jnp.asarray, steps.rng_state))
        reseed_dropout(model, key)
        x = jnp.ones((2, 3, 32))
        return jnp.stack([model.encoder.layers[0].dropout(x), model.encoder.layers[1].dropout(x),
                          model.decoder.layers[0].dropout(x)])  # fmt: skip

    step1, step2 = masks(state["params"], jax.random.key(1)), masks(state["params"], jax.random.key(2))
    assert not jnp.array_equal(step1[0], step1[1]) and not jnp.array_equal(step1[0], step1[2])
    assert not jnp.array_equal(step1, step2)
    np.testing.assert_array_equal(step1, masks(state["params"], jax.random.key(1)))


def test_earlier_sessions_time_adds_up_the_processes_before_the_latest():
    from jax_transformer.train.run_log import earlier_sessions_seconds

    records = [{"kind": "start", "step": 0, "time": 0.1}, {"kind": "train", "step": 4, "time": 30.0},
               {"kind": "valid", "step": 4, "time": 41.5},  # the first process: 41.5 s
               {"kind": "start", "step": 4, "time": 0.2}, {"kind": "train", "step": 8, "time": 12.0},  # 12 s
               {"kind": "start", "step": 8, "time": 0.1}, {"kind": "train", "step": 12, "time": 5.0}]  # fmt: skip
    assert earlier_sessions_seconds(records) == 41.5 + 12.0  # the latest process counts its own time
    assert earlier_sessions_seconds(records[:3]) == 0.0  # one process: nothing before it
