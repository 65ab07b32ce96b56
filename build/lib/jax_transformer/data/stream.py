"""Streaming training input with grain: random-access source -> this process's share -> shuffled epochs -> tokenized
pairs -> batches (packed rows, or length buckets within a token budget), resumable at any batch.

The corpus is never read into memory. A source is anything with `len()` and `[i]` (the TFDS array_record data source
of a prepared split: `pipeline.open_split`; or a list, in tests): grain shuffles its indices and the streams read
the records at them in batches, so start-up costs nothing per example and memory is bounded by the batch (packing) or
the window (buckets), not the corpus.

    range(len)[i::count]     this process's share of the indices (`process_index` of `process_count` data shards)
    .shuffle(seed).repeat()  epoch e is a fresh permutation of the share (grain's index shuffle, seed + e, from a seed
                             per run seed and process: `shuffle_seed`), endlessly

Packed rows (`PackedStream`, `data.pack_length`):

    .batch(1024).map(encode) 1,024 pairs per read (one batched read); text -> ids (source + EOS, BOS + target,
                             target + EOS), dropping pairs longer than max_len
    .to_iter_dataset()       read ahead in a thread, in order; then one pair at a time again (FlatMapIterDataset)
    BestFitPackIterDataset   pairs share rows of `pack_length` tokens per side (each goes to the row it fills
                             tightest among `PACKING_BINS` open rows), with segment ids and positions per pair
    .batch(rows)             `rows` packed rows per batch: one shape for the whole run, made in a prefetch thread

Length buckets (`BucketStream`, §5.1):

    .batch(window)           windows of `BUCKET_WINDOW` pairs (a whole epoch when the split has no more: Multi30k),
                             each read in one batched read, ahead in a thread
    .map_with_index(plan)    a window's pairs tokenized and planned into batches by the one bucketing rule
                             (`batching.plan_buckets` / `assign_batches`), in an order shuffled from (seed, window)
    FlatMapIterDataset       one batch at a time, made in a prefetch thread

Every stage is grain's, and grain's iterator state (the next index, the open packing rows, the batch within the
window) is what `state()` saves in every checkpoint and `restore()` sets again: a resumed run reads exactly the
batches the interrupted one would have.
"""

import atexit
import hashlib
import json
import weakref
from collections.abc import Callable, Iterator, Sequence

import grain
import numpy as np

from jax_transformer.config import UserError
from jax_transformer.data.batching import Bucket, assign_batches, plan_buckets, rows_within_budget
from jax_transformer.data.tokenizer import BOS_ID, PAD_ID

# Open rows of the packer: 256 rows of 64 tokens fill Multi30k's rows to 93.2% real tokens (128: 92.9%, 64: 92.3%).
PACKING_BINS = 256
READ_CHUNK = 1024  # examples read from the source at once (one batched read: see `_read`), then tokenized
# Examples planned into length buckets at once: bucketing needs many examples of each length to fill batches with
# little padding (Multi30k's 29,000 pairs in one window: 90.6% real tokens at 3-token steps; SST-2's 67,349 rows fit
# one too, so their epochs are whole windows), and memory holds two windows (~100 MB of tokenized pairs).
BUCKET_WINDOW = 100_000
PACKED_KEYS = ("src", "tgt_in", "tgt_out", "src_segments", "tgt_segments", "src_positions", "tgt_positions")


def pair_features(source: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """The three sequences of one training pair: src = source + EOS, tgt_in = BOS + target (the decoder's input),
    tgt_out = target + EOS (the labels). `source` and `target` already end in EOS."""
    tgt_in = np.concatenate([[BOS_ID], target[:-1]]).astype(np.int32)
    return {"src": source.astype(np.int32), "tgt_in": tgt_in, "tgt_out": target.astype(np.int32)}


class _Unchunk(grain.experimental.FlatMapTransform):
    max_fan_out = READ_CHUNK

    def flat_map(self, chunk):
        return chunk


class _WindowBatches(grain.experimental.FlatMapTransform):
    max_fan_out = BUCKET_WINDOW  # a window's batches (at least one pair each)

    def flat_map(self, batches):
        return batches


def _packed(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """grain's packed names -> the model's (tgt_in and tgt_out share their segments and positions)."""
    return {
        "src": batch["src"],
        "tgt_in": batch["tgt_in"],
        "tgt_out": batch["tgt_out"],
        "src_segments": batch["src_segment_ids"],
        "tgt_segments": batch["tgt_out_segment_ids"],
        "src_positions": batch["src_positions"],
        "tgt_positions": batch["tgt_out_positions"],
    }


def _pack(dataset: grain.IterDataset, pack_length: int) -> grain.IterDataset:
    assert PAD_ID == 0, "packed rows pad with zeros"
    lengths = {"src": pack_length, "tgt_in": pack_length, "tgt_out": pack_length}
    return grain.experimental.BestFitPackIterDataset(
        dataset, length_struct=lengths, num_packing_bins=PACKING_BINS, shuffle_bins=False
    )


def process_rows_share(rows: int, shard_count: int) -> int:
    if rows % shard_count:
        raise UserError(
            f"{rows} packed rows per batch cannot be split evenly over {shard_count} data shards; fix: choose "
            "data.max_tokens so that data.max_tokens // data.pack_length is a multiple of the data shards"
        )
    return rows // shard_count


class _Stream:
    """What every stream here shares: endless batches from a grain pipeline (`self._dataset`), the examples consumed so
    far (for the epoch count), the real-token share, and a state that a checkpoint saves and `restore` sets again.
    `settings` (with the data's `identity`) make the fingerprint that a restored state must match."""

    process_local = False

    def _start(self, dataset: grain.IterDataset, share: int, settings: list, prefetch: int) -> None:
        # Batches are made in a thread ahead of the training step (which releases the GIL while it computes).
        self._dataset = grain.experimental.ThreadPrefetchIterDataset(dataset, prefetch_buffer_size=prefetch)
        self._iterator = None
        self.share = share  # examples read per epoch (this process's share, or the whole split)
        # grain's version too: its shuffle, packer or iterator state may change between releases
        settings = [*settings, grain.__version__]
        self.fingerprint = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
        self.examples_read = 0
        self._real = self._slots = 0  # real tokens and slots (source + target) of the batches so far

    @property
    def padding_efficiency(self) -> float:
        """Real tokens / padded slots (source + target) of the batches this stream has given so far."""
        return self._real / max(self._slots, 1)

    @property
    def epoch(self) -> int:
        return self.examples_read // self.share

    def _stream(self):
        if self._iterator is None:
            self._iterator = iter(self._dataset)
            # stop the prefetch thread (and drop it) before the interpreter tears down the modules it uses
            atexit.register(_close, weakref.ref(self))
        return self._iterator

    def close(self) -> None:
        """Stop reading ahead (also done at exit)."""
        if self._iterator is not None:
            self._iterator.close()
            # grain closes again from __del__, which at interpreter exit finds its module globals gone: once is enough
            self._iterator.close = lambda: None
            self._iterator = None

    def _count(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Count a batch's examples and tokens; returns the batch as the model takes it."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        stream = self._stream()
        while True:
            yield self._count(next(stream))

    def state(self) -> dict:
        """Where the next batch comes from (grain's iterator state and the examples read), JSON-able."""
        return {"grain": self._stream().get_state(), "examples": self.examples_read, "fingerprint": self.fingerprint}

    def restore(self, state: dict, strict: bool = True) -> None:
        """Continue from `state()`; a state of other data or settings is a UserError (strict) or starts over."""
        if state.get("fingerprint") != self.fingerprint or "grain" not in state:
            message = (
                "the training data or batching settings (max_tokens, pack_length or length_bucket_step, seed, "
                "processes, grain's version, ...) differ from the run being resumed, so its batch sequence cannot be "
                "continued exactly"
            )
            if strict:
                raise UserError(f"{message}; fix: resume with the original data, config, processes and grain version "
                                "(or the version of this project the run began with), or start a new run")  # fmt: skip
            return
        self._stream().set_state(state["grain"])
        self.examples_read = int(state["examples"])


def shuffle_seed(seed: int, process_index: int = 0) -> int:
    """The seed of grain's index shuffle for a run's `seed` on process `process_index`.

    grain shuffles epoch e with seed + e, so seeds s and s + 1 would read the same permutations one epoch apart
    (seed 1's epoch e is seed 0's epoch e + 1), and shares of one length under one seed would walk in lockstep
    (process p reading line k*pi(j) + p at position j, so neighbouring lines always share a global batch). Every
    (seed, process) other than (0, 0) therefore shuffles from its own 32-bit seed drawn from both; seed 0 on process
    0 keeps grain's seed 0, the order of every one-process seed-0 run."""
    if seed == 0 and process_index == 0:
        return 0
    return int(np.random.SeedSequence([seed % 2**32, process_index]).generate_state(1)[0])


def _share(source: Sequence, seed: int, shuffle: bool, process_index: int, process_count: int) -> grain.MapDataset:
    """The indices of this process's share of `source`, shuffled by grain's index shuffle (repeated, every epoch in a
    fresh order; the seed from `shuffle_seed`). The streams read the records at these indices in batches (`_read`)."""
    if len(source) == 0:
        raise UserError("no training examples to stream; fix: check the data")
    if len(source) < process_count:
        raise UserError(f"{len(source)} training examples cannot be shared by {process_count} processes")
    dataset = grain.MapDataset.range(len(source))[process_index::process_count]
    return dataset.shuffle(seed=shuffle_seed(seed, process_index)) if shuffle else dataset


def _read(source: Sequence, indices: Sequence[int]) -> list:
    """The records of `source` at `indices`, in one batched read where the source has one (`__getitems__`: an
    array_record read costs a fixed ~13 ns per record of its file, whatever the number of records read, so records
    must not be read one at a time)."""
    read = getattr(source, "__getitems__", None)
    return list(read(list(indices))) if read else [source[i] for i in indices]


def _identity(source: Sequence, identity: str) -> str:
    """The data's name in a fingerprint: a prepared split's content digest, or a list of examples' lengths."""
    return identity or hashlib.sha256(np.array([len(s) + 1000 * len(t) for s, t in source]).tobytes()).hexdigest()


def _default_encode(example):
    return pair_features(*example)  # (source ids, target ids), both ending in EOS


class PackedStream(_Stream):
    """Endless batches of packed training pairs streamed from `source` (see the module docstring).

    `encode(record)` turns a source record into `pair_features(...)` or None (dropped: too long, empty); a list of
    (source ids, target ids) examples needs none. Each batch holds `rows` rows of `pack_length` tokens, rows =
    max_tokens // pack_length split over `process_count` processes (this process makes its own share of the rows,
    from its own share of the examples). `epoch` counts the examples packed so far over the share's size.
    `identity` names the data (a prepared split's content digest) in the fingerprint that `restore` checks.
    """

    process_local = True  # each process makes its own rows of the global batch (Steps.shard_local_batch)

    def __init__(
        self,
        source: Sequence,
        max_tokens: int,
        pack_length: int,
        *,
        encode: Callable | None = None,
        seed: int = 0,
        shuffle: bool = True,
        process_index: int = 0,
        process_count: int = 1,
        batch_multiple: int = 1,
        identity: str = "",
        read_threads: int = 1,
        prefetch: int = 2,
    ):
        encode = encode or _default_encode
        dataset = _share(source, seed, shuffle, process_index, process_count)
        share = len(dataset)
        self.pack_length, self.data_shards = pack_length, process_count
        self.global_rows = rows_within_budget(max_tokens, pack_length, batch_multiple)
        self.rows_per_batch = process_rows_share(self.global_rows, process_count)
        # read and tokenize READ_CHUNK examples at a time (one batched read), then hand them on one by one
        encoded = lambda chunk: [f for f in map(encode, _read(source, chunk)) if f is not None]  # noqa: E731
        dataset = dataset.repeat().batch(READ_CHUNK, batch_fn=list).map(encoded)
        options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=4)
        examples = grain.experimental.FlatMapIterDataset(dataset.to_iter_dataset(options), _Unchunk())
        stream = _pack(examples, pack_length)
        stream = stream.batch(self.rows_per_batch, drop_remainder=True).map(_packed)
        settings = [_identity(source, identity), max_tokens, pack_length, shuffle_seed(seed, process_index), shuffle,
                    process_index, process_count, batch_multiple, PACKING_BINS, READ_CHUNK]  # fmt: skip
        self._start(stream, share, settings, prefetch)

    @property
    def shapes(self) -> list[tuple[int, int, int]]:
        return [(self.rows_per_batch, self.pack_length, self.pack_length)]

    def _count(self, batch):
        self.examples_read += int(batch["src_segments"].max(axis=1).sum())
        self._real += int((batch["src_segments"] > 0).sum() + (batch["tgt_segments"] > 0).sum())
        self._slots += 2 * batch["src"].size
        return batch

    def stats(self) -> dict:
        return {"shapes": 1, "rows_per_batch": self.rows_per_batch, "share": self.share}


class WindowStream(_Stream):
    """Endless batches planned a window of examples at a time (see the module docstring): `window` examples of the
    stream (the whole source when it has no more: then a window is an epoch) go to `_plan_window`, which returns all
    their batches, in an order shuffled from (seed, window). Every process builds the same global batches (the engine
    puts each process's rows on its devices), so a run resumes on any number of processes; it reads the whole source,
    a window at a time. A subclass plans (`_plan_window`) and counts tokens (`_tokens`); `settings` name its rules in
    the fingerprint."""

    def _start_windows(self, source: Sequence, settings: list, seed: int, shuffle: bool, window: int, prefetch: int):
        dataset = _share(source, seed, shuffle, 0, 1)
        self.window = min(window, len(source))

        def plan(index: int, indices: list) -> list[dict[str, np.ndarray]]:
            rng = np.random.default_rng([seed % 2**32, index]) if shuffle else None
            return self._plan_window(_read(source, indices), rng)

        windows = dataset.repeat().batch(self.window, batch_fn=list).map_with_index(plan)
        options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=1)  # the next window is made while training
        stream = grain.experimental.FlatMapIterDataset(windows.to_iter_dataset(options), _WindowBatches())
        self._start(stream, len(source), [*settings, seed, shuffle_seed(seed), shuffle, self.window], prefetch)
        self._source = source

    def _plan_window(self, records: list, rng: np.random.Generator | None) -> list[dict[str, np.ndarray]]:
        """Every batch of one window of source records, in a shuffled order when `rng` is given; each batch carries
        `_read`, the records it accounts for (its examples, and the window's skipped ones with the first batch)."""
        raise NotImplementedError

    def _tokens(self, batch: dict[str, np.ndarray]) -> tuple[int, int]:
        """(real tokens, slots) of a batch."""
        raise NotImplementedError

    def _count(self, batch):
        self.examples_read += int(batch.pop("_read"))
        real, slots = self._tokens(batch)
        self._real, self._slots = self._real + real, self._slots + slots
        return batch

    def stats(self) -> dict:
        """The first window's plan (every window of a source that fits in one: every epoch): its examples, batches,
        distinct shapes (one compilation each) and share of real tokens. Reads and tokenizes that window once."""
        return self._window_stats(self._first_window())

    def _window_stats(self, batches: list[dict[str, np.ndarray]]) -> dict:
        real, slots = np.sum([self._tokens(batch) for batch in batches], axis=0) if batches else (0, 0)
        return {
            "window": self.window,
            "examples": sum(batch["_read"] for batch in batches),
            "batches": len(batches),
            "shapes": len({tuple(v.shape for k, v in sorted(b.items()) if k != "_read") for b in batches}),
            "padding_efficiency": float(real / max(slots, 1)),
        }

    def _first_window(self) -> list[dict[str, np.ndarray]]:
        return self._plan_window(_read(self._source, range(self.window)), None)


class BucketStream(WindowStream):
    """Endless token-budget batches of length-bucketed training pairs (§5.1) streamed from `source`: each window is
    planned by `batching.plan_buckets` (padded lengths multiples of `length_bucket_step`, rows * max(S, T) <=
    max_tokens, buckets of fewer than `min_bucket_batches` batches merged into longer ones). `encode` and `identity`
    as for `PackedStream`."""

    def __init__(
        self,
        source: Sequence,
        max_tokens: int,
        length_bucket_step: int = 4,
        *,
        encode: Callable | None = None,
        seed: int = 0,
        shuffle: bool = True,
        min_bucket_batches: int = 2,
        batch_multiple: int = 1,
        identity: str = "",
        window: int = BUCKET_WINDOW,
        prefetch: int = 2,
    ):
        self._encode = encode or _default_encode
        self._bucketing = (max_tokens, length_bucket_step, min_bucket_batches, batch_multiple)
        self._start_windows(source, [_identity(source, identity), *self._bucketing], seed, shuffle, window, prefetch)

    def _plan_window(self, records, rng):
        examples = [(f["src"], f["tgt_out"]) for f in map(self._encode, records) if f is not None]
        batches = window_batches(examples, *self._bucketing, rng)
        if batches:  # the pairs left out (too long) count as read, with the window's first batch
            batches[0]["_read"] += len(records) - len(examples)
        return batches

    def _tokens(self, batch):
        return int((batch["src"] > 0).sum() + (batch["tgt_out"] > 0).sum()), batch["src"].size + batch["tgt_out"].size

    def _window_stats(self, batches):
        """`WindowStream.stats`, and `skipped`: the first window's pairs left out (a side longer than max_len)."""
        stats = super()._window_stats(batches)
        kept = sum(int((batch["src"][:, 0] > 0).sum()) for batch in batches)
        return {**stats, "skipped": stats["examples"] - kept}


def example_lengths(examples: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> np.ndarray:
    """(n, 2) source and target lengths (target 0 for source-only examples)."""
    return np.array([(len(s), 0 if t is None else len(t)) for s, t in examples], np.int64).reshape(-1, 2)


def window_batches(
    examples: Sequence[tuple[np.ndarray, np.ndarray]],
    max_tokens: int,
    length_bucket_step: int,
    min_bucket_batches: int,
    batch_multiple: int,
    rng: np.random.Generator | None,
) -> list[dict[str, np.ndarray]]:
    """Every batch of one window of training pairs, in a shuffled order when `rng` is given, each with `_read`: the
    pairs it holds."""
    if not examples:
        return []
    lengths = example_lengths(examples)
    buckets = plan_buckets(lengths, max_tokens, length_bucket_step, min_bucket_batches, batch_multiple)
    plan = assign_batches(buckets, rng)
    if rng is not None:
        plan = [plan[i] for i in rng.permutation(len(plan))]
    batches = []
    for position, indices in plan:
        batch = make_batch(examples, indices, buckets[position])
        batch["_read"] = int((indices >= 0).sum())
        batches.append(batch)
    return batches


def make_batch(examples: Sequence, indices: np.ndarray, bucket: Bucket) -> dict[str, np.ndarray]:
    """src (rows, S); tgt_in = BOS + target (rows, T), the decoder input; tgt_out = target + EOS (rows, T), the
    labels; rows of index -1 are padding. Padding is PAD_ID (0); the model derives its padding masks from it.
    Examples are (source ids + EOS, target ids + EOS or None): without targets the batch holds just 'src'."""
    src = np.full((len(indices), bucket.src_len), PAD_ID, np.int32)
    tgt_in = np.full((len(indices), bucket.tgt_len), PAD_ID, np.int32)
    tgt_out = np.full((len(indices), bucket.tgt_len), PAD_ID, np.int32)
    for row, i in enumerate(indices):
        if i >= 0:
            source, target = examples[i]
            src[row, : len(source)] = source
            if target is not None:
                tgt_out[row, : len(target)] = target
                tgt_in[row, 0] = BOS_ID
                tgt_in[row, 1 : len(target)] = target[:-1]
    return {"src": src} if bucket.tgt_len == 0 else {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out}


def _close(stream_ref) -> None:
    stream = stream_ref()
    if stream is not None:
        stream.close()


def packed_eval_batches(
    examples: Sequence[tuple[np.ndarray, np.ndarray]], max_tokens: int, pack_length: int
) -> Iterator[dict[str, np.ndarray]]:
    """Evaluation batches of packed rows, in one shape (the last batch filled up with empty rows), for sums such as
    the validation loss that do not depend on the order. A pair longer than `pack_length` gets a row of its own
    length (nothing is dropped from evaluation data)."""
    rows = rows_within_budget(max_tokens, pack_length)
    fits = [ex for ex in examples if max(len(ex[0]), len(ex[1])) <= pack_length]
    if fits:
        dataset = _pack(grain.MapDataset.source(fits).map(lambda ex: pair_features(*ex)).to_iter_dataset(), pack_length)
        for batch in dataset.batch(rows, drop_remainder=False).map(_packed):
            missing = rows - len(batch["src"])
            yield {k: np.pad(v, ((0, missing), (0, 0))) for k, v in batch.items()} if missing else batch
    for source, target in examples:
        length = max(len(source), len(target))
        if length > pack_length:
            features = pair_features(source, target)
            batch = {k: np.zeros((1, length), np.int32) for k in PACKED_KEYS}
            for name in ("src", "tgt_in", "tgt_out"):
                batch[name][0, : len(features[name])] = features[name]
            for side, n in (("src", len(source)), ("tgt", len(target))):
                batch[f"{side}_segments"][0, :n] = 1
                batch[f"{side}_positions"][0, :n] = np.arange(n)
            yield batch
