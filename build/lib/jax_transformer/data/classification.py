"""Labelled text for classification: CSV / TSV / JSONL rows -> validated (text, label id) -> token ids -> batches.

Rows with no label, a label outside `data.labels`, or empty text are bad rows: they are reported with their file
and line number (the run refuses the file, or skips them with `data.skip_bad_rows`). Batches come in a few fixed
shapes (padded lengths are multiples of `length_bucket_step`, rows always `batch_size`, a short last batch padded
with empty rows of weight 0), so `jit` compiles each shape once.

The training file is prepared once as array_record (`open_rows`, cached by content) and streamed
(`ClassificationStream`): rows are tokenized as they come and batched a window at a time, so memory is bounded by
the window, not the file. Evaluation sets are read into memory (`load_dataset`).
"""

import csv
import gzip
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from jax_transformer.config import ClassifyDataConfig, UserError
from jax_transformer.data import pipeline
from jax_transformer.data.batching import assign_batches, plan_buckets
from jax_transformer.data.stream import BUCKET_WINDOW, WindowStream

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


def iter_rows(path: str, cfg: ClassifyDataConfig, limit: int = 0) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, raw label) of each row, read as they come; None where a field is missing."""
    count = 0
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
                        yield number, None, None
                    else:
                        label = record.get(cfg.label_field)
                        text = record.get(cfg.text_field)
                        yield number, None if text is None else str(text), None if label is None else str(label)
                    count += 1
                    if limit and count >= limit:
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
                    yield reader.line_num, get(text_col), get(label_col)
                    count += 1
                    if limit and count >= limit:
                        break
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise UserError(f"{path}: unreadable {cfg.format.upper()} ({e})") from None
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; EOFError: a truncated .gz
        raise UserError(f"{path}: cannot read it ({e}); fix: replace the file (a .gz file must be gzip data)") from None


def read_rows(path: str, cfg: ClassifyDataConfig, limit: int = 0) -> list[tuple[int, str | None, str | None]]:
    """`iter_rows` as a list."""
    return list(iter_rows(path, cfg, limit))


def infer_labels(rows) -> list[str]:
    """The sorted distinct non-empty labels (numerically when all are integers)."""
    values = {label.strip() for _, _, label in rows if label is not None and label.strip()}
    numeric = all(v.lstrip("-").isdigit() for v in values)
    return sorted(values, key=(lambda v: int(v)) if numeric else None)


class RowChecker:
    """Checks rows one at a time: `check(row)` -> (text, label id), or None for a bad row (no label, a label outside
    `labels`, empty text), which is noted; `finish()` then raises one `UserError` naming the bad rows (or, with
    `skip_bad`, reports them on stderr)."""

    def __init__(self, labels: list[str], path: str, skip_bad: bool):
        self.index, self.path, self.skip_bad = {label: i for i, label in enumerate(labels)}, path, skip_bad
        self.labels, self.bad, self.bad_count = labels, [], 0

    def __call__(self, row) -> tuple[str, int] | None:
        number, text, label = row
        label = None if label is None else label.strip()
        if text is None and label is None:
            problem = "unreadable row (missing columns or invalid JSON)"
        elif not label:
            problem = "missing label"
        elif label not in self.index:
            problem = f"unknown label {label!r} (known: {', '.join(self.labels)})"
        elif text is None or not text.strip():
            problem = "empty text"
        else:
            return text.strip(), self.index[label]
        self.bad_count += 1
        if len(self.bad) < 5:
            self.bad.append(f"line {number}: {problem}")
        return None

    def finish(self) -> None:
        if not self.bad_count:
            return
        more = self.bad_count - len(self.bad)
        shown = "; ".join(self.bad) + (f"; ... ({more} more)" if more else "")
        if not self.skip_bad:
            raise UserError(
                f"{self.path}: {self.bad_count} bad row(s): {shown}. Fix them or set data.skip_bad_rows=true"
            )
        print(f"warning: {self.path}: skipped {self.bad_count} bad row(s): {shown}", file=sys.stderr)


def validate_rows(rows, labels: list[str], path: str, skip_bad: bool) -> tuple[list[str], np.ndarray]:
    """Texts and label ids of the good rows; bad rows raise one `UserError` naming them (or are skipped, reported)."""
    check = RowChecker(labels, path, skip_bad)
    good = [example for example in map(check, rows) if example is not None]
    check.finish()
    return [text for text, _ in good], np.asarray([label for _, label in good], np.int32)


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


# ---------------------------------------------------------------------------------------------------------------------
# The training rows, prepared once and streamed
# ---------------------------------------------------------------------------------------------------------------------


_READER_VERSION = 3  # bump when reading or checking rows changes, so cached preparations are rebuilt


def _good_rows(path: str, cfg: ClassifyDataConfig, labels: list[str], limit: int):
    """The good rows of a file as {'text', 'label'} examples, read and checked as a stream (`RowChecker`): bad rows
    stop it with one line at the end, or are skipped and reported (data.skip_bad_rows)."""
    check, kept = RowChecker(labels, path, cfg.skip_bad_rows), 0
    for row in iter_rows(path, cfg, limit):
        example = check(row)
        if example is not None:
            yield {"text": example[0], "label": example[1]}
            kept += 1
    check.finish()
    if not kept:
        raise UserError(f"{path} has no usable rows")


class LabelledRows:
    """Random access to a prepared file's (text, label id) rows (`open_rows`), read only when asked for."""

    def __init__(self, records, identity: str):
        self.records, self.identity = records, identity

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices) -> list[tuple[str, int]]:
        return [(r["text"].decode("utf-8"), int(r["label"])) for r in self.records.__getitems__(list(indices))]


def open_rows(path: str, cfg: ClassifyDataConfig, labels: list[str], limit: int = 0) -> LabelledRows:
    """The good rows of `path` (text, label id), prepared once as array_record (`pipeline.prepare_local`, in
    cfg.cache_dir or the default data cache), named by the file's content and every setting that changes what is
    kept (format, fields, header, labels, skip_bad_rows, the row limit): an edited file or setting is prepared again."""
    if not os.path.isfile(path):
        raise UserError(f"no data file at {path}")
    key = [_READER_VERSION, cfg.format, cfg.text_field, cfg.label_field, cfg.header, labels, cfg.skip_bad_rows, limit,
           pipeline.content_digest(path)]  # fmt: skip
    name = f"rows-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]}"
    builder = pipeline.prepare_local(cfg.cache_dir or pipeline.default_cache_dir(), "local_labelled_text", name,
                                     {"text": "text", "label": "int32"}, _good_rows(path, cfg, labels, limit), path)
    return LabelledRows(builder.as_data_source(split="data"), identity=name)


class ClassificationStream(WindowStream):
    """Endless training batches of labelled examples streamed from prepared rows (`open_rows`, or a list of (text,
    label id)), tokenized as they come: windows of rows (`stream.WindowStream`; SST-2's 67,349 rows are one window)
    planned into `make_batches`' shapes (`batch_size` rows, lengths multiples of `step` up to `max_len`), each window's
    batches in an order shuffled from (seed, window). `state()` / `restore()` continue a run exactly (the engine saves
    the state with every checkpoint)."""

    def __init__(self, source, tokenizer, batch_size: int, step: int, max_len: int, pad_id: int, seed: int = 0,
                 identity: str = "", window: int = BUCKET_WINDOW):  # fmt: skip
        self._tokenizer, self._layout = tokenizer, (batch_size, step, max_len, pad_id)
        if not identity:  # a list of rows: its texts and labels name it
            identity = hashlib.sha256(json.dumps([list(row) for row in source]).encode()).hexdigest()
        self._start_windows(source, [identity, *self._layout], seed, True, window, prefetch=2)

    def __len__(self) -> int:
        """Batches per epoch: exact when the rows fit in one window, else the first window's count scaled."""
        if not hasattr(self, "_per_epoch"):
            stats = self.stats()
            self._per_epoch = max(1, round(stats["batches"] * self.share / stats["window"]))
        return self._per_epoch

    def _plan_window(self, records, rng):
        ids, _ = encode_texts(self._tokenizer, [text for text, _ in records], self._layout[2])
        labels = np.asarray([label for _, label in records], np.int32)
        batches = make_batches(ids, labels, *self._layout, rng=rng)
        for batch in batches:
            batch["_read"] = int((batch.pop("index") >= 0).sum())
        return batches

    def _tokens(self, batch):
        return int((batch["ids"] != self._layout[3]).sum()), batch["ids"].size
