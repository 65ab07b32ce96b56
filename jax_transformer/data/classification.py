"""Labelled text for classification: CSV / TSV / JSONL rows -> validated (text, label id) -> token ids -> batches.

Rows with no label, a label outside `data.labels`, or empty text are bad rows: they are reported with their file
and line number (the run refuses the file, or skips them with `data.skip_bad_rows`). Batches come in a few fixed
shapes (padded lengths are multiples of `length_bucket_step`, rows always `batch_size`, a short last batch padded
with empty rows of weight 0), so `jit` compiles each shape once.
"""

import csv
import gzip
import hashlib
import json
import os
import sys
from dataclasses import dataclass

import numpy as np

from jax_transformer.config import ClassifyDataConfig, UserError
from jax_transformer.data.batching import assign_batches, plan_buckets

csv.field_size_limit(1 << 24)


def _open(path: str):
    if not os.path.isfile(path):
        raise UserError(f"no data file at {path}")
    opener = gzip.open if path.endswith(".gz") else open
    return opener(path, "rt", encoding="utf-8", newline="")


def _column(header: list[str] | None, field: str, path: str) -> int | str:
    if header is None:
        if not field.isdigit():
            raise UserError(
                f"{path} has no header (data.header=false): data fields must be column indices, got {field!r}"
            )
        return int(field)
    if field not in header:
        raise UserError(f"{path}: no column {field!r} in the header (columns: {', '.join(header)})")
    return header.index(field)


def read_rows(path: str, cfg: ClassifyDataConfig, limit: int = 0) -> list[tuple[int, str | None, str | None]]:
    """(line number, text, raw label) of each row; None where a field is missing."""
    rows = []
    try:
        with _open(path) as f:
            if cfg.format == "jsonl":
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        record = None
                    if not isinstance(record, dict):
                        rows.append((number, None, None))
                    else:
                        label = record.get(cfg.label_field)
                        text = record.get(cfg.text_field)
                        rows.append(
                            (number, None if text is None else str(text), None if label is None else str(label))
                        )
                    if limit and len(rows) >= limit:
                        break
            else:
                if cfg.format == "tsv":
                    reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                else:
                    reader = csv.reader(f)
                header = next(reader, None) if cfg.header else None
                text_col, label_col = (_column(header, fld, path) for fld in (cfg.text_field, cfg.label_field))
                for row in reader:
                    if not row:
                        continue
                    get = lambda col: row[col] if col < len(row) else None  # noqa: B023
                    rows.append((reader.line_num, get(text_col), get(label_col)))
                    if limit and len(rows) >= limit:
                        break
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise UserError(f"{path}: unreadable {cfg.format.upper()} ({e})") from None
    return rows


def infer_labels(rows) -> list[str]:
    """The sorted distinct non-empty labels (numerically when all are integers)."""
    values = {label.strip() for _, _, label in rows if label is not None and label.strip()}
    numeric = all(v.lstrip("-").isdigit() for v in values)
    return sorted(values, key=(lambda v: int(v)) if numeric else None)


def validate_rows(rows, labels: list[str], path: str, skip_bad: bool) -> tuple[list[str], np.ndarray]:
    """Texts and label ids of the good rows; bad rows raise one `UserError` naming them (or are skipped, reported)."""
    index = {label: i for i, label in enumerate(labels)}
    texts, ids, bad = [], [], []
    for number, text, label in rows:
        label = None if label is None else label.strip()
        if text is None and label is None:
            bad.append(f"line {number}: unreadable row (missing columns or invalid JSON)")
        elif not label:
            bad.append(f"line {number}: missing label")
        elif label not in index:
            bad.append(f"line {number}: unknown label {label!r} (known: {', '.join(labels)})")
        elif text is None or not text.strip():
            bad.append(f"line {number}: empty text")
        else:
            texts.append(text.strip())
            ids.append(index[label])
    if bad:
        shown = "; ".join(bad[:5]) + (f"; ... ({len(bad) - 5} more)" if len(bad) > 5 else "")
        if not skip_bad:
            raise UserError(f"{path}: {len(bad)} bad row(s): {shown}. Fix them or set data.skip_bad_rows=true")
        print(f"warning: {path}: skipped {len(bad)} bad row(s): {shown}", file=sys.stderr)
    return texts, np.asarray(ids, np.int32)


def encode_texts(tokenizer, texts: list[str], max_len: int) -> tuple[list[np.ndarray], int]:
    """Token ids ([CLS] ... [SEP]) of each text, truncated to `max_len` (keeping the final [SEP]); and how many were
    truncated."""
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    out, truncated = [], 0
    for ids in encoded:
        if len(ids) > max_len:
            ids = ids[: max_len - 1] + ids[-1:]
            truncated += 1
        out.append(np.asarray(ids, np.int32))
    return out, truncated


@dataclass
class Dataset:
    ids: list[np.ndarray]  # token ids per example
    labels: np.ndarray  # (n,) int32
    texts: list[str]


def load_dataset(path: str, cfg: ClassifyDataConfig, labels, tokenizer, limit: int = 0) -> tuple[Dataset, int]:
    rows = read_rows(path, cfg, limit)
    texts, label_ids = validate_rows(rows, labels, path, cfg.skip_bad_rows)
    if not texts:
        raise UserError(f"{path} has no usable rows")
    ids, truncated = encode_texts(tokenizer, texts, cfg.max_len)
    return Dataset(ids, label_ids, texts), truncated


def make_batches(ids, labels, batch_size, step, max_len, pad_id, rng=None) -> list[dict]:
    """Batches {ids (batch_size, L) int32, labels, weights (1 real / 0 padding row), index (-1 for padding rows)}
    with L a multiple of `step` (<= max_len), planned by the shared length bucketing (`batching.plan_buckets` with
    fixed rows). Shuffled within and across buckets when `rng` is given; in length order otherwise."""
    lengths = np.array([(len(x), 0) for x in ids], np.int64).reshape(-1, 2)
    buckets = plan_buckets(lengths, 0, step, min_batches=1, rows=batch_size, max_len=max_len)
    batches = []
    for position, index in assign_batches(buckets, rng):
        real = index >= 0
        batch_ids = np.full((batch_size, buckets[position].src_len), pad_id, np.int32)
        for row, i in enumerate(index[real]):
            batch_ids[row, : len(ids[i])] = ids[i]
        batch_labels = np.zeros(batch_size, np.int32)
        batch_labels[real] = labels[index[real]]
        batches.append({"ids": batch_ids, "labels": batch_labels, "weights": real.astype(np.float32), "index": index})
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def padding_stats(batches: list[dict], pad_id: int) -> dict:
    real = sum(int((b["ids"] != pad_id).sum()) for b in batches)
    total = sum(b["ids"].size for b in batches)
    return {
        "batches": len(batches),
        "shapes": len({b["ids"].shape for b in batches}),
        "real_tokens": real / max(total, 1),
    }


class ClassificationBatches:
    """Endless training batches of labelled examples, epoch after epoch, each epoch shuffled by
    `default_rng([seed, epoch])`: a pure function of (seed, epoch), so `state()` / `restore()` continue an interrupted
    run with exactly the batches it would have seen (the engine saves the state with every checkpoint)."""

    def __init__(self, dataset: "Dataset", batch_size: int, step: int, max_len: int, pad_id: int, seed: int = 0):
        self.dataset, self.seed = dataset, seed
        self._make = lambda rng: make_batches(dataset.ids, dataset.labels, batch_size, step, max_len, pad_id, rng)
        plan = self._make(None)  # the shapes and counts are the same every epoch; only the order changes
        self.num_batches_per_epoch = len(plan)
        self._stats = padding_stats(plan, pad_id)
        settings = [batch_size, step, max_len, pad_id, seed, len(dataset.ids)]
        digest = hashlib.sha256(json.dumps(settings).encode() + np.asarray(dataset.labels).tobytes())
        for ids in dataset.ids:
            digest.update(np.asarray(ids, np.int32).tobytes())
        self.fingerprint = digest.hexdigest()[:16]
        self.epoch, self.index = 0, 0
        self._cached: tuple[int, list] | None = None

    def __len__(self) -> int:
        return self.num_batches_per_epoch

    def stats(self) -> dict:
        """Batches per epoch, distinct shapes and the share of real (non-padding) tokens."""
        return self._stats

    def _epoch(self, epoch: int) -> list[dict]:
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, self._make(np.random.default_rng([self.seed % 2**32, epoch])))
        return self._cached[1]

    def __iter__(self):
        while True:
            batches = self._epoch(self.epoch)
            while self.index < len(batches):
                batch = batches[self.index]
                self.index += 1
                yield {k: batch[k] for k in ("ids", "labels", "weights")}
            self.epoch, self.index = self.epoch + 1, 0

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "fingerprint": self.fingerprint}

    def restore(self, state: dict) -> None:
        if state.get("fingerprint") != self.fingerprint:
            raise UserError(
                "the training data or batching settings (batch_size, max_len, length_bucket_step, seed) differ from "
                "the run being resumed; fix: resume with the original data and config, or start a new run"
            )
        self.epoch, self.index = int(state["epoch"]), min(int(state["index"]), self.num_batches_per_epoch)
