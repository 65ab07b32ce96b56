"""Length bucketing, the one implementation every task batches with: examples are grouped by padded length into a
small fixed set of batch shapes (each compiles once under jit), shuffled within buckets per epoch."""

from dataclasses import dataclass

import numpy as np


@dataclass
class Bucket:
    src_len: int  # padded lengths: the batch shape is (rows, src_len) and (rows, tgt_len)
    tgt_len: int
    rows: int
    members: np.ndarray  # examples whose rounded lengths are exactly this shape
    num_batches: int
    spill_to: int | None  # bucket that takes the examples that do not fill whole batches here (None: pad rows)


def rows_within_budget(max_tokens: int, length: int, batch_multiple: int = 1) -> int:
    """Rows of `length` padded tokens within a budget of `max_tokens` (at least one, a multiple of `batch_multiple`):
    the row count of a bucket's batches, and of packed batches (`stream.py`)."""
    return max(batch_multiple, max_tokens // length // batch_multiple * batch_multiple)


def plan_buckets(lengths: np.ndarray, max_tokens: int, step: int, min_batches: int, batch_multiple: int = 1,
                 rows: int = 0, max_len: int = 0) -> list[Bucket]:
    """Group examples by padded (source, target) length, fixing each shape's row count and number of batches.

    Buckets are visited shortest first; the examples left over after a bucket's whole batches (or all of them, when it
    would make fewer than `min_batches` batches) move on to the smallest longer bucket that fits both sides. So only
    the longest buckets ever pad whole rows, and rare lengths do not each cost a jit compilation. The plan depends on
    the lengths only, so every epoch has the same shapes and batch count; only which examples go where changes.

    `lengths` is (n, 2): source and target lengths (target 0 for source-only examples such as classification).
    A batch holds about `max_tokens` tokens on its longer side, or exactly `rows` rows when `rows` > 0. `max_len` > 0
    caps the padded lengths (for models with a fixed number of positions).
    """
    padded = -(-lengths // step) * step  # (n, 2) rounded up to a multiple of step
    if max_len:
        padded = np.minimum(padded, max_len)
    keys, inverse = np.unique(padded, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    order = np.lexsort((keys[:, 1], keys[:, 0], keys.sum(axis=1)))  # shortest (source + target) first
    keys, members = keys[order], [members[k] for k in order]
    counts = [len(m) for m in members]
    buckets = []
    for k, (src_len, tgt_len) in enumerate(keys.tolist()):
        per_batch = rows or rows_within_budget(max_tokens, max(src_len, tgt_len), batch_multiple)
        fits = (keys[k + 1 :] >= keys[k]).all(axis=1)  # later buckets holding both sides; the first is the smallest
        spill_to = k + 1 + int(fits.argmax()) if fits.any() else None
        if spill_to is None:
            num_batches = -(-counts[k] // per_batch)
        else:
            num_batches = counts[k] // per_batch if counts[k] // per_batch >= min_batches else 0
            counts[spill_to] += counts[k] - num_batches * per_batch
        buckets.append(Bucket(src_len, tgt_len, per_batch, members[k], num_batches, spill_to))
    return buckets


def assign_batches(buckets: list[Bucket], rng: np.random.Generator | None) -> list[tuple[int, np.ndarray]]:
    """(bucket, example indices with -1 for padding rows) of every batch of one epoch, shuffled within buckets."""
    carried: list[list[np.ndarray]] = [[] for _ in buckets]
    batches = []
    for position, bucket in enumerate(buckets):
        pool = np.concatenate([bucket.members, *carried[position]])
        if rng is not None:
            pool = rng.permutation(pool)
        if bucket.spill_to is not None:
            carried[bucket.spill_to].append(pool[bucket.num_batches * bucket.rows :])
        for b in range(bucket.num_batches):
            rows = pool[b * bucket.rows : (b + 1) * bucket.rows]
            batches.append((position, np.pad(rows, (0, bucket.rows - len(rows)), constant_values=-1)))
    return batches
