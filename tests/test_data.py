"""Data pipeline: TFDS reading of local files and catalog datasets, input validation, tokenizer reuse, encoding,
token-budget batching (§5.1), deterministic shuffling and exact resume."""

import collections
import dataclasses
import gzip
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jax_transformer.config import ConfigError, DataConfig, UserError
from jax_transformer.data import pipeline as data
from jax_transformer.data.stream import BucketStream, pair_features
from jax_transformer.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

MULTI30K = Path(__file__).resolve().parents[1] / "data" / "multi30k"
PAIRS = [("A dog runs.", "Ein Hund rennt."), ("Two cats sit — quietly\u2028.", "Zwei Katzen sitzen."), ("Hi", "Hallo")]


def write(path: Path, lines: list[str], gz: bool = False) -> Path:
    text = "".join(line + "\n" for line in lines).encode("utf-8")
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(text) if gz else text)
    return path


def config(tmp_path: Path, **kwargs) -> DataConfig:
    return DataConfig(path=str(tmp_path / "corpus"), cache_dir=str(tmp_path / "cache"), **kwargs)


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# Reading through TFDS
# ---------------------------------------------------------------------------------------------------------------------


def test_files_plain_and_gzipped_through_tfds_builder(tmp_path, corpus):
    write(corpus / "train.en", [s for s, _ in PAIRS])
    write(corpus / "train.de", [t for _, t in PAIRS], gz=True)
    cfg = config(tmp_path)
    assert data.load_split(cfg, "train") == PAIRS  # order kept, U+2028 inside a line is not a line break
    prepared = list((tmp_path / "cache" / "local_parallel_text").iterdir())
    assert len(prepared) == 1 and list(prepared[0].glob("*/*.array_record*"))
    assert data.load_split(cfg, "train") == PAIRS  # read from the cache
    assert len(list((tmp_path / "cache" / "local_parallel_text").iterdir())) == 1
    # swapped languages read the same files the other way round
    assert data.load_split(config(tmp_path, src_lang="de", tgt_lang="en"), "train") == [(t, s) for s, t in PAIRS]
    assert "tensorflow" not in sys.modules


def test_changed_files_are_prepared_again(tmp_path, corpus):
    write(corpus / "val.en", ["one"])
    write(corpus / "val.de", ["eins"])
    cfg = config(tmp_path)
    assert data.load_split(cfg, "val") == [("one", "eins")]
    write(corpus / "val.en", ["one", "two"])
    write(corpus / "val.de", ["eins", "zwei"])
    assert data.load_split(cfg, "val") == [("one", "eins"), ("two", "zwei")]
    cache = tmp_path / "cache" / "local_parallel_text"
    assert len(list(cache.iterdir())) == 2
    # by content: the same bytes written again (a new modification time), or the files copied elsewhere, are not new
    write(corpus / "val.en", ["one", "two"])
    copy = tmp_path / "copy"
    shutil.copytree(corpus, copy)
    copied = dataclasses.replace(cfg, path=str(copy))
    assert data.load_split(copied, "val") == [("one", "eins"), ("two", "zwei")]
    assert data.open_split(cfg, "val").identity == data.open_split(copied, "val").identity
    assert len(list(cache.iterdir())) == 2


def test_a_large_split_is_prepared_in_shards_read_as_one(tmp_path, corpus, monkeypatch):
    monkeypatch.setattr(data, "SHARD_RECORDS", 3)  # a random read costs a fixed amount per record of its file
    pairs = [(f"source {i}", f"target {i}") for i in range(8)]
    write(corpus / "train.en", [s for s, _ in pairs])
    write(corpus / "train.de", [t for _, t in pairs])
    split = data.open_split(config(tmp_path), "train")
    files = sorted(p.name for p in (tmp_path / "cache").rglob("*.array_record*"))
    assert [f[-14:] for f in files] == ["00000-of-00003", "00001-of-00003", "00002-of-00003"]
    assert len(split) == 8 and split.read_all() == pairs
    assert split.__getitems__([7, 0, 4, 3]) == [pairs[7], pairs[0], pairs[4], pairs[3]]  # across the shards


@pytest.mark.parametrize("fields", [("", ""), ("2", "0")])
def test_tsv(tmp_path, corpus, fields):
    if fields[0]:  # column indices: no header
        write(corpus / "train.tsv", [f"{t}\tx\t{s}" for s, t in PAIRS], gz=True)
    else:  # column names from the header
        write(corpus / "train.tsv", ["id\ten\tde", *[f"{i}\t{s}\t{t}" for i, (s, t) in enumerate(PAIRS)]], gz=True)
    cfg = config(tmp_path, format="tsv", src_field=fields[0], tgt_field=fields[1])
    assert data.load_split(cfg, "train") == PAIRS


def test_jsonl_flat_and_nested_fields(tmp_path, corpus):
    write(corpus / "train.jsonl", [json.dumps({"en": s, "de": t}) for s, t in PAIRS])
    write(corpus / "test.jsonl", [json.dumps({"translation": {"en": s, "de": t}}) for s, t in PAIRS])
    assert data.load_split(config(tmp_path, format="jsonl"), "train") == PAIRS
    nested = config(tmp_path, format="jsonl", src_field="translation.en", tgt_field="translation.de")
    assert data.load_split(nested, "test") == PAIRS


def test_multi30k_is_bundled_and_readable(tmp_path):
    pairs = data.load_split(DataConfig(path=str(MULTI30K), cache_dir=str(tmp_path)), "val")
    assert len(pairs) == 1014 and pairs[0][0].startswith("A group of men")


class JtTestTranslate(tfds.core.GeneratorBasedBuilder):
    """A stand-in for a catalog dataset such as wmt14_translate (registered by name, prepared in a data dir)."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = None

    def _info(self):
        features = tfds.features.Translation(languages=["de", "en"])
        return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(PAIRS + [("", "leer")]),
            "validation": self._generate_examples(PAIRS[:1]),
        }

    def _generate_examples(self, pairs):
        for i, (en, de) in enumerate(pairs):
            yield i, {"en": en, "de": de}


def test_tfds_catalog_dataset_by_name(tmp_path):
    cfg = DataConfig(format="tfds", tfds_name="jt_test_translate", train_split="train")
    with pytest.raises(UserError, match=r"not prepared in .*fix: prepare it once with `tfds build jt_test_translate"):
        data.load_split(cfg, "train", data_dir=str(tmp_path))
    JtTestTranslate(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    assert data.load_split(cfg, "train", data_dir=str(tmp_path)) == PAIRS  # the pair with an empty side is skipped
    reverse = DataConfig(format="tfds", tfds_name="jt_test_translate", src_lang="de", tgt_lang="en")
    assert data.load_split(reverse, "train", data_dir=str(tmp_path))[0] == (PAIRS[0][1], PAIRS[0][0])
    with pytest.raises(UserError, match=r"no split 'dev' \(it has: .*train.*fix:"):
        data.load_split(cfg, "dev", data_dir=str(tmp_path))
    wrong_field = DataConfig(format="tfds", tfds_name="jt_test_translate", src_lang="fr")
    with pytest.raises(UserError, match=r"example 0: no text field 'fr' \(found: de, en\); fix:"):
        data.load_split(wrong_field, "train", data_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"unknown TFDS dataset 'no_such_dataset_xyz'.*fix:"):
        data.load_split(DataConfig(format="tfds", tfds_name="no_such_dataset_xyz"), "train", data_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: one UserError naming file, line and fix
# ---------------------------------------------------------------------------------------------------------------------


def bad_files(corpus: Path, case: str) -> tuple[str, str]:
    """Write a broken corpus for `case`; return (config format, expected message regex)."""
    en, de = ["a", "b", "c"], ["x", "y", "z"]
    if case == "missing file":
        write(corpus / "train.en", en)
        return "files", r"missing file .*corpus/train\.de\[\.gz\]; fix:"
    if case == "missing folder":
        corpus.rmdir()
        return "files", r"data folder .*corpus does not exist; fix: set data\.path"
    if case == "line counts":
        write(corpus / "train.en", en)
        write(corpus / "train.de", de[:2], gz=True)
        return "files", r"train\.en has 3 lines but .*train\.de\.gz has 2 \(.*\.gz ends first, at line 3\).*fix:"
    if case == "empty line":
        write(corpus / "train.en", en)
        write(corpus / "train.de", ["x", "  ", "z"])
        return "files", r"train\.de:2: empty line; fix:"
    if case == "invalid utf-8":
        write(corpus / "train.en", en)
        (corpus / "train.de").write_bytes(b"x\ny\nZ\xfcrich\n")
        return "files", r"train\.de:3: invalid UTF-8 \(byte 0xfc\); fix: convert the file to UTF-8"
    if case == "over-long line":
        write(corpus / "train.en", ["a", "b " * data.MAX_LINE_CHARS, "c"])
        write(corpus / "train.de", de)
        return "files", r"train\.en:2: a line of \d+ characters .*fix: put one sentence per line"
    if case == "bad gzip":
        write(corpus / "train.en", en)
        (corpus / "train.de.gz").write_bytes(b"not gzip")
        return "files", r"train\.de\.gz: cannot read it .*fix:"
    if case == "tsv columns":
        write(corpus / "train.tsv", ["en\tde", "a\tx", "b", "c\tz"])
        return "tsv", r"train\.tsv:3: 1 tab-separated column\(s\), need 2; fix:"
    if case == "tsv header":
        write(corpus / "train.tsv", ["english\tgerman", "a\tx"])
        return "tsv", r"train\.tsv:1: no column 'en' in the header \['english', 'german'\]; fix: set data\.src_field"
    if case == "tsv empty cell":
        write(corpus / "train.tsv", ["en\tde", "a\tx", "b\t "])
        return "tsv", r"train\.tsv:3: empty line; fix:"
    if case == "jsonl syntax":
        write(corpus / "train.jsonl", ['{"en": "a", "de": "x"}', '{"en": "b", "de": }'])
        return "jsonl", r"train\.jsonl:2: invalid JSON \(.*\); fix:"
    if case == "jsonl field":
        write(corpus / "train.jsonl", ['{"en": "a", "de": "x"}', '{"en": "b", "german": "y"}'])
        return "jsonl", r"train\.jsonl:2: no text field 'de' \(found: en, german\); fix: set data\.src_field"
    raise AssertionError(case)


CASES = ["missing file", "missing folder", "line counts", "empty line", "invalid utf-8", "over-long line",
         "bad gzip", "tsv columns", "tsv header", "tsv empty cell", "jsonl syntax", "jsonl field"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_input_names_file_line_and_fix(tmp_path, corpus, case):
    fmt, pattern = bad_files(corpus, case)
    with pytest.raises(UserError, match=pattern) as error:
        data.load_split(config(tmp_path, format=fmt), "train")
    assert "\n" not in str(error.value)  # one line
    cache = tmp_path / "cache" / "local_parallel_text"
    assert not cache.exists() or not list(cache.glob("*/1.0.0"))  # nothing half-prepared is left as valid


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer reuse and encoding
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multi30k(tmp_path_factory) -> tuple[list[tuple[str, str]], Tokenizer]:
    """The first 6000 pairs of Multi30k's training split (read through TFDS) and a 2000-piece vocabulary."""
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / "corpus").mkdir()
    for lang in ("en", "de"):
        with gzip.open(MULTI30K / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
            write(run_dir / "corpus" / f"train.{lang}", [next(f).rstrip("\n") for _ in range(6000)])
    cfg = DataConfig(path=str(run_dir / "corpus"), cache_dir=str(run_dir / "cache"), vocab_size=2000)
    pairs = data.load_split(cfg, "train")
    assert len(pairs) == 6000
    return pairs, data.get_tokenizer(cfg, str(run_dir), train_pairs=pairs)


def test_get_tokenizer_trains_then_reuses_run_copy(tmp_path, multi30k):
    pairs, _ = multi30k
    cfg = DataConfig(vocab_size=500, spm_max_sentences=3000, spm_model_type="bpe")
    tokenizer = data.get_tokenizer(cfg, str(tmp_path / "run"), train_pairs=pairs[:2000])
    model = tmp_path / "run" / "spm.model"
    assert model.is_file() and tokenizer.vocab_size == 500
    stamp = model.stat().st_mtime_ns
    (tmp_path / "run" / "config.json").write_text("{}")  # a started run: its vocabulary is its own from now on
    again = data.get_tokenizer(DataConfig(vocab_size=999, path="/nonexistent"), str(tmp_path / "run"))  # resume
    assert again.vocab_size == 500 and model.stat().st_mtime_ns == stamp
    copied = data.get_tokenizer(DataConfig(spm_model=str(model)), str(tmp_path / "other"))  # a given model is copied
    assert (tmp_path / "other" / "spm.model").read_bytes() == model.read_bytes() and copied.vocab_size == 500
    # the vocabulary of an attempt that never started (no config.json) is not reused: the settings may differ now
    (tmp_path / "run" / "config.json").unlink()
    remade = data.get_tokenizer(dataclasses.replace(cfg, vocab_size=400), str(tmp_path / "run"), pairs[:2000])
    assert remade.vocab_size == 400


def test_a_vocabulary_trained_from_a_prepared_split_is_cached_by_its_content(tmp_path, corpus, caplog):
    write(corpus / "train.en", [f"the {w} house number {i}" for i, w in enumerate(["red", "big", "old"] * 30)])
    write(corpus / "train.de", [f"das {w} haus nummer {i}" for i, w in enumerate(["rote", "große", "alte"] * 30)])
    cfg = dataclasses.replace(config(tmp_path), vocab_size=40)
    first = data.get_tokenizer(cfg, str(tmp_path / "run1"), source=data.open_split(cfg, "train"))
    with caplog.at_level("INFO", logger="jax_transformer.data.pipeline"):
        second = data.get_tokenizer(cfg, str(tmp_path / "run2"))  # another run on the same data
    assert "vocabulary from the cache" in caplog.text
    assert (tmp_path / "run2" / "spm.model").read_bytes() == (tmp_path / "run1" / "spm.model").read_bytes()
    assert second.vocab_size == first.vocab_size
    caplog.clear()
    with caplog.at_level("INFO", logger="jax_transformer.data.pipeline"):
        data.get_tokenizer(dataclasses.replace(cfg, vocab_size=45), str(tmp_path / "run3"))  # other settings
        write(corpus / "train.de", [f"das {w} haus nummer {i}" for i, w in enumerate(["rote", "große", "neue"] * 30)])
        data.get_tokenizer(cfg, str(tmp_path / "run4"))  # other data
    assert "vocabulary from the cache" not in caplog.text and caplog.text.count("training a") == 2


def test_encode_pairs_appends_eos_and_counts_drops(multi30k):
    pairs, tokenizer = multi30k
    examples, dropped = data.encode_pairs(pairs[:3], tokenizer, max_len=None)
    assert dropped == 0 and len(examples) == 3
    for (src, tgt), (source, target) in zip(examples, pairs[:3], strict=True):
        assert src.dtype == np.int32 and src[-1] == EOS_ID and tgt[-1] == EOS_ID
        assert tokenizer.decode([src, tgt]) == [source, target]
    lengths = [max(len(s), len(t)) for s, t in examples]
    limit = sorted(lengths)[1]  # exactly one pair is longer (EOS included)
    kept, dropped = data.encode_pairs(pairs[:3], tokenizer, max_len=limit)
    assert dropped == sum(n > limit for n in lengths) == 1 and len(kept) == 2


# ---------------------------------------------------------------------------------------------------------------------
# Batching (§5.1)
# ---------------------------------------------------------------------------------------------------------------------


def synthetic(n: int = 700, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Examples whose first source token is unique (i + 10), so every row can be traced back to its example."""
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n):
        src_len, tgt_len = rng.integers(2, 40), rng.integers(2, 45)
        src = np.r_[i + 10, rng.integers(10, 50, src_len - 2), EOS_ID].astype(np.int32)
        examples.append((src, np.r_[rng.integers(10, 50, tgt_len - 1), EOS_ID].astype(np.int32)))
    return examples


def example_ids(batches) -> list[int]:
    return [int(row[0]) - 10 for batch in batches for row in batch["src"] if row[0] != PAD_ID]


def test_batches_respect_budget_shapes_and_layout():
    examples = synthetic()
    stream = BucketStream(examples, max_tokens=256, length_bucket_step=8, seed=1)
    stats = stream.stats()
    shapes, batches = set(), take_epoch(stream)
    assert len(batches) == stats["batches"] and stats["examples"] == len(examples)
    for batch in batches:
        rows, src_len = batch["src"].shape
        tgt_len = batch["tgt_in"].shape[1]
        assert rows * max(src_len, tgt_len) <= 256 and src_len % 8 == 0 and tgt_len % 8 == 0
        assert all(a.dtype == np.int32 for a in batch.values()) and batch["tgt_out"].shape == (rows, tgt_len)
        assert set(batch) == {"src", "tgt_in", "tgt_out"}
        shapes.add((rows, src_len, tgt_len))
        for src, tgt_in, tgt_out in zip(batch["src"], batch["tgt_in"], batch["tgt_out"], strict=True):
            if src[0] == PAD_ID:  # a padding row is all padding
                assert not src.any() and not tgt_in.any() and not tgt_out.any()
                continue
            source, target = examples[src[0] - 10]
            assert (src[: len(source)] == source).all() and not src[len(source) :].any()
            assert (tgt_out[: len(target)] == target).all() and not tgt_out[len(target) :].any()
            assert tgt_in[0] == BOS_ID and (tgt_in[1 : len(target)] == target[:-1]).all()
            assert not tgt_in[len(target) :].any()
    assert len(shapes) == stats["shapes"]
    assert stream.padding_efficiency == pytest.approx(stats["padding_efficiency"])  # measured as the batches come
    assert 0.5 < stats["padding_efficiency"] <= 1.0


def take_epoch(stream: BucketStream) -> list[dict]:
    """The batches of the stream's next epoch (a split no larger than the window is one window per epoch)."""
    iterator, start, batches = iter(stream), stream.examples_read, []
    while stream.examples_read < start + stream.share:
        batches.append(next(iterator))
    assert stream.examples_read == start + stream.share  # the epoch ends with a batch
    return batches


def test_every_example_exactly_once_per_epoch():
    examples = synthetic()
    stream = BucketStream(examples, max_tokens=300, length_bucket_step=4, seed=3)
    for number in range(3):
        batches = take_epoch(stream)
        assert stream.epoch == number + 1 and len(batches) == stream.stats()["batches"]
        assert sorted(example_ids(batches)) == list(range(len(examples)))


def test_windows_smaller_than_the_split_cover_the_stream_in_order():
    examples = synthetic(500)
    stream = BucketStream(examples, max_tokens=300, length_bucket_step=4, seed=3, window=128)
    iterator, seen = iter(stream), []
    while stream.examples_read < 4 * 128:
        seen += example_ids([next(iterator)])
    # 4 windows of 128 pairs: all of epoch 0 (a permutation of the 500) and the first 12 of epoch 1, each window's
    # batches given before the next window's
    assert stream.examples_read == 512 and len(seen) == 512 and stream.epoch == 1
    counts = collections.Counter(seen)
    assert set(counts) == set(range(500)) and sorted(counts.values()).count(2) == 12


def test_pairs_left_out_are_counted_and_still_read():
    examples = synthetic(200)
    fits = lambda example: None if len(example[0]) > 30 else pair_features(*example)  # noqa: E731
    stream = BucketStream(examples, max_tokens=300, length_bucket_step=4, seed=3, encode=fits)
    too_long = sum(len(source) > 30 for source, _ in examples)
    assert too_long > 10 and stream.stats()["skipped"] == too_long
    batches = take_epoch(stream)  # the epoch ends once all 200 are read, the skipped ones included
    assert sorted(example_ids(batches)) == [i for i, (source, _) in enumerate(examples) if len(source) <= 30]


def test_shuffling_is_deterministic_from_seed_and_epoch():
    examples = synthetic()

    def order(seed, epochs=2, shuffle=True):
        stream = BucketStream(examples, 300, 4, seed=seed, shuffle=shuffle)
        return [example_ids(take_epoch(stream)) for _ in range(epochs)]

    first = order(0)
    assert order(0) == first and first[0] != first[1] and order(1)[0] != first[0]
    unshuffled = order(0, shuffle=False)
    assert unshuffled[0] == unshuffled[1]


@pytest.mark.parametrize("consumed", [0, 5, 50])  # start, mid-epoch, in the second epoch
def test_resume_sees_exactly_the_remaining_batches(consumed):
    examples = synthetic(300)
    first = BucketStream(examples, max_tokens=300, length_bucket_step=4, seed=7)
    assert first.stats()["batches"] < 50
    stream = iter(first)
    for _ in range(consumed):
        next(stream)
    state = json.loads(json.dumps(first.state()))
    expected = [next(stream) for _ in range(30)]
    resumed = BucketStream(examples, max_tokens=300, length_bucket_step=4, seed=7)
    resumed.restore(state)
    assert resumed.epoch == (consumed >= first.stats()["batches"])
    for want, got in zip(expected, iter(resumed), strict=False):
        assert want.keys() == got.keys() and all((want[k] == got[k]).all() for k in want)


def test_restore_refuses_different_data_or_settings():
    stream = BucketStream(synthetic(300), max_tokens=300, seed=7)
    next(iter(stream))
    state = stream.state()
    with pytest.raises(UserError, match=r"differ from the run being resumed.*fix:"):
        BucketStream(synthetic(300), max_tokens=400, seed=7).restore(state)
    with pytest.raises(UserError, match=r"differ from the run being resumed.*fix:"):
        BucketStream(synthetic(299), max_tokens=300, seed=7).restore(state)


def test_bucketing_options_trade_shapes_for_padding():
    examples = synthetic(2000)
    loose = BucketStream(examples, 512, 4, min_bucket_batches=1).stats()
    merged = BucketStream(examples, 512, 4, min_bucket_batches=3).stats()
    assert merged["shapes"] < loose["shapes"] and merged["padding_efficiency"] < loose["padding_efficiency"]
    for batch in take_epoch(BucketStream(examples, 512, 4, batch_multiple=8)):
        assert batch["src"].shape[0] % 8 == 0


def test_multi30k_padding_efficiency_and_shape_count(multi30k):
    pairs, tokenizer = multi30k
    examples, _ = data.encode_pairs(pairs, tokenizer, max_len=128)
    stats = BucketStream(examples, max_tokens=4096, length_bucket_step=4).stats()
    assert stats["padding_efficiency"] > 0.8 and stats["shapes"] <= 30, stats


def test_eval_batches_keep_every_example_and_its_index(multi30k):
    pairs, tokenizer = multi30k
    examples, _ = data.encode_pairs(pairs[:500], tokenizer, max_len=None)
    long_one = (np.arange(4, 604, dtype=np.int32), np.r_[5, EOS_ID].astype(np.int32))  # longer than max_tokens
    examples.append(long_one)
    seen = collections.Counter()
    lengths = []
    for batch, indices in data.eval_batches(examples, max_tokens=512):
        assert batch["src"].shape[0] == len(indices)
        for row, i in zip(batch["src"], indices, strict=True):
            if i < 0:
                assert not row.any()
                continue
            seen[int(i)] += 1
            assert (row[: len(examples[i][0])] == examples[i][0]).all()
        lengths.append(batch["src"].shape[1] + batch["tgt_in"].shape[1])
    assert seen == collections.Counter(range(len(examples)))
    assert lengths == sorted(lengths)  # shortest first
    source_only = [(src, None) for src, _ in examples[:50]]
    batches = list(data.eval_batches(source_only, max_tokens=512))
    assert all(set(batch) == {"src"} for batch, _ in batches)
    assert sorted(int(i) for _, indices in batches for i in indices if i >= 0) == list(range(50))


def test_multi30k_files_are_where_the_default_config_points():
    assert os.path.normpath(DataConfig().path) == os.path.join("data", "multi30k")
    assert all((MULTI30K / f"{split}.{lang}.gz").is_file() for split in ("train", "val") for lang in ("en", "de"))


def test_data_config_checks_languages_and_coverage():
    with pytest.raises(ConfigError, match="must differ"):
        DataConfig(src_lang="en", tgt_lang="en")
    with pytest.raises(ConfigError, match="spm_character_coverage"):
        DataConfig(spm_character_coverage=0.0)
    DataConfig(format="tsv", src_lang="en", tgt_lang="en", src_field="0", tgt_field="1")  # distinct columns are fine


def test_the_vocabulary_cache_is_keyed_on_the_fields_read_too(tmp_path):
    """Two text fields of one TFDS split (same name, version, split and size) are other sentences: other caches."""
    from jax_transformer.data.pipeline import SplitSource, _cached_tokenizer_path

    cfg = DataConfig(cache_dir=str(tmp_path))
    paths = {_cached_tokenizer_path(cfg, SplitSource([], "wmt:1.0.0:train:10", keys=keys))
             for keys in (("en", "de"), ("en", "fr"), ("en", "de"))}  # fmt: skip
    assert len(paths) == 2
