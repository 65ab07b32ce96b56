"""Text-classification fine-tuning: config, bad rows, a two-step run of a tiny random BERT, save/load, predict CLI."""

import dataclasses
import gzip
import json
import os
import shutil

import numpy as np
import pytest

from jax_transformer.config import (
    ClassifyConfig,
    ClassifyDataConfig,
    ClassifyTrainConfig,
    Config,
    ConfigError,
    UserError,
    apply_overrides,
    load_any_config,
)
from jax_transformer.data import classification as cdata
from jax_transformer.interop import bert

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A randomly initialised 2-layer, d_model-32 BERT saved like a Hugging Face model, with MiniLM's tokenizer."""
    transformers = pytest.importorskip("transformers")
    out = str(tmp_path_factory.mktemp("tiny_bert"))
    minilm = bert.resolve_pretrained("all-MiniLM-L6-v2")
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, layer_norm_eps=1e-12,
    )  # fmt: skip
    transformers.BertModel(config).save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(os.path.join(minilm, name), out)
    return out


@pytest.fixture(scope="module")
def sst2_small(tmp_path_factory):
    """The first 300 training and 64 dev rows of the bundled SST-2."""
    out = tmp_path_factory.mktemp("sst2")
    for name, n in (("train", 300), ("dev", 64)):
        with gzip.open(os.path.join(ROOT, "data", "sst2", f"{name}.tsv.gz"), "rt", encoding="utf-8") as f:
            lines = [next(f) for _ in range(n + 1)]
        (out / f"{name}.tsv").write_text("".join(lines), encoding="utf-8")
    return str(out)


def small_config(model_dir, data_dir, run_dir, **train) -> ClassifyConfig:
    return ClassifyConfig(
        name="test", run_dir=run_dir, pretrained=model_dir,
        data=ClassifyDataConfig(path=data_dir, train_file="train.tsv", valid_file="dev.tsv", max_len=16,
                                length_bucket_step=16, label_names="",),
        train=ClassifyTrainConfig(**{"steps": 2, "batch_size": 16, "eval_every": 2, "log_every": 1,
                                     "learning_rate": 1e-3, **train}),
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained_run(tiny_bert, sst2_small, tmp_path_factory):
    from jax_transformer.tasks.classification import train_classifier

    run_dir = str(tmp_path_factory.mktemp("runs") / "clf")
    report = train_classifier(small_config(tiny_bert, sst2_small, run_dir, eval_every=1))
    return run_dir, report


def test_recipe_loads_as_classification_config_and_refuses_unknown_keys():
    config = load_any_config(os.path.join(ROOT, "configs", "sst2_minilm.py"), ["train.learning_rate=3e-5"])
    assert isinstance(config, ClassifyConfig) and config.train.learning_rate == 3e-5
    assert config.data.label_list == ["0", "1"] and config.data.display_names == ["negative", "positive"]
    with pytest.raises(ConfigError, match="unknown config key train.lr"):
        apply_overrides(config, ["train.lr=1"])
    with pytest.raises(ConfigError, match="unknown config key data.colour"):
        ClassifyConfig.from_dict({"data": {"colour": "x"}})
    with pytest.raises(ConfigError, match="pooling"):
        ClassifyConfig(pooling="max")
    assert isinstance(load_any_config(os.path.join(ROOT, "configs", "tiny.py")), Config)  # translation recipes too


def test_bad_rows_are_reported_with_line_numbers(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("sentence\tlabel\ngood film\t1\nno label here\t\nweird\t7\n   \t0\nfine\t0\n", encoding="utf-8")
    cfg = ClassifyDataConfig(path=str(tmp_path), labels="0,1")
    rows = cdata.read_rows(str(path), cfg)
    with pytest.raises(UserError) as info:
        cdata.validate_rows(rows, cfg.label_list, str(path), skip_bad=False)
    message = str(info.value)
    assert "3 bad row(s)" in message
    assert "line 3: missing label" in message and "line 4: unknown label '7'" in message
    assert "line 5: empty text" in message
    texts, labels = cdata.validate_rows(rows, cfg.label_list, str(path), skip_bad=True)
    assert texts == ["good film", "fine"] and labels.tolist() == [1, 0]
    whole = gzip.compress(path.read_bytes())
    for name, content in (("plain.tsv.gz", path.read_bytes()), ("cut.tsv.gz", whole[: len(whole) // 2])):
        (tmp_path / name).write_bytes(content)  # not gzip data / a truncated download: one line, no traceback
        with pytest.raises(UserError, match=f"{name}: cannot read it .*fix: replace the file"):
            cdata.read_rows(str(tmp_path / name), cfg)


def test_jsonl_and_csv_with_configurable_columns(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"t": "yes", "y": "pos"}\n{"t": "no", "y": "neg"}\nnot json\n', encoding="utf-8")
    cfg = ClassifyDataConfig(format="jsonl", text_field="t", label_field="y")
    rows = cdata.read_rows(str(tmp_path / "a.jsonl"), cfg)
    assert cdata.infer_labels(rows) == ["neg", "pos"]
    with pytest.raises(UserError, match="line 3: unreadable row"):
        cdata.validate_rows(rows, ["neg", "pos"], "a.jsonl", skip_bad=False)
    (tmp_path / "b.csv").write_text('review,stars\n"good, really",5\nbad,1\n', encoding="utf-8")
    cfg = ClassifyDataConfig(format="csv", text_field="review", label_field="stars")
    texts, labels = cdata.validate_rows(cdata.read_rows(str(tmp_path / "b.csv"), cfg), ["1", "5"], "b.csv", False)
    assert texts == ["good, really", "bad"] and labels.tolist() == [1, 0]
    with pytest.raises(UserError, match="no column 'text'"):
        cdata.read_rows(str(tmp_path / "b.csv"), ClassifyDataConfig(format="csv", text_field="text"))


def test_batches_have_few_fixed_shapes_and_cover_every_example():
    ids = [np.arange(1, n + 1, dtype=np.int32) for n in (3, 17, 5, 30, 9, 32, 2)]
    batches = cdata.make_batches(ids, np.arange(7), 4, 16, 32, 0, np.random.default_rng(0))
    assert {b["ids"].shape for b in batches} <= {(4, 16), (4, 32)}
    seen = np.concatenate([b["index"][b["weights"] > 0] for b in batches])
    assert sorted(seen.tolist()) == list(range(7))


def test_training_rows_are_prepared_once_by_content_and_bad_files_refused(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\ngood film\t1\nno label here\t\nfine\t0\n", encoding="utf-8")
    cfg = ClassifyDataConfig(path=str(tmp_path), labels="0,1", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(UserError, match=r"1 bad row\(s\): line 3: missing label. Fix them or set data.skip_bad_rows"):
        cdata.open_rows(str(path), cfg, cfg.label_list)
    skipping = dataclasses.replace(cfg, skip_bad_rows=True)
    rows = cdata.open_rows(str(path), skipping, cfg.label_list)
    assert len(rows) == 2 and rows.__getitems__([0, 1]) == [("good film", 1), ("fine", 0)]
    assert cdata.open_rows(str(path), skipping, cfg.label_list).identity == rows.identity  # prepared once
    path.write_text("sentence\tlabel\ngood film\t1\nfine\t0\nbad\t0\n", encoding="utf-8")  # edited: prepared again
    edited = cdata.open_rows(str(path), skipping, cfg.label_list)
    assert edited.identity != rows.identity and edited[2] == ("bad", 0)


class _Words:
    """A stand-in tokenizer: [CLS]=101, one id per word (its length + 1000), [SEP]=102."""

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[101, *(1000 + len(w) for w in t.split()), 102] for t in texts]}


def test_classification_stream_covers_every_row_once_per_epoch_and_resumes_exactly():
    rng = np.random.default_rng(0)
    rows = [(" ".join("w" * int(k) for k in rng.integers(1, 9, rng.integers(1, 20))), i % 3) for i in range(90)]
    ids, truncated = cdata.encode_texts(_Words(), [text for text, _ in rows], 16)  # cut to 16 tokens, [SEP] kept
    assert truncated > 10

    def fingerprint(batch):  # each row's (token ids, label) as it went into the batch
        return [(tuple(int(x) for x in r if x), int(y)) for r, y, w in zip(batch["ids"], batch["labels"],
                                                                          batch["weights"], strict=True) if w]

    expected = sorted((tuple(i.tolist()), label) for i, (_, label) in zip(ids, rows, strict=True))
    for window in (90, 32):  # one window per epoch; windows smaller than the rows
        stream = cdata.ClassificationStream(rows, _Words(), 8, 8, 16, 0, seed=1, window=window)
        iterator, seen, batches = iter(stream), [], []
        while stream.examples_read < 90:
            batches.append(next(iterator))
            seen += fingerprint(batches[-1])
        if window == 90:
            assert stream.examples_read == 90 and len(batches) == len(stream) == stream.stats()["batches"]
            assert sorted(seen) == expected  # every row once, with its own label
        assert all(set(b) == {"ids", "labels", "weights"} and b["ids"].shape[0] == 8 for b in batches)
        assert {b["ids"].shape[1] for b in batches} <= {8, 16}
        state = json.loads(json.dumps(stream.state()))
        following = [fingerprint(next(iterator)) for _ in range(15)]
        resumed = cdata.ClassificationStream(rows, _Words(), 8, 8, 16, 0, seed=1, window=window)
        resumed.restore(state)
        assert [fingerprint(b) for b, _ in zip(resumed, range(15), strict=False)] == following
    with pytest.raises(UserError, match="differ from the run being resumed"):
        cdata.ClassificationStream(rows[:-1], _Words(), 8, 8, 16, 0, seed=1, window=32).restore(state)


def test_two_step_run_writes_the_run_directory(trained_run):
    run_dir, report = trained_run
    for name in ("config.json", "labels.json", "model.json", "metrics.jsonl", "eval.json", "confusion_matrix.png"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    assert os.path.isfile(os.path.join(run_dir, "tokenizer", "tokenizer.json"))
    assert json.load(open(os.path.join(run_dir, "config.json")))["task"] == "classification"
    assert json.load(open(os.path.join(run_dir, "labels.json")))["labels"] == ["0", "1"]  # inferred, saved
    confusion = np.asarray(report["confusion_matrix"])  # (true, predicted) counts
    assert report["examples"] == 64 and confusion.sum() == 64
    assert report["accuracy"] == np.trace(confusion) / 64  # the reported accuracy is the matrix's
    kinds = [json.loads(line)["kind"] for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert kinds.count("train") == 2 and kinds.count("valid") == 2
    valid = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl")) if '"valid"' in line]
    best = max(valid, key=lambda r: (r["accuracy"], r["step"]))
    assert report["step"] == best["step"] and report["accuracy"] == best["accuracy"]  # the best, not the latest


def test_save_load_round_trip_reproduces_the_report(trained_run, sst2_small):
    from jax_transformer.tasks.classification import Classifier

    run_dir, report = trained_run
    classifier = Classifier.load(run_dir)
    dataset, _ = cdata.load_dataset(os.path.join(sst2_small, "dev.tsv"), classifier.config.data,
                                    classifier.labels, classifier.tokenizer)  # fmt: skip
    again = classifier.evaluate(dataset)
    assert again["accuracy"] == report["accuracy"] and again["confusion_matrix"] == report["confusion_matrix"]
    probs = classifier.probabilities(["a moving film", "dull"])
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(UserError, match=f"has no checkpoint 999; it keeps: .*{classifier.step}"):
        Classifier.load(run_dir, 999)  # a step it does not keep: named, with the ones it does, not "damaged"


def test_predict_command_reads_texts_a_file_or_stdin(trained_run, tmp_path, capsys, monkeypatch):
    import io
    import sys

    from jax_transformer.cli import predict

    run_dir = trained_run[0]
    texts = tmp_path / "texts.txt"
    texts.write_text("a moving film\n\ndull and far too long\n", encoding="utf-8")
    assert predict.main([run_dir, "--file", str(texts)]) == 0
    lines = capsys.readouterr().out.strip().split("\n")  # one line per non-empty text: label, probability, text
    assert [line.split("\t")[2] for line in lines] == ["a moving film", "dull and far too long"]
    with open(os.path.join(run_dir, "labels.json"), encoding="utf-8") as f:
        names = json.load(f)["names"]
    assert all(line.split("\t")[0] in names and 0.5 <= float(line.split("\t")[1]) <= 1 for line in lines)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"fine\n\xff bad\n")))
    assert predict.main([run_dir]) == 1  # invalid UTF-8 on stdin: named with its line, no traceback
    err = capsys.readouterr().err
    assert err.startswith("error: <stdin>:2: invalid UTF-8") and err.count("\n") == 1, err
    assert predict.main([run_dir, "some text", "--step", "999"]) == 1
    assert "has no checkpoint 999; it keeps:" in capsys.readouterr().err


def test_a_trained_run_refuses_an_incompatible_config(trained_run, tiny_bert, sst2_small):
    """A run directory made by another config is refused before anything in it changes."""
    import dataclasses

    from jax_transformer.tasks.classification import train_classifier

    run_dir = trained_run[0]
    before = sorted(os.listdir(run_dir)), sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
    config = dataclasses.replace(small_config(tiny_bert, sst2_small, run_dir, eval_every=1), pooling="cls")
    with pytest.raises(UserError, match="holds a run with a different config .pooling: 'mean' -> 'cls'"):
        train_classifier(config)
    assert (sorted(os.listdir(run_dir)), sorted(os.listdir(os.path.join(run_dir, "checkpoints")))) == before


def _final_params(run_dir):
    from jax_transformer.train.checkpoint import Checkpointer

    checkpoints = Checkpointer(os.path.join(run_dir, "checkpoints"), read_only=True)
    arrays = checkpoints.restore_arrays(checkpoints.latest_step())
    checkpoints.close()
    return arrays


def _flat(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_classification_resumes_bit_identically_after_a_kill(tiny_bert, sst2_small, tmp_path):
    """Killed at step 3 of 6 (last checkpoint at step 2), then resumed: the final state (parameters, optimizer
    moments, EMA) equals an uninterrupted run's bit for bit; dropout and R-Drop masks and the batch order continue."""
    from jax_transformer.tasks.classification import train_classifier
    from jax_transformer.train.loop import TrainingInterrupted

    settings = dict(steps=6, eval_every=2, ema_decay=0.9, rdrop_alpha=0.5)
    full = str(tmp_path / "full")
    train_classifier(small_config(tiny_bert, sst2_small, full, **settings))
    killed = str(tmp_path / "killed")
    with pytest.raises(TrainingInterrupted):
        train_classifier(small_config(tiny_bert, sst2_small, killed, **settings), crash_at_step=3)
    report = train_classifier(small_config(tiny_bert, sst2_small, killed, **settings))
    assert report["steps"] == 6
    a, b = _final_params(full), _final_params(killed)
    assert int(a["step"]) == int(b["step"]) == 6
    for x, y in zip(_flat(a), _flat(b), strict=True):
        np.testing.assert_array_equal(x, y)
    # and the run did learn something in between: the weights moved from the pretrained ones
    first = _flat(a["params"])
    assert any(not np.array_equal(x, y) for x, y in zip(first, _flat(a["ema"]), strict=True))


def test_classification_accumulates_gradients(tiny_bert, sst2_small):
    """Two micro-batches of 8 rows accumulated = the 16 rows in one batch: the same gradient sums and example count
    (dropout off so that both see the same function), and the accumulated update is the one-batch update."""
    import jax

    from jax_transformer.tasks.classification import build_model, classification_steps

    config = dataclasses.replace(small_config(tiny_bert, sst2_small, "unused", batch_size=8), classifier_dropout=0.0)
    model_config = dataclasses.replace(bert.bert_model_config(tiny_bert), dropout=0.0, attention_dropout=0.0)
    rng = np.random.default_rng(0)
    batch = {"ids": rng.integers(1000, 2000, (16, 8)).astype(np.int32),
             "labels": rng.integers(0, 2, 16).astype(np.int32), "weights": np.ones(16, np.float32)}  # fmt: skip
    halves = [{k: v[:8] for k, v in batch.items()}, {k: v[8:] for k, v in batch.items()}]
    model = build_model(model_config, 2, config)
    steps = classification_steps(config, model, total_steps=10)
    state = steps.init_state(nnx_params(model))
    step = state["step"]
    whole = steps.accumulate(steps.zero_accumulator(state["params"], batch), state["params"], batch, step, 0)
    acc = steps.zero_accumulator(state["params"], halves[0])
    for micro, half in enumerate(halves):
        acc = steps.accumulate(acc, state["params"], half, step, micro)
    assert float(acc[1]["examples"]) == float(whole[1]["examples"]) == 16.0
    np.testing.assert_allclose(float(acc[1]["loss"]), float(whole[1]["loss"]), rtol=1e-6)
    grads_whole, grads_acc = jax.tree.leaves(whole[0]), jax.tree.leaves(acc[0])
    largest = max(float(np.abs(g).max()) for g in grads_whole)
    assert largest > 1e-3  # a real gradient, not zeros
    for g, h in zip(grads_whole, grads_acc, strict=True):
        # relative to each parameter's gradient size; a parameter whose true gradient is 0 (e.g. the unused pooler)
        # holds only rounding noise, hence the floor at 1% of the largest gradient
        scale = max(float(np.abs(g).max()), 1e-2 * largest)
        assert float(np.abs(g - h).max()) <= 1e-5 * scale
    # the update from the accumulator sees the train step's averaged gradient on the whole batch
    _, one = steps.train_step(steps.init_state(nnx_params(model)), batch)
    state, two = steps.apply_accumulated(steps.init_state(nnx_params(model)), acc)
    assert int(state["step"]) == 1 and float(two["examples"]) == 16.0
    np.testing.assert_allclose(float(two["grad_norm"]), float(one["grad_norm"]), rtol=1e-5)


class _TinySteps:
    """The engine's steps of a tiny classifier with its initial parameters."""

    def __init__(self, steps, params):
        self.steps, self.params = steps, params
        self.train_step, self.eval_params = steps.train_step, steps.eval_params

    def init_state(self):
        return self.steps.init_state(self.params)


def _tiny_steps(tiny_bert, **train):
    """The engine's steps of the tiny BERT (2 layers) with the recipe's optimizer (through the classification task),
    and one fixed batch."""
    from jax_transformer.tasks.classification import build_model, classification_steps

    tcfg = ClassifyTrainConfig(**{"learning_rate": 1e-3, "warmup_ratio": 0.0, **train})
    config = ClassifyConfig(pretrained=tiny_bert, train=tcfg)
    model_config = bert.bert_model_config(tiny_bert)
    model = build_model(model_config, 2, config)
    steps = classification_steps(config, model, total_steps=10)
    rng = np.random.default_rng(0)
    batch = {"ids": rng.integers(1000, 2000, (4, 8)).astype(np.int32), "labels": np.array([0, 1, 1, 0], np.int32),
             "weights": np.ones(4, np.float32)}  # fmt: skip
    return _TinySteps(steps, nnx_params(model)), batch


def nnx_params(model):
    from flax import nnx

    return nnx.state(model, nnx.Param)


def _leaf(params, *names):
    for name in names:
        params = params[name]
    return np.asarray(params.value if hasattr(params, "value") else params)


@pytest.mark.parametrize("decay", [0.5, 0.8])
def test_layer_lr_decay_scales_each_layers_update_by_depth(tiny_bert, decay):
    import jax

    plain, batch = _tiny_steps(tiny_bert)
    decayed, _ = _tiny_steps(tiny_bert, layer_lr_decay=decay)
    before = jax.tree.map(np.array, plain.params)
    moved = {}
    for name, steps in (("plain", plain), ("decayed", decayed)):
        state = steps.init_state()
        for _ in range(2):  # the schedule's first learning rate is 0 (warmup from 0)
            state, _ = steps.train_step(state, batch)
        moved[name] = jax.tree.map(lambda a, b: np.asarray(a) - b, state["params"], before)
    # Adam's update is elementwise, so each parameter's step is the plain one times its depth's factor (2 layers):
    # head 1, layer 1 decay, layer 0 decay^2, embeddings decay^3
    for names, factor in ((("classifier", "kernel"), 1.0),
                          (("encoder", "layers", 1, "self_attn", "query", "kernel"), decay),
                          (("encoder", "layers", 0, "feed_forward", "linear1", "bias"), decay**2),
                          (("encoder", "embedding_norm", "scale"), decay**3),
                          (("token_embedding", "embedding"), decay**3)):  # fmt: skip
        np.testing.assert_allclose(  # atol: the rounding of fp32 (p + u) - p
            _leaf(moved["decayed"], *names), factor * _leaf(moved["plain"], *names), rtol=1e-3, atol=2e-7
        )
    assert np.abs(_leaf(moved["plain"], "encoder", "layers", 0, "self_attn", "key", "kernel")).max() > 0


def test_frozen_token_embeddings_keep_their_pretrained_values(tiny_bert):
    import jax

    steps, batch = _tiny_steps(tiny_bert, freeze_token_embeddings=True)
    before = jax.tree.map(np.array, steps.params)
    state = steps.init_state()
    for _ in range(2):  # the schedule's first learning rate is 0 (warmup from 0)
        state, _ = steps.train_step(state, batch)
    np.testing.assert_array_equal(_leaf(state["params"], "token_embedding", "embedding"),
                                  _leaf(before, "token_embedding", "embedding"))  # fmt: skip
    for names in (("encoder", "position_embedding", "embedding"),
                  ("encoder", "layers", 0, "self_attn", "key", "kernel"),
                  ("classifier", "kernel")):  # fmt: skip
        assert np.abs(_leaf(state["params"], *names) - _leaf(before, *names)).max() > 0, names


def test_ema_follows_the_weights_with_a_warming_decay(tiny_bert):
    import jax

    steps, batch = _tiny_steps(tiny_bert, ema_decay=0.9)
    state = steps.init_state()
    ema = jax.tree.map(np.array, state["params"])
    for step in range(4):
        state, _ = steps.train_step(state, batch)
        d = min(0.9, (1 + step) / (10 + step))  # 0.1, 0.18, 0.25, 0.31: the average follows closely at first
        ema = jax.tree.map(lambda e, p, d=d: e + (1 - d) * (np.asarray(p) - e), ema, state["params"])
    for names in (("classifier", "kernel"), ("encoder", "layers", 0, "self_attn", "out", "kernel")):
        np.testing.assert_allclose(_leaf(state["ema"], *names), _leaf(ema, *names), rtol=1e-5, atol=1e-7)
        assert not np.allclose(_leaf(state["ema"], *names), _leaf(state["params"], *names))
    assert steps.eval_params(state) is state["ema"]


def test_a_run_with_ema_keeps_and_reports_the_averaged_weights(tiny_bert, sst2_small, tmp_path):
    from jax_transformer.tasks.classification import Classifier, train_classifier

    run_dir = str(tmp_path / "ema")
    report = train_classifier(small_config(tiny_bert, sst2_small, run_dir, steps=3, eval_every=3,
                                           ema_decay=0.5, layer_lr_decay=0.7))  # fmt: skip
    valid = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl")) if '"valid"' in line]
    assert len(valid) == 1
    classifier = Classifier.load(run_dir)
    dataset, _ = cdata.load_dataset(os.path.join(sst2_small, "dev.tsv"), classifier.config.data,
                                    classifier.labels, classifier.tokenizer)  # fmt: skip
    assert classifier.evaluate(dataset)["accuracy"] == report["accuracy"] == valid[0]["accuracy"]
    # the other figure is what the raw (not averaged) weights of the same checkpoint give
    from flax import nnx

    from jax_transformer.train.checkpoint import Checkpointer

    checkpoints = Checkpointer(os.path.join(run_dir, "checkpoints"), read_only=True)
    nnx.replace_by_pure_dict(classifier.params, checkpoints.restore_arrays(classifier.step)["params"])
    assert classifier.evaluate(dataset)["accuracy"] == valid[0]["accuracy_without_ema"]


def test_bad_lr_decay_and_ema_values_are_refused():
    with pytest.raises(ConfigError, match="layer_lr_decay"):
        ClassifyTrainConfig(layer_lr_decay=0.0)
    with pytest.raises(ConfigError, match="ema_decay"):
        ClassifyTrainConfig(ema_decay=1.0)


def test_rdrop_adds_alpha_times_a_positive_symmetric_kl(tiny_bert):
    losses = []
    for alpha in (1.0, 2.0, 3.0):  # same weights, batch and dropout masks: only alpha changes
        steps, batch = _tiny_steps(tiny_bert, rdrop_alpha=alpha)
        _, metrics = steps.train_step(steps.init_state(), batch)
        losses.append(float(metrics["loss"]))
    kl = losses[1] - losses[0]
    assert kl > 1e-6  # the two dropout masks differ, so do the two predictions
    assert abs((losses[2] - losses[1]) - kl) < 1e-5 * max(1.0, abs(losses[0]))


def test_a_soup_is_the_mean_of_the_runs_weights_and_reads_like_a_run(trained_run, tiny_bert, sst2_small, tmp_path,
                                                                     capsys):  # fmt: skip
    from jax_transformer.cli import soup
    from jax_transformer.tasks.classification import Classifier, train_classifier
    from jax_transformer.train.checkpoint import Checkpointer

    other = str(tmp_path / "seed1")
    # Evaluated only after its second update: the first runs at warmup's learning rate 0, so a step-1 checkpoint holds
    # the pretrained encoder, and if both runs kept theirs (dev accuracy did not improve at step 2) they would be equal.
    config = small_config(tiny_bert, sst2_small, other, eval_every=2)
    config.seed = 1
    train_classifier(config)
    runs, out = [trained_run[0], other], str(tmp_path / "soup")
    assert soup.main([*runs, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "soup: dev accuracy" in printed and "ensemble of the 2 runs" in printed

    def best_params(run):
        checkpoints = Checkpointer(os.path.join(run, "checkpoints"), keep=1, read_only=True)
        return checkpoints.restore_arrays(checkpoints.select("best", best_or_latest=True))["params"]

    a, b = (best_params(run) for run in runs)
    souped = Classifier.load(out)
    names = ("encoder", "layers", 0, "self_attn", "out", "kernel")
    assert not np.allclose(_leaf(a, *names), _leaf(b, *names))  # two different runs went in
    for leaf in (("classifier", "kernel"), names):
        np.testing.assert_allclose(_leaf(souped.params, *leaf),
                                   (_leaf(a, *leaf) + _leaf(b, *leaf)) / 2, rtol=1e-6, atol=1e-7)  # fmt: skip
    report = json.load(open(os.path.join(out, "eval.json")))
    dev, _ = cdata.load_dataset(os.path.join(sst2_small, "dev.tsv"), souped.config.data, souped.labels,
                                souped.tokenizer)  # fmt: skip
    assert souped.evaluate(dev)["accuracy"] == report["accuracy"]

    assert soup.main([*runs, "--out", out]) == 1  # the soup is not overwritten
    assert "already exists and is not empty" in capsys.readouterr().err
    mine = tmp_path / "mine"  # nor is any other folder with files in it
    mine.mkdir()
    (mine / "config.json").write_text("my notes", encoding="utf-8")
    assert soup.main([*runs, "--out", str(mine)]) == 1
    assert (mine / "config.json").read_text(encoding="utf-8") == "my notes" and os.listdir(mine) == ["config.json"]
    odd = str(tmp_path / "odd")
    shutil.copytree(other, odd)
    with open(os.path.join(odd, "labels.json"), "w") as f:
        json.dump({"labels": ["a", "b"], "names": ["a", "b"]}, f)
    assert soup.main([trained_run[0], odd, "--out", str(tmp_path / "soup2")]) == 1
    assert "differ in labels.json" in capsys.readouterr().err
    assert soup.main([trained_run[0], "--out", str(tmp_path / "soup3")]) == 1
    assert "at least 2 runs" in capsys.readouterr().err


def test_classification_trains_on_an_8_device_mesh(tiny_bert, sst2_small, tmp_path):
    """Fine-tuning on 8 simulated devices (data 4 x model 2 with FSDP) gives the parameters one device gives, and a
    full run on the 8-device mesh trains, evaluates and reports (tests/classify_mesh_worker.py)."""
    import subprocess
    import sys

    worker = os.path.join(ROOT, "tests", "classify_mesh_worker.py")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, worker, tiny_bert, sst2_small, str(tmp_path)], check=True, env=env, timeout=600)
    with open(tmp_path / "result.json") as f:
        result = json.load(f)
    assert result["query_kernel_spec"] == "('data', 'model')"  # really sharded: FSDP rows, tensor-parallel heads
    assert result["max_diff"] < 1e-5, result["max_diff"]
    assert result["report"]["steps"] == 3 and result["report"]["examples"] == 64
    assert os.path.exists(tmp_path / "run" / "eval.json")
