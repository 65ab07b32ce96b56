"""Visualisation: attention weights are sown by the model's own forward pass, the plotted data equal the project's
functions, PNG files are written, and the `viz` command's subcommands and errors."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_transformer import viz
from jax_transformer.config import Config, DataConfig, TrainConfig, model_preset
from jax_transformer.model.transformer import Transformer, padding_mask, sinusoidal_positions
from jax_transformer.train.optimizer import learning_rate_schedule
from jax_transformer.train.run_log import read_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SRC = [5, 6, 7, 8, 9, 3, 0, 0]  # 6 real tokens (EOS = 3 last), then 2 padding
TGT = [2, 11, 12, 13, 14]  # decoder input: BOS first
SRC_TOKENS = ["▁A", "▁dog", "▁runs", "$x", "▁.", "</s>", "<pad>", "<pad>"]
TGT_TOKENS = ["<s>", "▁Ein", "▁Hund", "▁rennt", "▁."]


def assert_png(path):
    assert os.path.isfile(path), path
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == PNG_SIGNATURE and os.path.getsize(path) > 1000, path


def tiny_model(**options):
    config = model_preset("test", vocab_size=30, dropout=0.3, attention_dropout=0.2, **options)
    return Transformer(config, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def maps():
    return viz.attention_maps(tiny_model(), SRC, TGT)


def test_attention_shapes_rows_sum_to_one_and_masks(maps):
    assert maps["encoder_self"].shape == (2, 4, 8, 8)
    assert maps["decoder_self"].shape == (2, 4, 5, 5)
    assert maps["cross"].shape == (2, 4, 5, 8)
    for kind, weights in maps.items():
        assert weights.dtype == np.float32 and np.all(weights >= 0), kind
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5, err_msg=kind)  # over the unmasked keys
    for kind in ("encoder_self", "cross"):  # padding keys get no weight
        assert np.all(maps[kind][..., 6:] == 0.0), kind
        assert np.all(maps[kind][..., :6] > 0.0), kind
    future = np.triu(np.ones((5, 5), bool), k=1)
    assert np.all(maps["decoder_self"][..., future] == 0.0)  # no position sees a later one
    assert np.all(maps["decoder_self"][..., ~future] > 0.0)
    np.testing.assert_allclose(maps["decoder_self"][..., 0, 0], 1.0)  # BOS sees only itself


@pytest.mark.parametrize(
    "options",
    [{}, {"norm_position": "pre", "positional": "learned", "share_embeddings": False, "tie_output": False,
     "target_vocab_size": 40}],
)  # fmt: skip
def test_walk_reproduces_the_model_and_leaves_its_mode(options):
    model = tiny_model(**options)  # in training mode, with dropout: the walk must use an eval-mode copy
    maps, logits = viz.run_with_attention(model, jnp.array([SRC]), jnp.array(TGT))
    assert not model.encoder.dropout.deterministic  # the caller's model was not switched to eval mode
    model.eval()
    expected = np.asarray(model(jnp.array([SRC]), jnp.array([TGT]))[0])
    assert logits.shape == (5, model.config.tgt_vocab_size)
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    # The first encoder layer's weights are those of its own attention module on the embedded source.
    src = jnp.array([SRC])
    x = model.encoder.embed_positions(model.embed(model.source_embedding, src))
    layer = model.encoder.layers[0]
    h = layer.self_attn_norm(x) if model.config.norm_position == "pre" else x
    _, weights = layer.self_attn(h, h, padding_mask(src, 0))
    np.testing.assert_allclose(maps["encoder_self"][0], weights[0], atol=1e-6)


def test_sown_weights_are_eq1_recomputed():
    """The weights sown by the first encoder layer are softmax(Q K^T / sqrt(d_k)) over the unmasked keys, recomputed
    here in numpy from the module's own projections."""
    model = tiny_model()
    maps, _ = viz.run_with_attention(model, SRC, TGT)
    model.eval()
    src = jnp.array([SRC])
    x = model.encoder.embed_positions(model.embed(model.source_embedding, src))
    attn = model.encoder.layers[0].self_attn
    q, k = (np.asarray(attn.split_heads(proj(x))[0], np.float64) for proj in (attn.query, attn.key))  # (h, S, d_k)
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    scores = np.where(np.array(SRC) != 0, scores, -np.inf)
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(maps["encoder_self"][0], expected, atol=1e-5)


def test_masked_keys_get_no_weight_whatever_they_hold():
    """Perturbation: changing the ids at padded source positions (masked keys, still padding) or in the future of the
    target leaves every weight on the visible keys unchanged, and masked keys get weight exactly 0."""
    model = tiny_model()
    base, _ = viz.run_with_attention(model, SRC, TGT)
    src_perturbed = SRC[:6] + [0, 0]  # same padding mask, the real tokens unchanged
    tgt_perturbed = TGT[:3] + [20, 21]  # different future tokens
    other, _ = viz.run_with_attention(model, src_perturbed, tgt_perturbed)
    np.testing.assert_array_equal(other["encoder_self"], base["encoder_self"])
    np.testing.assert_allclose(other["decoder_self"][..., :3, :], base["decoder_self"][..., :3, :], atol=1e-6)
    np.testing.assert_allclose(other["cross"][..., :3, :], base["cross"][..., :3, :], atol=1e-6)
    assert np.all(other["cross"][..., 6:] == 0.0)


def test_sowing_is_off_unless_asked_and_leaves_no_state():
    """A model sows nothing by default (its nnx.split state, as the training steps take it, has no Intermediate),
    and `run_with_attention` leaves the caller's model without sown values or the flag set."""
    from jax_transformer.model.transformer import MultiHeadAttention

    model = tiny_model()
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    viz.run_with_attention(model, SRC, TGT)
    model(jnp.array([SRC]), jnp.array([TGT]))
    assert not jax.tree.leaves(nnx.state(model, nnx.Intermediate))
    assert all(not m.sow_weights for _, m in nnx.iter_graph(model) if isinstance(m, MultiHeadAttention))
    graphdef2, params2, rest2 = nnx.split(model, nnx.Param, ...)
    assert graphdef2 == graphdef
    assert jax.tree.structure(rest2) == jax.tree.structure(rest)

    @nnx.jit
    def forward(m, src, tgt):
        return m(src, tgt)

    forward(model, jnp.array([SRC]), jnp.array([TGT]))
    assert not jax.tree.leaves(nnx.state(model, nnx.Intermediate))


def test_walk_refuses_a_batch():
    with pytest.raises(ValueError, match="one non-empty sentence"):
        viz.attention_maps(tiny_model(), [SRC, SRC], [TGT, TGT])


def test_plot_attention_writes_one_png_per_kind(maps, tmp_path):
    written = viz.plot_attention(maps, SRC_TOKENS, TGT_TOKENS, str(tmp_path / "all"))
    assert {k: os.path.basename(p) for k, p in written.items()} == {
        "encoder_self": "encoder_self.png", "decoder_self": "decoder_self.png", "cross": "cross.png"
    }  # fmt: skip
    for path in written.values():
        assert_png(path)
    one = viz.plot_attention(maps, SRC_TOKENS, TGT_TOKENS, str(tmp_path / "one"), layer=-1)
    assert sorted(os.path.basename(p) for p in one.values()) == [
        "cross_layer1.png", "decoder_self_layer1.png", "encoder_self_layer1.png"
    ]  # fmt: skip
    for path in one.values():
        assert_png(path)
    with pytest.raises(ValueError, match="do not fit"):
        viz.plot_attention(maps, SRC_TOKENS[:-1], TGT_TOKENS, str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="out of range"):
        viz.plot_attention(maps, SRC_TOKENS, TGT_TOKENS, str(tmp_path / "bad"), layer=2)


@pytest.mark.parametrize("layout", ["interleaved", "concatenated"])
def test_positional_encoding_plot_is_the_model_table(layout, tmp_path):
    path = str(tmp_path / "positions.png")
    table = viz.plot_positional_encoding(50, 32, layout, path)
    np.testing.assert_array_equal(table, sinusoidal_positions(50, 32, layout))
    assert_png(path)


@pytest.mark.parametrize("schedule", ["noam", "cosine"])
def test_lr_schedule_plot_is_the_training_schedule(schedule, tmp_path):
    peak = 2.0 if schedule == "noam" else 1e-3
    train = TrainConfig(steps=5000, schedule=schedule, warmup_steps=400, learning_rate=peak)
    config = Config(name="t", model=model_preset("test", vocab_size=30), train=train)
    path = str(tmp_path / "schedule.png")
    steps, lrs = viz.plot_lr_schedule(config, path, points=300)
    assert steps[0] == 1 and steps[-1] == 5000 and np.all(np.diff(steps) > 0) and 400 in steps
    fn = learning_rate_schedule(train, 32)
    for i in (0, 17, len(steps) // 2, len(steps) - 1, int(np.where(steps == 400)[0][0])):
        assert lrs[i] == pytest.approx(float(fn(steps[i] - 1)), rel=1e-6)  # update n uses schedule(n - 1)
    dense = np.asarray(fn(jnp.arange(5000)))
    assert lrs.max() == pytest.approx(dense.max(), rel=1e-6)  # the peak at the end of the warmup is drawn
    assert steps[np.argmax(lrs)] == np.argmax(dense) + 1
    assert_png(path)


def write_metrics(run_dir, records):
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def test_training_curves_from_metrics_jsonl(tmp_path):
    run = str(tmp_path / "run")
    train = lambda step, time, loss: {"kind": "train", "step": step, "time": time, "loss": loss, "lr": step * 1e-4}
    records = [
        train(10, 60.0, 5.0), train(20, 120.0, 4.0), {"kind": "valid", "step": 20, "time": 130.0, "loss": 4.5,
        "bleu": 3.0}, train(30, 180.0, 3.5),  # interrupted here; the resumed run restarts from step 20 at time 0
        train(30, 50.0, 3.4), train(40, 110.0, 3.0),
        {"kind": "valid", "step": 40, "time": 120.0, "loss": 3.5, "bleu": 7.5}, {"kind": "valid", "step": 50,
        "time": 170.0, "loss": 3.3},  # a validation without BLEU
    ]  # fmt: skip
    write_metrics(run, records)
    path = str(tmp_path / "curves.png")
    series = viz.plot_training_curves(run, path)
    assert_png(path)
    np.testing.assert_array_equal(series["train_step"], [10, 20, 30, 40])
    np.testing.assert_allclose(series["train_loss"], [5.0, 4.0, 3.4, 3.0])  # repeated step 30: the latest record
    np.testing.assert_allclose(series["train_lr"], [1e-3, 2e-3, 3e-3, 4e-3])
    np.testing.assert_allclose(series["train_minutes"], np.array([60, 120, 180 + 50, 180 + 110]) / 60)
    np.testing.assert_array_equal(series["valid_step"], [20, 40, 50])
    np.testing.assert_allclose(series["valid_loss"], [4.5, 3.5, 3.3])
    np.testing.assert_allclose(series["valid_bleu"], [3.0, 7.5, np.nan])
    np.testing.assert_allclose(series["valid_minutes"], np.array([130, 180 + 120, 180 + 170]) / 60)


def test_training_curves_count_a_restart_at_each_start_record(tmp_path):
    """Every training process logs a "start" record first: a restart is counted there even when the new process's
    first record comes later on its own clock than the last one before it (which "time goes backwards" misses)."""
    run = str(tmp_path / "run")
    write_metrics(run, [
        {"kind": "start", "step": 0, "time": 0.0, "hardware": "cpu"}, {"kind": "train", "step": 10, "time": 30.0},
        {"kind": "start", "step": 10, "time": 0.0, "hardware": "cpu"}, {"kind": "train", "step": 20, "time": 45.0},
    ])  # fmt: skip
    series = viz.training_series(read_metrics(run))
    np.testing.assert_allclose(series["train_minutes"], np.array([30, 30 + 45]) / 60)


def test_confusion_matrix(tmp_path):
    matrix = np.array([[50, 3, 2], [4, 40, 6], [0, 7, 33]])
    path = str(tmp_path / "confusion.png")
    plotted = viz.plot_confusion_matrix(matrix, ["positive", "negative", "neutral"], path)
    np.testing.assert_array_equal(plotted, matrix)
    assert_png(path)
    with pytest.raises(ValueError, match="3 x 3"):
        viz.plot_confusion_matrix(matrix[:2], ["a", "b", "c"], path)


# ---------------------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A self-contained model directory: a random tiny model and a small sentencepiece vocabulary."""
    from jax_transformer.data.tokenizer import train_tokenizer
    from jax_transformer.decode.translator import Translator, save_model_dir

    root = tmp_path_factory.mktemp("viz_model")
    words = "a the dog cat runs sits on under red blue house tree man woman ball".split()
    rng = np.random.default_rng(0)
    sentences = [" ".join(rng.choice(words, size=rng.integers(3, 9))) for _ in range(300)]
    tokenizer = train_tokenizer(sentences, str(root / "spm.model"), DataConfig(vocab_size=50))
    model_config = model_preset("test", vocab_size=tokenizer.vocab_size, max_len=64)
    config = Config(name="viz", model=model_config)
    config = dataclasses.replace(config, decode=dataclasses.replace(config.decode, max_extra_len=6))
    translator = Translator(config, Transformer(model_config, rngs=nnx.Rngs(1)), tokenizer)
    save_model_dir(translator, str(root / "model"))
    return str(root / "model")


def test_cli_attention(model_dir, tmp_path, capsys):
    out = str(tmp_path / "greedy")
    assert viz.main(["attention", model_dir, "--src", "the dog runs", "--out", out]) == 0
    assert "greedy translation" in capsys.readouterr().out
    for name in ("encoder_self.png", "decoder_self.png", "cross.png"):
        assert_png(os.path.join(out, name))
    out = str(tmp_path / "given")
    assert (
        viz.main(["attention", model_dir, "--src", "a cat", "--tgt", "a red ball", "--out", out, "--layer", "1"]) == 0
    )
    assert sorted(os.listdir(out)) == ["cross_layer1.png", "decoder_self_layer1.png", "encoder_self_layer1.png"]


def test_cli_positions_schedule_curves(tmp_path, capsys):
    out = str(tmp_path / "positions.png")
    assert viz.main(["positions", "--d-model", "16", "--length", "20", "--layout", "concatenated", "--out", out]) == 0
    assert_png(out)
    out = str(tmp_path / "schedule.png")
    assert viz.main(["schedule", "--config", "configs/tiny.py", "--config.train.steps=50", "--out", out]) == 0
    assert "peak learning rate 0.001 at update 5" in capsys.readouterr().out
    assert_png(out)
    run = str(tmp_path / "run")
    write_metrics(run, [{"kind": "train", "step": 5, "time": 1.0, "loss": 3.0, "lr": 1e-3}])
    out = str(tmp_path / "curves.png")
    assert viz.main(["curves", run, "--out", out]) == 0
    assert_png(out)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["curves", "{tmp}", "--out", "{tmp}/c.png"], "has no training metrics"),
        (["curves", "{tmp}/missing", "--out", "{tmp}/c.png"], "is not a directory"),
        (["attention", "{tmp}", "--src", "a dog", "--out", "{tmp}/a"], "is not a run or model directory"),
        (["schedule", "--config", "{tmp}/none.py", "--out", "{tmp}/s.png"], "does not exist"),
        (["schedule", "--config", "configs/tiny.py", "--config.train.stepz=5", "--out", "{tmp}/s.png"], "stepz"),
        (["positions", "--d-model", "0", "--out", "{tmp}/p.png"], "must be positive"),
    ],
)
def test_cli_user_errors_are_one_line(argv, message, tmp_path, capsys):
    assert viz.main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cli_attention_user_errors(model_dir, tmp_path, capsys):
    assert viz.main(["attention", model_dir, "--src", " ", "--out", str(tmp_path)]) == 1
    assert "--src is empty" in capsys.readouterr().err
    argv = ["attention", model_dir, "--src", "a dog", "--tgt", "a cat", "--layer", "5", "--out", str(tmp_path)]
    assert viz.main(argv) == 1
    assert "--layer 5 is out of range" in capsys.readouterr().err
    assert not os.listdir(tmp_path)
    ct2 = tmp_path / "ct2"  # an `export --to ct2` folder: CTranslate2's weights, no attention to read
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(b"")
    (ct2 / "jax_transformer_config.json").write_text("{}")
    assert viz.main(["attention", str(ct2), "--src", "a dog", "--out", str(tmp_path / "maps")]) == 1
    assert "is a CTranslate2 model" in capsys.readouterr().err and not os.path.exists(tmp_path / "maps")


def test_cli_help_of_each_command(capsys):
    for command in ("attention", "positions", "schedule", "curves"):
        with pytest.raises(SystemExit) as exit_info:
            viz.main([command, "--help"])
        assert exit_info.value.code == 0
        assert "--out" in capsys.readouterr().out
