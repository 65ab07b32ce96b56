"""Decoding: the KV cache equals full recomputation, beam search, padding safety, averaging, the commands."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_transformer.config import model_preset
from jax_transformer.decode.search import beam_search, greedy_search, output_limits, top_k
from jax_transformer.model.transformer import Transformer
from jax_transformer.train.checkpoint import Checkpointer, average_params
from tests.copy_task import BOS, EOS, token_accuracy, train_copy_model
from tests.scripts import load_script


@pytest.mark.parametrize(
    "options",
    [{}, {"norm_position": "pre"}, {"positional": "learned"}, {"share_embeddings": False, "tie_output": False,
     "target_vocab_size": 40}, {"sinusoidal_layout": "concatenated", "activation": "gelu"}],
)  # fmt: skip
def test_cached_decode_step_equals_full_decode(options):
    model = Transformer(model_preset("test", vocab_size=50, **options), rngs=nnx.Rngs(0))
    model.eval()
    src = jnp.array([[5, 6, 7, 8, 3], [9, 10, 3, 0, 0]])
    tgt = jnp.array([[2, 11, 12, 13, 14, 15], [2, 16, 17, 18, 19, 20]])
    full = model(src, tgt)
    memory, src_mask = model.encode(src)
    cross, cache = model.cross_key_values(memory), model.init_cache(2, 8)
    stepped = []
    for i in range(tgt.shape[1]):
        logits, cache = model.decode_step(tgt[:, i], i, cache, cross, src_mask)
        stepped.append(logits)
    np.testing.assert_allclose(np.stack(stepped, 1), full, atol=1e-5)


@pytest.fixture(scope="module")
def copy_model():
    runner, state, batch = train_copy_model()
    assert token_accuracy(runner, state, batch) >= 0.99
    return runner.eval_model(state["params"]), batch


def _uncached_greedy(model, src, max_len):
    tgt = jnp.full((src.shape[0], 1), BOS)
    for _ in range(max_len):
        next_token = jnp.argmax(model(src, tgt)[:, -1], -1)
        tgt = jnp.concatenate([tgt, next_token[:, None]], 1)
    return np.asarray(tgt[:, 1:])


def test_cached_greedy_equals_uncached_greedy(copy_model):
    model, batch = copy_model
    src = batch["src"][:8]
    cached = np.asarray(greedy_search(model, src, 10, BOS, EOS))
    uncached = _uncached_greedy(model, src, 10)
    for row in range(8):  # equal up to and including the first EOS (greedy pads after it, uncached keeps going)
        end = list(cached[row]).index(EOS) + 1
        np.testing.assert_array_equal(cached[row, :end], uncached[row, :end])


def test_beam_size_one_equals_greedy(copy_model):
    model, batch = copy_model
    greedy = np.asarray(greedy_search(model, batch["src"], 10, BOS, EOS))
    beam, _ = beam_search(model, batch["src"], 1, 10, BOS, EOS, alpha=0.0)
    np.testing.assert_array_equal(greedy, np.asarray(beam))


@pytest.mark.parametrize("beam_size,alpha", [(2, 0.0), (4, 0.6), (5, 1.0)])
def test_beam_search_decodes_the_copy_task(copy_model, beam_size, alpha):
    model, batch = copy_model
    tokens, scores = beam_search(model, batch["src"], beam_size, 12, BOS, EOS, alpha)
    tokens = np.asarray(tokens)
    assert np.mean(np.all(tokens[:, :9] == batch["tgt_out"], axis=1)) >= 0.95
    assert np.all(tokens[:, 9:] == 0)  # padded after EOS
    assert np.all(np.asarray(scores) <= 0)


class _CountingSteps:
    """A model whose decode_step calls are counted as they run (inside the search's compiled loop)."""

    def __init__(self, model):
        self.model, self.steps = model, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def _tick(self):
        self.steps += 1

    def decode_step(self, *args):
        jax.debug.callback(self._tick)
        return self.model.decode_step(*args)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_waiting_for_k_finished_returns_the_same_hypotheses_in_more_steps(copy_model, alpha):
    """generate()'s stopping rule (wait for K finished, stop when no live beam can beat the K-th best) changes only
    how long the search runs: once no live beam can beat the best finished hypothesis, none ever will."""
    model, batch = copy_model
    runs = {}
    for wait in (False, True):
        counting = _CountingSteps(model)
        tokens, scores = beam_search(counting, batch["src"], 4, 16, BOS, EOS, alpha, wait_for_k_finished=wait)
        runs[wait] = (np.asarray(tokens), np.asarray(scores), counting.steps)
    np.testing.assert_array_equal(runs[True][0], runs[False][0])
    np.testing.assert_array_equal(runs[True][1], runs[False][1])
    assert 0 < runs[False][2] < runs[True][2], (runs[False][2], runs[True][2])


def _log_prob(model, src, tokens, limit):
    """log P(tokens | src) under teacher forcing, up to and including the first EOS. An EOS in the last allowed
    position is the search's forced stop and costs nothing (as when Hugging Face generate() hits max_length)."""
    tgt_in = np.concatenate([np.full((src.shape[0], 1), BOS), tokens[:, :-1]], 1)
    log_probs = jax.nn.log_softmax(model(src, jnp.asarray(tgt_in)), -1)
    picked = np.take_along_axis(np.asarray(log_probs), tokens[..., None], -1)[..., 0]
    ended = np.cumsum(tokens == EOS, axis=1) - (tokens == EOS) > 0  # positions after the first EOS
    picked[:, limit - 1] = np.where(tokens[:, limit - 1] == EOS, 0.0, picked[:, limit - 1])
    return np.where(ended, 0.0, picked).sum(1)


def test_beam_finds_at_least_the_greedy_probability():
    """On a random (untrained) model, whose choices are hard, beam 4 never scores below greedy (alpha 0)."""
    model = Transformer(model_preset("test", vocab_size=12), rngs=nnx.Rngs(3))
    model.eval()
    src = jnp.asarray(np.random.default_rng(0).integers(4, 12, size=(6, 5)))
    limits = jnp.full((6,), 6)
    greedy = np.asarray(greedy_search(model, src, 6, BOS, EOS, limits))
    beam, scores = beam_search(model, src, 4, 6, BOS, EOS, 0.0, limits)
    beam = np.asarray(beam)
    greedy_lp, beam_lp = _log_prob(model, src, greedy, 6), _log_prob(model, src, beam, 6)
    assert np.all(beam_lp >= greedy_lp - 1e-4), (beam_lp, greedy_lp)
    np.testing.assert_allclose(np.asarray(scores), beam_lp, atol=1e-4)  # the score is the log probability


@pytest.mark.parametrize("n", [100, 32000, 32003])
def test_chunked_top_k_equals_lax_top_k(n):
    """The search's two-pass top-k (used when the candidates are many) returns lax.top_k's values and indices, also
    with banned (-1e9) and -inf entries, a vocabulary not a multiple of the chunk, and the maxima in one chunk."""
    rng = np.random.default_rng(n)
    x = rng.normal(size=(6, n)).astype(np.float32)
    x[0, : n // 2] = -1.0e9  # half banned
    x[1, rng.integers(0, n, 50)] = -np.inf
    x[2, 7:15] += 100.0  # the 8 largest side by side in one chunk
    x[3, -3:] += 100.0  # the largest in the padded last chunk
    values, index = top_k(jnp.asarray(x), 8)
    want_values, want_index = jax.lax.top_k(jnp.asarray(x), 8)
    np.testing.assert_array_equal(np.asarray(values), np.asarray(want_values))
    np.testing.assert_array_equal(np.asarray(index), np.asarray(want_index))
    np.testing.assert_array_equal(np.take_along_axis(x, np.asarray(index), axis=1), np.asarray(values))


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_translations_do_not_depend_on_the_batch(copy_model, search):
    """A sentence decodes the same alone and padded into a batch with longer and shorter sentences."""
    model, batch = copy_model
    short = np.array([[7, 8, 9, 3, 0, 0, 0, 0, 0, 0, 0, 0]], np.int32)
    mixed = np.concatenate([np.pad(batch["src"][:3], ((0, 0), (0, 3))), short])  # (4, 12)

    def run(src):
        limits = output_limits(jnp.asarray(src), 0, max_extra_len=4, max_len=16)
        if search == "greedy":
            return np.asarray(greedy_search(model, src, 16, BOS, EOS, limits))
        return np.asarray(beam_search(model, src, 3, 16, BOS, EOS, 0.6, limits)[0])

    alone, together = run(short[:, :4]), run(mixed)
    np.testing.assert_array_equal(alone[0], together[3])
    assert np.all(together[3, 4 + 4 :] == 0)  # its own limit: 4 source tokens (EOS included) + 4


@pytest.mark.parametrize("cache_block", [1, 3, 8])
@pytest.mark.parametrize("options", [{}, {"min_len": 3, "no_repeat_ngram_size": 2}])
def test_growing_the_cache_in_blocks_changes_no_output(cache_block, options):
    """A cache that starts at `cache_block` positions and doubles gives the same tokens (and scores to float noise) as
    one allocated at max_len (an untrained model, so long outputs that cross every block boundary)."""
    model = Transformer(model_preset("test", vocab_size=30), rngs=nnx.Rngs(5))
    model.eval()
    src = jnp.asarray(np.random.default_rng(1).integers(4, 30, size=(5, 7)))
    limits = output_limits(src.at[3:, 4:].set(0), 0, max_extra_len=6, max_len=14)  # two shorter limits

    def searches(block):
        greedy = greedy_search(model, src, 14, BOS, EOS, limits, cache_block=block, **options)
        beam, scores = beam_search(model, src, 3, 14, BOS, EOS, 0.6, limits, cache_block=block, **options)
        return np.asarray(greedy), np.asarray(beam), np.asarray(scores)

    whole, blocks = searches(None), searches(cache_block)
    assert np.sum(whole[0] != 0) > 5 * 8  # outputs run past the first blocks
    np.testing.assert_array_equal(whole[0], blocks[0])  # greedy tokens
    np.testing.assert_array_equal(whole[1], blocks[1])  # beam tokens
    np.testing.assert_allclose(whole[2], blocks[2], atol=1e-5)  # scores: sums over fewer masked keys, last-bit noise


def test_average_params_is_the_mean(tmp_path):
    checkpoints = Checkpointer(str(tmp_path / "ckpt"), keep=5, keep_best=False)
    values = []
    for step in (1, 2, 3):
        params = {"layer": {"kernel": np.full((2, 3), float(step * step), np.float32)}, "bias": np.arange(3.0) * step}
        values.append(params)
        checkpoints.save(step, {"params": params, "step": np.int32(step)}, {"data": {}})
    averaged = average_params(checkpoints, [2, 3])
    np.testing.assert_allclose(averaged["layer"]["kernel"], np.full((2, 3), 6.5))
    np.testing.assert_allclose(averaged["bias"], np.arange(3.0) * 2.5)


def test_scores_report_the_length_ratio_and_brevity_penalty():
    """Output shorter than its references pays BLEU's brevity penalty exp(1 - ref/hyp); longer output pays none."""
    from jax_transformer.cli.evaluate import score

    references = ["Ein Hund läuft schnell durch den Schnee.", "Zwei Kinder spielen."]
    same = score(references, references, "de")
    assert same["lc_tok_bleu"] == 100.0 and same["length_ratio"] == 1.0 and same["brevity_penalty"] == 1.0
    # lc-tok tokens: 8 + 4 in the references; 5 + 4 in the short output, 10 + 4 in the long one
    short = score(["Ein Hund läuft schnell.", "Zwei Kinder spielen."], references, "de")
    assert short["length_ratio"] == round(9 / 12, 3) and short["brevity_penalty"] == round(np.exp(1 - 12 / 9), 3)
    long = score(["Ein Hund läuft schnell durch den tiefen weißen Schnee.", "Zwei Kinder spielen."], references, "de")
    assert long["length_ratio"] == round(14 / 12, 3) and long["brevity_penalty"] == 1.0


def test_translate_evaluate_average_commands(tmp_path, capsys):
    """The commands on a tiny trained run: outputs line up with inputs, scores print, averaging writes a model."""
    from jax_transformer.cli import average, evaluate, translate
    from jax_transformer.tasks.translation import train
    from tests.test_train import _config, _write_slice

    corpus = _write_slice(tmp_path / "corpus", n_train=300, n_valid=16)
    run_dir = tmp_path / "run"
    train(_config(corpus, run_dir, steps=8))
    src = tmp_path / "src.en"
    src.write_text("A man rides a bike.\n\nTwo dogs play in the snow.\n", encoding="utf-8")
    out = tmp_path / "out.de"
    assert translate.main([str(run_dir), "--input", str(src), "--output", str(out), "--beam", "2"]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3
    # a U+2028 or U+0085 inside a sentence is no line break: one output line per input line
    src.write_text("A man\u2028rides a bike.\nTwo dogs\x85play.\n", encoding="utf-8")
    assert translate.main([str(run_dir), "--input", str(src), "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8").count("\n") == 2
    src.write_text("A man rides a bike.\n\nTwo dogs play in the snow.\n", encoding="utf-8")
    # bad flags and paths: one line each, found before any decoding, nothing written
    capsys.readouterr()
    for argv, message in (
        (["--output", str(tmp_path / "no_such_folder" / "out.de")], "does not exist"),
        (["--output", str(tmp_path)], "is a directory"),
        (["--alpha", "-1"], "decode.alpha must be >= 0"),
        (["--max-extra-len", "0"], "decode.max_extra_len must be positive"),
        (["--beam", "0"], "decode.beam_size must be positive"),
    ):
        assert translate.main([str(run_dir), "--input", str(src), *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, (argv, err)
    assert translate.main([str(run_dir), "--input", str(tmp_path)]) == 1  # a folder given as the input file
    assert "cannot read it" in capsys.readouterr().err
    ref = os.path.join(corpus, "val.de")
    hyp_src = os.path.join(corpus, "val.en")
    assert evaluate.main([str(run_dir), "--src", hyp_src, "--ref", ref, "--beam", "1", "--json"]) == 0
    printed = capsys.readouterr().out
    assert '"lc_tok_bleu"' in printed and '"chrf"' in printed
    assert average.main([str(run_dir), "--last", "2", "--out", str(tmp_path / "avg")]) == 0
    assert translate.main([str(tmp_path / "avg"), "--input", str(src), "--output", str(tmp_path / "o2")]) == 0
    assert average.main([str(run_dir), "--last", "2", "--out", str(tmp_path / "avg")]) == 1  # never overwrites
    kept = Checkpointer(str(run_dir / "checkpoints"), read_only=True).all_steps()
    assert len(kept) >= 2
    capsys.readouterr()
    assert average.main([str(run_dir), "--last", "2", "--up-to", str(kept[-2]), "--out", str(tmp_path / "at")]) == 0
    assert f"averaged steps {', '.join(map(str, kept[-3:-1] if len(kept) > 2 else kept[:1]))} into" in (
        capsys.readouterr().out)  # fmt: skip
    assert average.main([str(run_dir), "--up-to", "7", "--out", str(tmp_path / "at7")]) == 1  # no such checkpoint
    assert "keeps no checkpoint of step 7" in capsys.readouterr().err
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine", encoding="utf-8")
    capsys.readouterr()
    assert average.main([str(run_dir), "--out", str(occupied)]) == 1  # the rule of export: --out new or empty
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not empty" in err and err.strip().count("\n") == 0, err
    assert os.listdir(occupied) == ["notes.txt"]
    assert translate.main([str(run_dir), "--step", "999", "--input", str(src)]) == 1

    # a damaged checkpoint (a truncated data file) is named, with the way out, in one line
    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged)
    latest = damaged / "checkpoints" / str(max(int(n) for n in os.listdir(damaged / "checkpoints") if n.isdigit()))
    walk = os.walk(latest / "state")
    data = [os.path.join(d, f) for d, _, names in walk for f in names if os.path.basename(d) == "d"]
    assert data  # the arrays' data files (orbax's ocdbt layout), of the checkpoint translate reads
    for path in data:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    capsys.readouterr()
    assert translate.main([str(damaged), "--input", str(src), "--output", str(tmp_path / "o3")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint ") and "damaged or incomplete" in err and "fix: " in err, err
    assert err.strip().count("\n") == 0 and not (tmp_path / "o3").exists()

    # scripts/tune_decode.py: one row per (beam, alpha); its greedy row equals `evaluate --split val --beam 1`
    tune_decode = load_script("tune_decode")
    rows_path = tmp_path / "tune.json"
    argv = [str(run_dir), "--beams", "1", "2", "--alphas", "0.6", "1.0", "--json-out", str(rows_path)]
    assert tune_decode.main(argv) == 0
    rows = json.loads(rows_path.read_text(encoding="utf-8"))["rows"]
    assert [(r["beam"], r["alpha"]) for r in rows] == [(1, 0.6), (1, 1.0), (2, 0.6), (2, 1.0)]
    capsys.readouterr()
    assert evaluate.main([str(run_dir), "--split", "val", "--beam", "1", "--json"]) == 0
    greedy = json.loads(capsys.readouterr().out)
    assert rows[0]["lc_tok_bleu"] == greedy["lc_tok_bleu"] and rows[0]["chrf"] == greedy["chrf"]
    assert tune_decode.main([str(run_dir), "--beams", "0"]) == 1
