"""Input pipeline: TFDS sources, the vocabulary, tokenization, and the evaluation batches (§5.1).

Every corpus is read through TFDS, without TensorFlow: local files (plain or gzipped text, one sentence per line, or
TSV / JSONL, read and validated by `readers.py`) are prepared once (`prepare_local`: written as they are read, into
array_record files with TFDS metadata) in a cache folder, keyed by their content, and opened with `as_data_source()`
(random access, no tf.data); catalog datasets such as 'wmt14_translate/de-en' are opened the same way from
TFDS_DATA_DIR. `open_split` gives that random access (`SplitSource`), which the streaming training input
(`stream.py`: packed rows or length buckets) reads by index; `load_split` reads a split into memory (evaluation
sets). Bad input (missing files, misaligned or empty lines, invalid UTF-8, absurdly long lines) raises a one-line
`UserError` naming the file, the line and the fix.

Batching follows §5.1: "Sentence pairs were batched together by approximate sequence length. Each training batch
contained a set of sentence pairs containing approximately 25000 source tokens and 25000 target tokens." Here the
budget is `max_tokens` per side. Because `jit` compiles once per input shape, padded lengths are rounded up to a
multiple of `length_bucket_step` and each (source length, target length) bucket has a fixed row count
(`batching.py`); evaluation batches (`eval_batches`) are planned that way over the whole set, training batches over
windows of the stream (`stream.BucketStream`).
"""

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow_datasets as tfds

from jax_transformer.config import DataConfig, UserError
from jax_transformer.data.batching import assign_batches, plan_buckets
from jax_transformer.data.readers import MAX_LINE_CHARS, read_local_pairs, record_field, split_files  # noqa: F401
from jax_transformer.data.stream import example_lengths, make_batch, pair_features
from jax_transformer.data.tokenizer import Tokenizer, train_tokenizer

log = logging.getLogger(__name__)

# Records per array_record file of a prepared split: a read costs a fixed ~13 ns per record of the file it reads
# (~3 ms at this size, ~66 ms for one file of 5 million records), whatever the number of records it returns.
SHARD_RECORDS = 262_144
_READER_VERSION = 4  # bump when reading or the prepared layout changes, so cached preparations are rebuilt
Example = tuple[np.ndarray, np.ndarray | None]  # (source ids + EOS, target ids + EOS); target None: source only

# ---------------------------------------------------------------------------------------------------------------------
# TFDS: the local-files builder and catalog datasets
# ---------------------------------------------------------------------------------------------------------------------


PAIR_FEATURES = {"source": "text", "target": "text"}


def prepare_local(data_dir: str, name: str, config_name: str, features: dict[str, str], examples, description: str):
    """A TFDS dataset of the `examples` (dicts of `features`: 'text' or 'int32'), written once as array_record in
    `data_dir/name/config_name/1.0.0` and opened with `tfds.builder_from_directory` (readable without TensorFlow,
    and by TFDS or grain anywhere). The examples are written as they come, in order, one record each (in files of
    `SHARD_RECORDS` records, so that a random read stays cheap however large the split): memory stays small whatever
    the size (TFDS's own builders hold up to 1 GB of records and need TensorFlow to spill more to disk).
    `config_name` names the content (callers hash their inputs into it): a prepared directory is reused as it is.
    The files go to a temporary folder renamed into place when complete, so an interrupted or failed preparation
    (bad input) leaves nothing that looks prepared."""
    from array_record.python.array_record_module import ArrayRecordWriter

    path = os.path.join(data_dir, name, config_name, "1.0.0")
    if not os.path.isfile(os.path.join(path, "dataset_info.json")):
        kinds = {"text": tfds.features.Text(), "int32": np.int32}
        feature_dict = tfds.features.FeaturesDict({key: kinds[kind] for key, kind in features.items()})
        tmp = f"{path}.incomplete-{uuid.uuid4().hex}"
        os.makedirs(tmp)
        log.info("preparing %s as array_record in %s", description, path)

        def shard(i):
            return ArrayRecordWriter(os.path.join(tmp, f"shard-{i}"), "group_size:1")

        try:
            writer, lengths, size = shard(0), [0], 0  # no examples: one empty shard
            for example in examples:
                if lengths[-1] == SHARD_RECORDS:
                    writer.close()
                    writer = shard(len(lengths))
                    lengths.append(0)
                record = feature_dict.serialize_example(example)
                writer.write(record)
                lengths[-1], size = lengths[-1] + 1, size + len(record)
            writer.close()
            for i in range(len(lengths)):  # TFDS's file names: NAME-SPLIT.array_record-0000i-of-0000n
                os.rename(os.path.join(tmp, f"shard-{i}"),
                          os.path.join(tmp, f"{name}-data.array_record-{i:05d}-of-{len(lengths):05d}"))  # fmt: skip
            split = tfds.core.SplitInfo(name="data", shard_lengths=lengths, num_bytes=size)
            with _quiet_tfds():
                tfds.folder_dataset.write_metadata(data_dir=tmp, features=feature_dict, split_infos=[split],
                                                   check_data=False, description=description)  # fmt: skip
            try:
                os.rename(tmp, path)
            except OSError:  # another process prepared the same content first: use its copy
                if not os.path.isfile(os.path.join(path, "dataset_info.json")):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    with _quiet_tfds():
        return tfds.builder_from_directory(path)


@contextlib.contextmanager
def _quiet_tfds():
    """Silence TFDS progress bars and absl warnings ("custom data configuration") around preparation."""
    from tensorflow_datasets.core.utils import tqdm_utils

    absl_logger, bars = logging.getLogger("absl"), getattr(tqdm_utils, "_active", True)
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    tfds.disable_progress_bar()
    try:
        yield
    finally:
        absl_logger.setLevel(level)
        if bars:
            tfds.enable_progress_bar()


def content_digest(path: str) -> str:
    """sha256 of a file's bytes (about 1 s per GB): the cache key of its preparation."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _read_all(source, chunk: int = 65536) -> Iterator:
    for start in range(0, len(source), chunk):
        yield from source.__getitems__(range(start, min(start + chunk, len(source))))


class SplitSource:
    """Random access to one prepared split's (source, target) text pairs, read from its array_record files only when
    asked for: `len()`, `[i]` -> (source, target), or None for a catalog pair with an empty side (skipped). What the
    streaming loader (`stream.PackedStream`) reads by index; `identity` names the data (it changes with the content).
    """

    def __init__(self, records, identity: str, keys: tuple[str, str] | None = None, where: str = ""):
        self.records, self.identity, self.keys = records, identity, keys
        self._where = where  # catalog datasets: keys are the text fields to read; local: None ('source', 'target')

    def __len__(self) -> int:
        return len(self.records)

    def _pair(self, record: dict, i: int) -> tuple[str, str] | None:
        if self.keys is None:
            return record["source"].decode("utf-8"), record["target"].decode("utf-8")
        where = f"{self._where} example {i}"
        source, target = (record_field(record, key, where).strip() for key in self.keys)
        return (source, target) if source and target else None

    def __getitem__(self, i: int) -> tuple[str, str] | None:
        return self._pair(self.records[i], i)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[str, str] | None]:
        indices = list(indices)
        return [self._pair(r, i) for r, i in zip(self.records.__getitems__(indices), indices, strict=True)]

    def read_all(self) -> list[tuple[str, str]]:
        """Every pair in order, those with an empty side left out (and counted in a warning)."""
        pairs = [pair for pair in _read_all(self) if pair is not None]
        if len(pairs) < len(self):
            log.warning("%s: skipped %d pairs with an empty side", self._where, len(self) - len(pairs))
        return pairs


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jax_transformer", "tfds")


def open_split(cfg: DataConfig, split: str, data_dir: str | None = None) -> SplitSource:
    """Random access to the (source, target) text pairs of `split`, through TFDS, preparing local files first.

    `data_dir` overrides where TFDS data lives: the cache for local files (cfg.cache_dir, else default_cache_dir()),
    the prepared catalog datasets for format 'tfds' (cfg.tfds_data_dir, else TFDS's own default / TFDS_DATA_DIR).
    """
    if cfg.format == "tfds":
        return _open_catalog(cfg, split, data_dir or cfg.tfds_data_dir or None)
    data_dir = data_dir or cfg.cache_dir or default_cache_dir()
    files = split_files(cfg, split)
    key = [_READER_VERSION, cfg.format, cfg.src_field or cfg.src_lang, cfg.tgt_field or cfg.tgt_lang]
    key += [content_digest(path) for path in files]  # by content: a copied or touched file is not new
    config_name = f"{re.sub(r'[^A-Za-z0-9_.]', '_', split)}-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]}"
    pairs = ({"source": source, "target": target} for source, target in read_local_pairs(cfg, split))
    builder = prepare_local(data_dir, "local_parallel_text", config_name, PAIR_FEATURES, pairs, " + ".join(files))
    with _quiet_tfds():
        source = builder.as_data_source(split="data")
    return SplitSource(source, identity=config_name, where=" + ".join(files))


def load_split(cfg: DataConfig, split: str, data_dir: str | None = None) -> list[tuple[str, str]]:
    """The (source, target) text pairs of `split` in order, in memory (evaluation sets; training data streams)."""
    return open_split(cfg, split, data_dir).read_all()


def _open_catalog(cfg: DataConfig, split: str, data_dir: str | None) -> SplitSource:
    import tensorflow_datasets.translate  # noqa: F401  registers wmt14_translate & co., not imported by default

    name, where = cfg.tfds_name, data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    prepare = f"tfds build {name} --file_format=array_record --data_dir={where}"
    with _quiet_tfds():
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
            raise UserError(
                f"unknown TFDS dataset {name!r} ({str(e).splitlines()[0]}); fix: check data.tfds_name "
                "(e.g. wmt14_translate/de-en) and data.tfds_data_dir"
            ) from None
        if not builder.is_prepared():
            raise UserError(
                f"TFDS dataset {name} is not prepared in {where}; fix: prepare it once with `{prepare}`, or set "
                "TFDS_DATA_DIR / data.tfds_data_dir to where it is prepared"
            )
        if split.split("[")[0] not in builder.info.splits:
            raise UserError(
                f"TFDS dataset {name} has no split {split!r} (it has: {', '.join(builder.info.splits)}); fix: set "
                "data.train_split/valid_split/test_split"
            )
        try:
            source = builder.as_data_source(split=split)
        except ValueError:
            raise UserError(
                f"TFDS dataset {name} in {builder.data_dir} is stored as {builder.info.file_format.value}, which "
                f"needs TensorFlow to read; fix: prepare it again as array_record: `{prepare}`"
            ) from None
    keys = (cfg.src_field or cfg.src_lang, cfg.tgt_field or cfg.tgt_lang)
    identity = f"{name}:{builder.info.version}:{split}:{len(source)}"
    return SplitSource(source, identity=identity, keys=keys, where=f"TFDS {name} split {split}")


# ---------------------------------------------------------------------------------------------------------------------
# Tokenization
# ---------------------------------------------------------------------------------------------------------------------


def get_tokenizer(
    cfg: DataConfig,
    run_dir: str,
    train_pairs: Sequence[tuple[str, str]] | None = None,
    source: SplitSource | None = None,
) -> Tokenizer:
    """The run's tokenizer: `run_dir/spm.model` of a started run (one with config.json: resume, inference), else a
    copy of cfg.spm_model, else
    a joint vocabulary trained on the training split's source and target sentences (at most cfg.spm_max_sentences,
    sampled with a fixed seed so the same data gives the same vocabulary).

    The training sentences come from `train_pairs`, else from `source` (read by index: only the sampled pairs are
    read), else from the training split. A vocabulary trained from a prepared split is also kept in the data cache,
    named by the split's content and the vocabulary settings, so the next run on the same data starts at once.
    """
    path = os.path.join(run_dir, "spm.model")
    # a vocabulary without config.json was left by a first attempt that stopped before training (bad data, Ctrl-C);
    # the data or vocabulary settings may have changed since, so it is made again, not reused
    if os.path.isfile(path) and os.path.isfile(os.path.join(run_dir, "config.json")):
        tokenizer = Tokenizer.load(path)
    elif cfg.spm_model:
        tokenizer = Tokenizer.load(cfg.spm_model)
        tokenizer.check_special_ids()
        tokenizer.save(path)
    else:
        if train_pairs is None and source is None:
            source = open_split(cfg, cfg.train_split)
        cached = _cached_tokenizer_path(cfg, source) if train_pairs is None else None
        if cached and os.path.isfile(cached):
            tokenizer = Tokenizer.load(cached)
            tokenizer.save(path)
            log.info("vocabulary from the cache: %s", cached)
        else:
            sentences = _tokenizer_sentences(cfg, train_pairs, source)
            log.info(
                "training a %d-piece %s vocabulary on %d sentences", cfg.vocab_size, cfg.spm_model_type, len(sentences)
            )
            tokenizer = train_tokenizer(sentences, path, cfg)
            if cached:
                os.makedirs(os.path.dirname(cached), exist_ok=True)
                tokenizer.save(cached)
    tokenizer.check_special_ids()
    return tokenizer


def _cached_tokenizer_path(cfg: DataConfig, source: SplitSource) -> str:
    import sentencepiece

    # the fields read count too: a TFDS split's identity names the dataset, not which of its text fields are read
    settings = [source.identity, source.keys and list(source.keys), cfg.vocab_size, cfg.spm_model_type,
                cfg.spm_character_coverage, cfg.spm_max_sentences, sentencepiece.__version__]  # fmt: skip
    digest = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
    return os.path.join(cfg.cache_dir or default_cache_dir(), "vocabularies", f"{digest}.model")


def _tokenizer_sentences(cfg: DataConfig, pairs, source: SplitSource | None) -> list[str]:
    """Source and target sentences of the training pairs (2i and 2i + 1), at most cfg.spm_max_sentences of them,
    sampled with a fixed seed; from a SplitSource only the sampled pairs are read."""
    count = 2 * (len(pairs) if pairs is not None else len(source))
    keep = np.arange(count)
    if count > cfg.spm_max_sentences:
        keep = np.sort(np.random.default_rng(0).choice(count, cfg.spm_max_sentences, replace=False))
    if pairs is not None:
        return [pairs[i // 2][i % 2] for i in keep.tolist()]
    wanted = np.unique(keep // 2)
    read = {}
    for start in range(0, len(wanted), 65536):
        chunk = wanted[start : start + 65536].tolist()
        read.update(zip(chunk, source.__getitems__(chunk), strict=True))
    return [read[i // 2][i % 2] for i in keep.tolist() if read[i // 2] is not None]


def encode_pairs(
    pairs: Sequence[tuple[str, str]], tokenizer: Tokenizer, max_len: int | None
) -> tuple[list[Example], int]:
    """Token ids with EOS appended to both sides, and the number of pairs dropped because a side (EOS included) is
    longer than `max_len`. Pass max_len=None for evaluation data, where dropping would misalign the references."""
    encoded = encode_examples(pairs, tokenizer, max_len)
    return encoded.examples, encoded.dropped


@dataclass
class Encoded:
    examples: list[Example]
    dropped: int  # pairs left out because a side (EOS included) was longer than max_len
    truncated: int  # kept pairs whose source was cut to max_source_len tokens


def truncate_source(ids: list[int], max_source_len: int, eos_id: int) -> tuple[list[int], bool]:
    """`ids` (without EOS) cut so that ids + EOS has at most `max_source_len` tokens (0: no limit); and whether it was
    cut. The document's beginning is kept, and it still ends in EOS, as the model saw in training."""
    if max_source_len and len(ids) + 1 > max_source_len:
        return ids[: max_source_len - 1], True
    return ids, False


def encode_examples(
    pairs: Sequence[tuple[str, str]], tokenizer: Tokenizer, max_len: int | None, max_source_len: int = 0
) -> Encoded:
    """`encode_pairs` with the source truncation of summarization: sources longer than `max_source_len` tokens (EOS
    included; 0: no limit) are cut to it first, so only pairs whose target is too long (or source, without a limit)
    are dropped."""
    eos = tokenizer.eos_id
    sources = tokenizer.encode([source for source, _ in pairs])
    targets = tokenizer.encode([target for _, target in pairs])
    examples, dropped, truncated = [], 0, 0
    for source, target in zip(sources, targets, strict=True):
        source, cut = truncate_source(source, max_source_len, eos)
        if max_len is not None and max(len(source), len(target)) + 1 > max_len:
            dropped += 1
            continue
        truncated += cut
        examples.append((np.array(source + [eos], np.int32), np.array(target + [eos], np.int32)))
    return Encoded(examples, dropped, truncated)


def pair_encoder(tokenizer: Tokenizer, max_len: int, max_source_len: int = 0):
    """What the streaming loader maps over a SplitSource: a (source, target) text pair -> the pair's training
    sequences (`stream.pair_features`), or None when it is to be left out (a side longer than `max_len` tokens, EOS
    included, after cutting the source to `max_source_len`; or an empty side). The same rule as `encode_examples`."""
    eos = tokenizer.eos_id

    def encode(pair):
        if pair is None:
            return None
        source, _ = truncate_source(tokenizer.encode_one(pair[0]), max_source_len, eos)
        target = tokenizer.encode_one(pair[1])
        if max(len(source), len(target)) + 1 > max_len:
            return None
        return pair_features(np.array(source + [eos], np.int32), np.array(target + [eos], np.int32))

    return encode


# ---------------------------------------------------------------------------------------------------------------------
# Token-budget batching (§5.1)
# ---------------------------------------------------------------------------------------------------------------------


def eval_batches(
    examples: Sequence[Example],
    max_tokens: int,
    length_bucket_step: int = 4,
    min_bucket_batches: int = 1,
    batch_multiple: int = 1,
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Validation/test batches sorted by length, each with the original indices of its rows (-1 for padding rows), so
    decoded outputs can be put back in the input order. Examples may be source only, (ids, None): batches then hold
    just 'src'. Nothing is dropped, whatever its length."""
    if not examples:
        return
    lengths = example_lengths(examples)
    buckets = plan_buckets(lengths, max_tokens, length_bucket_step, min_bucket_batches, batch_multiple)
    for position, indices in assign_batches(buckets, rng=None):
        yield make_batch(examples, indices, buckets[position]), indices
