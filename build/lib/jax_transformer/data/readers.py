"""Reading and validating local corpora: plain or gzipped text (one sentence per line, one file per language), TSV
and JSONL (one file per split, configurable columns; dotted keys reach nested JSON objects).

Bad input (missing files, misaligned or empty lines, invalid UTF-8, absurdly long lines, missing fields) raises a
one-line `UserError` naming the file, the line and the fix. `data.py` prepares what these functions read as TFDS
array_record files; `evaluate` reads test splits (and their lists of references) with them directly.
"""

import gzip
import json
import os
import sys

from jax_transformer.config import DataConfig, UserError

MAX_LINE_CHARS = 20_000  # a "sentence" longer than this is a broken file (e.g. \r line ends), not a long sentence


def _find_file(folder: str, name: str) -> str:
    """`folder/name`, or `folder/name.gz` when only the gzipped file exists."""
    for candidate in (os.path.join(folder, name), os.path.join(folder, name + ".gz")):
        if os.path.isfile(candidate):
            return candidate
    if not os.path.isdir(folder):
        raise UserError(f"data folder {folder} does not exist; fix: set data.path to the folder holding {name}")
    raise UserError(
        f"missing file {os.path.join(folder, name)}[.gz]; fix: add it, or set data.path, data.src_lang/tgt_lang or "
        "data.train_split/valid_split/test_split to match the files there"
    )


def read_lines(path: str | None) -> list[str]:
    """The lines of a UTF-8 text file (gzipped if it ends in .gz; stdin when `path` is None or '-'), split on '\\n'
    only.

    str.splitlines() would also split on characters such as U+2028 or U+0085 that occur inside real sentences and
    shift one side of a parallel corpus against the other (or a translation against its source line); so we split
    the raw text on newlines ourselves.
    """
    try:
        if path in (None, "-"):
            data, path = sys.stdin.buffer.read(), "<stdin>"
        else:
            with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
                data = f.read()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; fix: check the path") from None
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path}: cannot read it ({e}); fix: replace the file (a .gz file must be gzip data)") from None
    try:
        text = data.decode("utf-8-sig")  # -sig: drop a byte-order mark some editors write
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(
            f"{path}:{line}: invalid UTF-8 (byte 0x{data[e.start]:02x}); fix: convert the file to UTF-8, "
            "e.g. iconv -f latin1 -t utf-8"
        ) from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _checked(text: str, path: str, line: int) -> str:
    text = text.strip()
    if not text:
        raise UserError(f"{path}:{line}: empty line; fix: delete this pair (the same line on both sides) or fill it in")
    if len(text) > MAX_LINE_CHARS:
        raise UserError(
            f"{path}:{line}: a line of {len(text)} characters (limit {MAX_LINE_CHARS}); fix: put one sentence per "
            "line (old Mac files end lines with \\r only)"
        )
    return text


def record_field(record: dict, key: str, where: str):
    """record[key], where a dotted key reaches into nested objects ('translation.en'); bytes are decoded."""
    value = record.get(key) if isinstance(record, dict) else None
    if value is None and "." in key:
        value = record
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        keys = ", ".join(map(str, record)) if isinstance(record, dict) else type(record).__name__
        raise UserError(
            f"{where}: no text field {key!r} (found: {keys}); fix: set data.src_field/data.tgt_field "
            "(dots reach nested keys, e.g. translation.en)"
        )
    return value


def split_files(cfg: DataConfig, split: str) -> list[str]:
    if cfg.format == "files":
        return [_find_file(cfg.path, f"{split}.{cfg.src_lang}"), _find_file(cfg.path, f"{split}.{cfg.tgt_lang}")]
    return [_find_file(cfg.path, f"{split}.{cfg.format}")]


def read_local_pairs(cfg: DataConfig, split: str) -> list[tuple[str, str]]:
    """Read and validate one split of local files (format files/tsv/jsonl) without TFDS; the builder calls this."""
    files = split_files(cfg, split)
    keys = (cfg.src_field or cfg.src_lang, cfg.tgt_field or cfg.tgt_lang)
    pairs = {"files": _text_pairs, "tsv": _tsv_pairs, "jsonl": _jsonl_pairs}[cfg.format](files, keys)
    if not pairs:
        raise UserError(f"{files[0]} has no sentence pairs; fix: point data.path at a folder with the {split} split")
    return pairs


def _text_pairs(files: list[str], keys: tuple[str, str]) -> list[tuple[str, str]]:
    """Two line-aligned files, one sentence per line."""
    (src_path, tgt_path), (src, tgt) = files, [read_lines(path) for path in files]
    if len(src) != len(tgt):
        short = src_path if len(src) < len(tgt) else tgt_path
        raise UserError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)} ({short} ends first, at line "
            f"{min(len(src), len(tgt)) + 1}); fix: make the files line-aligned translations, one sentence per line"
        )
    pairs = zip(src, tgt, strict=True)
    return [(_checked(s, src_path, i), _checked(t, tgt_path, i)) for i, (s, t) in enumerate(pairs, 1)]


def _tsv_pairs(files: list[str], keys: tuple[str, str]) -> list[tuple[str, str]]:
    """Tab-separated columns, named by a header line or, when both keys are numbers, by 0-based index (no header)."""
    path, lines, first, header = files[0], read_lines(files[0]), 1, []
    if not all(key.isdigit() for key in keys):
        header = [name.strip() for name in lines[0].split("\t")] if lines else []
        for key in keys:
            if not key.isdigit() and key not in header:
                raise UserError(
                    f"{path}:1: no column {key!r} in the header {header}; fix: set data.src_field/data.tgt_field "
                    "to a header name or a 0-based column index"
                )
        lines, first = lines[1:], 2
    columns = [int(key) if key.isdigit() else header.index(key) for key in keys]
    pairs = []
    for i, line in enumerate(lines, first):
        cells = line.split("\t")
        if len(cells) <= max(columns):
            _checked(line, path, i)  # a blank line gets the empty-line message
            raise UserError(
                f"{path}:{i}: {len(cells)} tab-separated column(s), need {max(columns) + 1}; fix: one pair per line, "
                "columns separated by tabs"
            )
        pairs.append((_checked(cells[columns[0]], path, i), _checked(cells[columns[1]], path, i)))
    return pairs


def _jsonl_pairs(files: list[str], keys: tuple[str, str]) -> list[tuple[str, str]]:
    """One JSON object per line; dotted keys reach nested objects ({"translation": {"en": ...}})."""
    path, pairs = files[0], []
    for i, line in enumerate(read_lines(path), 1):
        if not line.strip():
            _checked(line, path, i)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{i}: invalid JSON ({e.msg}, column {e.colno}); fix: one object per line") from None
        pairs.append(tuple(_checked(record_field(record, key, f"{path}:{i}"), path, i) for key in keys))
    return pairs


def read_sources_and_references(cfg: DataConfig, split: str) -> tuple[list[str], list[list[str]]]:
    """The sources of a local split and, for each, its references: the list in cfg.references_field (jsonl; several
    summaries per document, e.g. DialogSum test), else the target text as the one reference."""
    if not cfg.references_field:
        pairs = read_local_pairs(cfg, split)
        return [source for source, _ in pairs], [[target] for _, target in pairs]
    path = split_files(cfg, split)[0]
    sources, references = [], []
    for i, line in enumerate(read_lines(path), 1):
        where = f"{path}:{i}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: invalid JSON ({e.msg}, column {e.colno}); fix: one object per line") from None
        refs = record.get(cfg.references_field) if isinstance(record, dict) else None
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r.strip() for r in refs):
            raise UserError(
                f"{where}: field {cfg.references_field!r} is not a non-empty list of texts; fix: set "
                "data.references_field to such a field, or to '' to score against the target field"
            )
        sources.append(_checked(record_field(record, cfg.src_field or cfg.src_lang, where), path, i))
        references.append([r.strip() for r in refs])
    if not sources:
        raise UserError(f"{path} has no examples; fix: point data.path at a folder with the {split} split")
    return sources, references
