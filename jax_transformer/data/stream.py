"""Streaming training input with grain: random-access source -> this process's share -> shuffled epochs -> tokenized
pairs -> packed rows -> batches, resumable at any batch.

The corpus is never read into memory. A source is anything with `len()` and `[i]` (the TFDS array_record data source
of a prepared split: `pipeline.open_split`; or a list, in tests): grain reads it by index, so start-up costs nothing
per example and memory is bounded by the batch, not the corpus.

    source[i::count]         this process's share (`process_index` of `process_count` data shards): disjoint slices
    .shuffle(seed).repeat()  epoch e is a fresh permutation of the share (grain's index shuffle, seed + e), endlessly
    .batch(64).map(encode)   64 pairs per read (batched reads cost a third of single ones); text -> ids (source + EOS,
                             BOS + target, target + EOS), dropping pairs longer than max_len
    .to_iter_dataset()       read ahead in a thread, in order; then one pair at a time again (FlatMapIterDataset)
    BestFitPackIterDataset   pairs share rows of `pack_length` tokens per side (each goes to the row it fills
                             tightest among `PACKING_BINS` open rows), with segment ids and positions per pair
    .batch(rows)             `rows` packed rows per batch: one shape for the whole run, made in a prefetch thread

Every stage is grain's, and grain's iterator state (the next index, the open packing rows) is what `state()` saves in
every checkpoint and `restore()` sets again: a resumed run reads exactly the batches the interrupted one would have.
"""

import atexit
import hashlib
import json
import weakref
from collections.abc import Callable, Iterator, Sequence

import grain
import numpy as np

from jax_transformer.config import UserError
from jax_transformer.data.batching import rows_within_budget
from jax_transformer.data.tokenizer import BOS_ID, PAD_ID

# Open rows of the packer: 256 rows of 64 tokens fill Multi30k's rows to 93.2% real tokens (128: 92.9%, 64: 92.3%).
PACKING_BINS = 256
READ_CHUNK = 64  # examples read from the source at once: a batched read costs ~1/3 of single reads per example
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


class PackedStream:
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
        if len(source) == 0:
            raise UserError("no training examples to stream; fix: check the data")
        if len(source) < process_count:
            raise UserError(f"{len(source)} training examples cannot be shared by {process_count} processes")
        if encode is None:
            encode = lambda example: pair_features(*example)  # noqa: E731  (source, target) ids, both with EOS
        self.pack_length, self.data_shards = pack_length, process_count
        self.global_rows = rows_within_budget(max_tokens, pack_length, batch_multiple)
        self.rows_per_batch = process_rows_share(self.global_rows, process_count)
        dataset = grain.MapDataset.source(source)[process_index::process_count]
        self.share = len(dataset)  # examples this process reads per epoch
        if shuffle:
            dataset = dataset.shuffle(seed=seed % 2**32)
        # read and tokenize READ_CHUNK examples at a time (one batched read), then hand them on one by one
        encoded = lambda chunk: [features for features in map(encode, chunk) if features is not None]  # noqa: E731
        dataset = dataset.repeat().batch(READ_CHUNK, batch_fn=list).map(encoded)
        options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=4)
        examples = grain.experimental.FlatMapIterDataset(dataset.to_iter_dataset(options), _Unchunk())
        stream = _pack(examples, pack_length)
        stream = stream.batch(self.rows_per_batch, drop_remainder=True).map(_packed)
        # Packing and batching run in a thread ahead of the training step (which releases the GIL while it computes).
        self._dataset = grain.experimental.ThreadPrefetchIterDataset(stream, prefetch_buffer_size=prefetch)
        self._iterator = None
        if not identity:  # a list of examples: its lengths name it
            identity = hashlib.sha256(np.array([len(s) + 1000 * len(t) for s, t in source]).tobytes()).hexdigest()
        settings = [identity, max_tokens, pack_length, seed, shuffle, process_index, process_count, batch_multiple,
                    PACKING_BINS]  # fmt: skip
        self.fingerprint = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
        self.examples_packed = 0
        self._real = self._slots = 0  # real tokens and slots (source + target) of the batches so far

    @property
    def padding_efficiency(self) -> float:
        """Real tokens / padded slots (source + target) of the batches this stream has given so far."""
        return self._real / max(self._slots, 1)

    @property
    def epoch(self) -> int:
        return self.examples_packed // self.share

    @property
    def shapes(self) -> list[tuple[int, int, int]]:
        return [(self.rows_per_batch, self.pack_length, self.pack_length)]

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

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        stream = self._stream()
        while True:
            batch = next(stream)
            self.examples_packed += int(batch["src_segments"].max(axis=1).sum())
            self._real += int((batch["src_segments"] > 0).sum() + (batch["tgt_segments"] > 0).sum())
            self._slots += 2 * batch["src"].size
            yield batch

    def state(self) -> dict:
        """Where the next batch comes from (grain's iterator state and the examples packed), JSON-able."""
        return {"grain": self._stream().get_state(), "examples": self.examples_packed, "fingerprint": self.fingerprint}

    def restore(self, state: dict, strict: bool = True) -> None:
        """Continue from `state()`; a state of other data or settings is a UserError (strict) or starts over."""
        if state.get("fingerprint") != self.fingerprint or "grain" not in state:
            message = (
                "the training data or batching settings (max_tokens, pack_length, seed, processes, ...) differ from "
                "the run being resumed, so its batch sequence cannot be continued exactly"
            )
            if strict:
                raise UserError(f"{message}; fix: resume with the original data, config and processes, or start a "
                                "new run")  # fmt: skip
            return
        self._stream().set_state(state["grain"])
        self.examples_packed = int(state["examples"])

    def stats(self) -> dict:
        return {"shapes": 1, "rows_per_batch": self.rows_per_batch, "share": self.share}


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
