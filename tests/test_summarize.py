"""Summarization: minimum length and n-gram blocking in the searches, ROUGE, source truncation, DialogSum reading."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from rouge_score import rouge_scorer

from jax_transformer.cli.evaluate import score_rouge, split_texts
from jax_transformer.config import ConfigError, DataConfig, DecodeConfig, UserError
from jax_transformer.data import pipeline as data
from jax_transformer.data.readers import read_sources_and_references
from jax_transformer.decode.search import beam_search, greedy_search, repeated_ngram_bans
from jax_transformer.metrics import rouge
from tests.copy_task import BOS, EOS, token_accuracy, train_copy_model
from tests.scripts import load_script

DIALOGSUM = Path(__file__).resolve().parents[1] / "data" / "dialogsum"


@pytest.fixture(scope="module")
def copy_model():
    runner, state, batch = train_copy_model()
    assert token_accuracy(runner, state, batch) >= 0.99
    return runner.eval_model(state["params"]), batch


def _search(model, src, search, max_len=16, **options):
    if search == "greedy":
        return np.asarray(greedy_search(model, src, max_len, BOS, EOS, **options))
    return np.asarray(beam_search(model, src, 3, max_len, BOS, EOS, 0.6, **options)[0])


def _first_eos(row) -> int:
    return list(row).index(EOS) if EOS in row else len(row)


def _repeated_ngrams(row, n: int) -> list[tuple]:
    tokens = [int(t) for t in row[: _first_eos(row)]]
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return [g for g in set(grams) if grams.count(g) > 1]


# ---------------------------------------------------------------------------------------------------------------------
# Decoding options
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_min_len_bans_eos_before_it(copy_model, search):
    model, batch = copy_model
    src = batch["src"][:8]  # 8 tokens + EOS: the model ends after 8 tokens
    assert all(_first_eos(row) == 8 for row in _search(model, src, search))
    longer = _search(model, src, search, min_len=11)
    assert all(_first_eos(row) >= 11 for row in longer)  # EOS came at position 8 without the option
    assert all(EOS in row for row in longer)  # and it still ends, within the limit
    # the length limit wins over min_len: a sentence at its limit must end
    limits = jnp.full((8,), 6, jnp.int32)
    forced = _search(model, src, search, limits=limits, min_len=11)
    assert all(_first_eos(row) == 5 for row in forced)


@pytest.mark.parametrize("search", ["greedy", "beam"])
@pytest.mark.parametrize("n", [1, 2])
def test_no_repeat_ngram_blocks_repeats_the_model_would_make(copy_model, search, n):
    model, batch = copy_model  # the copy model knows its training rows only: pick those that repeat an n-gram
    src = batch["src"][[i for i, row in enumerate(batch["src"]) if _repeated_ngrams(row, n)]]
    assert len(src) >= 2
    plain = _search(model, src, search)
    assert all(_repeated_ngrams(row, n) for row in plain)  # copied, repeats included
    blocked = _search(model, src, search, no_repeat_ngram_size=n)
    assert not any(_repeated_ngrams(row, n) for row in blocked), blocked
    assert all(EOS in row for row in blocked)


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_defaults_and_options_that_never_bind_leave_outputs_unchanged(copy_model, search):
    model, batch = copy_model
    src = batch["src"]
    plain = _search(model, src, search)
    assert np.array_equal(plain, _search(model, src, search, min_len=0, no_repeat_ngram_size=0))
    # sources without a repeated 4-gram, EOS never wanted first: the banning code must change nothing
    unique = [i for i, row in enumerate(src) if not _repeated_ngrams(row[:-1], 4)]
    assert len(unique) >= 16
    options = dict(min_len=1, no_repeat_ngram_size=4)
    np.testing.assert_array_equal(plain[unique], _search(model, src[unique], search, **options))


def test_repeated_ngram_bans_on_known_rows():
    seqs = jnp.array([[4, 5, 6, 4, 5, 0, 0, 0], [4, 5, 6, 7, 4, 5, 6, 0]])
    bans = np.asarray(repeated_ngram_bans(seqs, jnp.array(5), 3, 10))  # row 0 ends "4 5": 6 would repeat "4 5 6"
    assert np.flatnonzero(bans[0]).tolist() == [6]
    assert not bans[1].any()  # row 1's first 5 tokens end "7 4", which no earlier trigram starts with
    bans = np.asarray(repeated_ngram_bans(seqs, jnp.array(7), 3, 10))
    assert np.flatnonzero(bans[1]).tolist() == [7]  # row 1 ends "5 6": "5 6 7" was seen
    bans = np.asarray(repeated_ngram_bans(seqs, jnp.array(2), 3, 10))
    assert not bans.any()  # fewer than 3 tokens: nothing to repeat
    unigram = np.asarray(repeated_ngram_bans(seqs, jnp.array(3), 1, 10))
    assert np.flatnonzero(unigram[0]).tolist() == [4, 5, 6]  # n=1: every token produced so far


def test_decode_config_checks_the_options():
    with pytest.raises(ConfigError, match="decode.min_len"):
        DecodeConfig(min_len=-1)
    with pytest.raises(ConfigError, match="decode.no_repeat_ngram_size"):
        DecodeConfig(no_repeat_ngram_size=-2)
    with pytest.raises(ConfigError, match="decode.metric"):
        DecodeConfig(metric="meteor")


# ---------------------------------------------------------------------------------------------------------------------
# ROUGE
# ---------------------------------------------------------------------------------------------------------------------


def test_rouge_hand_computed():
    # unigrams: hyp {the, cat, sat}, ref {the, cat}: P 2/3, R 1, F 0.8; bigrams: "the cat" of 2 and 1: P 1/2, R 1
    scores = rouge(["the cat sat"], ["the cat"])
    assert scores["rouge1"] == pytest.approx(80.0)
    assert scores["rouge2"] == pytest.approx(100 * 2 * 0.5 / 1.5)
    assert scores["rougeL"] == pytest.approx(80.0)
    # lowercased and stemmed: {cat, sat} vs {the, cat, sit}: P 1/2, R 1/3, F 0.4
    assert rouge(["Cats SAT!"], ["the cat sits"])["rouge1"] == pytest.approx(40.0)


def test_rouge_multi_reference_max_mean_and_first_against_rouge_score():
    hyps = ["#Person1# asks #Person2# to type a memo for all staff.", "They will meet at the station tomorrow."]
    refs = [
        ["#Person1# dictates a memo to #Person2# for all employees.", "A memo for the staff is typed.", "no overlap"],
        ["They meet tomorrow at the station.", "#Person2# will see #Person1# at the train station tomorrow."],
    ]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for key in ("rouge1", "rouge2", "rougeL"):
        best = np.mean([scorer.score_multi(r, h)[key].fmeasure for h, r in zip(hyps, refs, strict=True)])
        per_ref = [[scorer.score(t, h)[key].fmeasure for t in r] for h, r in zip(hyps, refs, strict=True)]
        mean = np.mean([np.mean(values) for values in per_ref])
        assert rouge(hyps, refs, "max")[key] == pytest.approx(100 * best)
        assert rouge(hyps, refs, "mean")[key] == pytest.approx(100 * mean)
        first = np.mean([scorer.score(r[0], h)[key].fmeasure for h, r in zip(hyps, refs, strict=True)])
        assert rouge(hyps, refs, "first")[key] == pytest.approx(100 * first)
        assert best > mean  # the conventions differ here, so the test tells them apart
    result = score_rouge(hyps, refs, "max")
    assert result["rouge1"] == round(rouge(hyps, refs, "max")["rouge1"], 2)
    assert result["mean_over_references"]["rouge1"] == round(rouge(hyps, refs, "mean")["rouge1"], 2)
    assert result["first_over_references"]["rouge1"] == round(rouge(hyps, refs, "first")["rouge1"], 2)
    with pytest.raises(UserError, match="align"):
        rouge(hyps, refs[:1])


# ---------------------------------------------------------------------------------------------------------------------
# Source truncation and DialogSum
# ---------------------------------------------------------------------------------------------------------------------


class _WordTokenizer:
    """Stand-in tokenizer: one id per whitespace-separated word."""

    eos_id = EOS

    def encode(self, texts):
        return [[4 + len(word) for word in text.split()] for text in texts]


def test_source_truncation_keeps_pairs_and_counts_them():
    pairs = [("a " * 10, "x y"), ("b " * 3, "x"), ("c " * 30, "y " * 12), ("d " * 5, "z")]
    plain = data.encode_examples(pairs, _WordTokenizer(), max_len=8)
    assert (len(plain.examples), plain.dropped, plain.truncated) == (2, 2, 0)  # without a limit long ones are dropped
    cut = data.encode_examples(pairs, _WordTokenizer(), max_len=8, max_source_len=6)
    assert (len(cut.examples), cut.dropped, cut.truncated) == (3, 1, 1)  # the third has a too long target
    assert [len(s) for s, _ in cut.examples] == [6, 4, 6]
    assert all(s[-1] == EOS for s, _ in cut.examples)
    assert data.encode_pairs(pairs, _WordTokenizer(), 8)[1] == 2  # the old interface is unchanged
    assert data.truncate_source([7] * 9, 6, EOS) == ([7] * 5, True)
    assert data.truncate_source([7] * 5, 6, EOS) == ([7] * 5, False)
    assert data.truncate_source([7] * 9, 0, EOS) == ([7] * 9, False)


def test_data_config_checks_truncation_and_references():
    with pytest.raises(ConfigError, match="max_source_len"):
        DataConfig(max_len=100, max_source_len=200)
    with pytest.raises(ConfigError, match="references_field"):
        DataConfig(format="files", references_field="references")


def _dialogsum(tmp_path, **kwargs) -> DataConfig:
    fields = dict(format="jsonl", src_field="document", tgt_field="summary", cache_dir=str(tmp_path / "cache"))
    return DataConfig(path=str(DIALOGSUM), **{**fields, **kwargs})


def test_dialogsum_jsonl_is_bundled_and_read_with_configured_fields(tmp_path):
    import gzip
    import json

    with gzip.open(DIALOGSUM / "val.jsonl.gz", "rt", encoding="utf-8") as f:
        first = json.loads(f.readline())
    pairs = data.load_split(_dialogsum(tmp_path), "val")  # val.jsonl.gz through the TFDS builder
    assert len(pairs) == 500
    assert pairs[0] == (first["document"], first["summary"])
    assert "\n#Person2#:" in pairs[0][0]  # turns keep their line breaks
    topics = data.load_split(_dialogsum(tmp_path, tgt_field="topic"), "val")  # any field
    assert topics[0][1] == first["topic"]

    sources, references = read_sources_and_references(_dialogsum(tmp_path, references_field="references"), "test")
    assert len(sources) == 500 and all(len(r) == 3 for r in references)
    assert split_texts(_dialogsum(tmp_path), "test", None)[1][0] == [references[0][0]]  # summary = summary1
    with pytest.raises(UserError, match="'topic' is not a non-empty list"):
        read_sources_and_references(_dialogsum(tmp_path, references_field="topic"), "val")
    with pytest.raises(UserError, match="missing file"):
        split_texts(_dialogsum(tmp_path), "dev", None)


def test_summarization_run_end_to_end(tmp_path, capsys):
    """A tiny run on a DialogSum slice: truncated sources, validation ROUGE in metrics.jsonl, then the evaluate
    command on the three-reference test split with beam search, min_len and n-gram blocking."""
    import gzip
    import json

    from jax_transformer.cli import evaluate
    from jax_transformer.config import Config, TrainConfig, model_preset
    from jax_transformer.tasks.translation import train

    corpus = tmp_path / "dialogsum"
    corpus.mkdir()
    for split, n in (("train", 200), ("val", 8), ("test", 6)):
        with gzip.open(DIALOGSUM / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
            lines = [next(f) for _ in range(n)]
        (corpus / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
    data_cfg = _dialogsum(tmp_path, references_field="references", test_split="test", vocab_size=300, max_len=64,
                          max_source_len=48, max_tokens=512, length_bucket_step=16, min_bucket_batches=2)  # fmt: skip
    data_cfg.path = str(corpus)
    config = Config(
        name="s", run_dir=str(tmp_path / "run"), model=model_preset("test", max_len=128), data=data_cfg,
        train=TrainConfig(steps=4, schedule="constant", learning_rate=1e-3, warmup_steps=1, log_every=2, eval_every=4,
                          save_every=4, best_metric="loss"),
        decode=DecodeConfig(beam_size=2, max_extra_len=8, metric="rouge"),
    )  # fmt: skip
    train(config)
    assert "sources cut to data.max_source_len=48 tokens" in capsys.readouterr().err
    valid = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl") if '"valid"' in line]
    assert {"loss", "rouge1", "rouge2", "rougeL"} <= set(valid[-1]) and "bleu" not in valid[-1]
    args = [str(tmp_path / "run"), "--split", "test", "--json", "--min-len", "3", "--no-repeat-ngram", "2"]
    assert evaluate.main([*args, "--output", str(tmp_path / "hyp.txt")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["signature"].endswith("refs/example 3") and result["multi_ref"] == "max"
    assert 0 < result["truncated_sources"] <= 6  # dialogues are longer than 48 tokens
    assert result["rouge1"] >= result["mean_over_references"]["rouge1"]
    assert len((tmp_path / "hyp.txt").read_text(encoding="utf-8").splitlines()) == 6
    assert evaluate.main([str(tmp_path / "run"), "--split", "nosuch"]) == 1  # one line, no traceback
    assert "missing file" in capsys.readouterr().err

    # scripts/tune_decode.py scores a summarization run with its decode.metric: ROUGE, as `evaluate` does
    tune_decode = load_script("tune_decode")
    rows_path = tmp_path / "tune.json"
    assert tune_decode.main([str(tmp_path / "run"), "--beams", "2", "--alphas", "0.0", "--split", "test",
                             "--json-out", str(rows_path)]) == 0  # fmt: skip
    row = json.loads(rows_path.read_text(encoding="utf-8"))["rows"][0]
    capsys.readouterr()
    assert evaluate.main([str(tmp_path / "run"), "--split", "test", "--json", "--alpha", "0.0"]) == 0
    assert row["rouge1"] == json.loads(capsys.readouterr().out)["rouge1"] and "lc_tok_bleu" not in row
