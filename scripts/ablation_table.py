"""The ablation table of a set of Multi30k runs: one row per arm (several seeds), each against a baseline arm.

  python scripts/ablation_table.py RUNS --baseline baseline
  python scripts/ablation_table.py RUNS --baseline baseline --results results_avg5.json
  python scripts/ablation_table.py RUNS --baseline baseline --partial   # while some runs are still training
  python scripts/ablation_table.py RECORDS --baseline baseline --add RUNS   # keep RUNS' records, then the table
  python scripts/ablation_table.py RECORDS --baseline baseline --doc docs/results.md   # and write it there

RUNS/ARM/SEED/ are run directories trained and scored by `scripts/multi30k_results.py ... run_dir=RUNS/ARM/SEED`
(each holds config.json, metrics.jsonl and the results file). The `change` column is the difference between the
arm's config.json and the baseline's, so a row says what was changed, whatever its folder is called; the seed and
settings that do not change the trained weights (logging, in-loop BLEU, the run directory, the mesh) are left out.
Each row gives the val lc-tok BLEU of every seed, their mean and range, the mean's difference from the baseline's
mean, a verdict by the seed rule (two seeds per arm, a third where the difference is under the seed spread: the
larger of the two arms' val ranges; "better" / "worse" once it is not), the mean perplexity of the last in-loop
validation (the trained weights, not averaged; blank unless every seed has one; marked "*" where the arm changes the
vocabulary or the text (data.path): a perplexity per piece of another segmentation does not compare), the mean
test2016 lc-tok BLEU (reported: choose on val only) and each seed's training minutes (not averaged: runs that shared
the machine are slower). Under the table, the seed-to-seed standard deviation of val BLEU pooled over the arms with
two or more seeds, and the standard deviation it gives a difference of two arms' means: how fine a difference the
table can tell from the seed. Prints a Markdown table; exits 1 with one line on a missing, damaged or unscored run.

A run's checkpoints are large and its directory is not kept for ever; the table needs only three small files of it.
`--add RUNS` copies config.json, the results file and metrics.jsonl of every scored run RUNS/ARM/SEED into the same
place under the first argument (a folder that can be committed: docs/ablation), leaves records that are already
there as they are (and stops with one line where one differs from its run), then prints the table from the records.
`--doc FILE` also writes the table into FILE (docs/results.md) between the lines `<!-- ablation table -->` and
`<!-- end of ablation table -->`, leaving the rest of the file as it is.
A record whose run directory was lost before it was kept holds its config.json and a results file written by hand
with a "recorded" entry saying where its figures come from; it has no metrics.jsonl, and its seeds are marked.
"""

import argparse
import filecmp
import json
import os
import shutil
import sys

from jax_transformer.config import Config, ConfigError
from jax_transformer.train.run_log import read_metrics


class AblationError(Exception):
    """A missing, unscored or inconsistent run: one line for the user."""


RESULT_KEYS = ("val_lc_tok_bleu", "test2016_lc_tok_bleu")
# settings that change how text is cut into pieces, or the text itself (another data.path: its own vocabulary and
# validation text): the perplexity (per piece) of such an arm is not comparable
TOKENIZATION = ("data.vocab_size", "model.vocab_size", "model.target_vocab_size", "data.spm_", "data.path")
IGNORED = {"name", "run_dir", "seed", "mesh", "train.log_every", "train.bleu_every", "train.bleu_max_sentences"}


def flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def settings(config: dict) -> dict:
    return {k: v for k, v in flatten(config).items() if k not in IGNORED and k.split(".")[0] not in IGNORED}


DAMAGED = (json.JSONDecodeError, UnicodeDecodeError)


def damaged(path: str, err: Exception) -> AblationError:
    return AblationError(f"{path} is damaged ({err}); score the run again with scripts/multi30k_results.py")


def read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except DAMAGED as err:
        raise damaged(path, err) from err


RECORD_FILES = ("config.json", "metrics.jsonl")  # with the results file


def read_run(run_dir: str, results_name: str) -> dict:
    """Settings, results and last in-loop validation perplexity of one scored run; AblationError if incomplete."""
    paths = {name: os.path.join(run_dir, name) for name in ("config.json", results_name, "metrics.jsonl")}

    def require(name: str) -> None:
        if not os.path.exists(paths[name]):
            hint = "train and score it with scripts/multi30k_results.py" if name != "config.json" else "not a run"
            raise AblationError(f"{paths[name]} is missing ({hint})")

    require("config.json")
    require(results_name)
    results = read_json(paths[results_name])
    recorded = "recorded" in results  # a record written by hand: its run directory (and log) was lost
    if not recorded:
        require("metrics.jsonl")
    try:  # through the typed config: a key an older run's config.json lacks reads as its default
        config = Config.load(paths["config.json"]).to_dict()
    except ConfigError as err:
        raise AblationError(f"{paths['config.json']}: {err}") from err
    for key in RESULT_KEYS:
        if not isinstance(results.get(key), (int, float)):
            raise AblationError(f"{paths[results_name]} has no {key}; score the run with scripts/multi30k_results.py")
    ppl = None
    if not recorded:
        try:
            records = read_metrics(run_dir)
        except DAMAGED as err:
            raise damaged(paths["metrics.jsonl"], err) from err
        ppl = next((r["ppl"] for r in reversed(records) if r.get("kind") == "valid" and "ppl" in r), None)
    return {"settings": settings(config), "results": results, "ppl": ppl, "recorded": recorded}


def subfolders(path: str) -> list[str]:
    return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))


def same_file(a: str, b: str) -> bool:
    return os.path.exists(b) and filecmp.cmp(a, b, shallow=False)


def keep_records(runs_root: str, records_root: str, results_name: str) -> list[str]:
    """Copy the record files of every scored run RUNS/ARM/SEED to RECORDS/ARM/SEED; returns the runs newly kept."""
    kept = []
    runs = [(arm, seed) for arm in subfolders(runs_root) for seed in subfolders(os.path.join(runs_root, arm))]
    for arm, seed in runs:
        run, record = os.path.join(runs_root, arm, seed), os.path.join(records_root, arm, seed)
        if not os.path.exists(os.path.join(run, results_name)):
            continue  # still training, or not a run
        read_run(run, results_name)  # whole and readable before it is kept
        names = (results_name, *RECORD_FILES)
        if os.path.isdir(record):
            for name in names:
                if not same_file(os.path.join(run, name), os.path.join(record, name)):
                    raise AblationError(f"{record}/{name} differs from {run}/{name}: remove the record first if "
                                        "the run was trained or scored again")  # fmt: skip
            continue
        os.makedirs(record)
        for name in names:
            shutil.copyfile(os.path.join(run, name), os.path.join(record, name))
        kept.append(f"{arm}/{seed}")
    return kept


def changed_keys(arm: dict, baseline: dict) -> list[str]:
    return [k for k in sorted(set(arm) | set(baseline)) if arm.get(k) != baseline.get(k)]


def describe_change(arm: dict, baseline: dict) -> str:
    diff = [f"{k}={arm.get(k)!r}" for k in changed_keys(arm, baseline)]
    return " ".join(diff) if diff else "(none)"


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def verdict(delta: float, seeds: int, spread: float) -> str:
    """The seed rule: two seeds per arm; a third where the difference from the baseline is under the seed spread
    (`spread`: the larger of the baseline's and the arm's val range)."""
    if seeds < 2:
        return "run a second seed"
    if abs(delta) >= spread:
        return "better" if delta > 0 else "worse"
    return "run a third seed" if seeds == 2 else f"no clear difference ({seeds} seeds)"


def pooled_spread(arms: list[list[float]]) -> str:
    """One line on how finely the table resolves: the seed-to-seed standard deviation of val BLEU pooled over the arms
    with two or more seeds (each arm's squared deviations from its own mean, over the sum of its seeds less one), and
    what it makes the standard deviation of the difference of two arms' means with 2, 3 and 5 seeds each
    (sd * sqrt(2 / seeds)). Empty when no arm has two seeds."""
    repeated = [vals for vals in arms if len(vals) > 1]
    dof = sum(len(vals) - 1 for vals in repeated)
    if not dof:
        return ""
    squares = sum((v - mean(vals)) ** 2 for vals in repeated for v in vals)
    sd = (squares / dof) ** 0.5
    diffs = ", ".join(f"{sd * (2 / n) ** 0.5:.2f} with {n}" for n in (2, 3, 5))
    runs = sum(len(vals) for vals in repeated)
    return (
        f"\nseed-to-seed standard deviation of val BLEU, pooled over the {len(repeated)} arm(s) with two or more seeds "
        f"({runs} runs, {dof} degrees of freedom): {sd:.2f}; the difference of two arms' means then has a standard "
        f"deviation of {diffs} seeds per arm"
    )


def table(runs_root: str, baseline: str, results_name: str, partial: bool = False) -> str:
    arms = subfolders(runs_root)
    if baseline not in arms:
        raise AblationError(f"no baseline arm {baseline!r} in {runs_root} (arms: {', '.join(arms) or 'none'})")
    data, unfinished = {}, []
    for arm in arms:
        folder = os.path.join(runs_root, arm)
        seeds = subfolders(folder)
        if not seeds:
            raise AblationError(f"{folder} holds no run directories (expected {folder}/SEED/)")
        if partial:  # runs still training (no results file yet) are listed under the table instead
            scored = [s for s in seeds if os.path.exists(os.path.join(folder, s, results_name))]
            unfinished += [f"{arm}/{s}" for s in seeds if s not in scored]
            seeds = scored
        if seeds:
            data[arm] = [read_run(os.path.join(folder, seed), results_name) for seed in seeds]
    if baseline not in data:
        raise AblationError(f"no run of the baseline arm {baseline!r} is scored yet")
    base_settings = data[baseline][0]["settings"]
    vals = {arm: [r["results"]["val_lc_tok_bleu"] for r in runs] for arm, runs in data.items()}  # per seed
    base_val, base_range = mean(vals[baseline]), max(vals[baseline]) - min(vals[baseline])
    rows = [
        "| arm | change against the baseline | seeds | val lc-tok BLEU per seed | val mean (range) "
        "| val mean - baseline | verdict | last in-loop val ppl | test2016 lc-tok mean | minutes per seed |",
        "|---|---|---:|---|---:|---:|---|---:|---:|---:|",
    ]
    marked = False
    for arm in [baseline] + [a for a in data if a != baseline]:
        runs = data[arm]
        changes = {describe_change(r["settings"], base_settings) for r in runs}
        if len(changes) > 1:
            raise AblationError(f"the seeds of arm {arm!r} differ in more than the seed: {sorted(changes)}")
        val = vals[arm]
        test = [r["results"]["test2016_lc_tok_bleu"] for r in runs]
        ppl, minutes = [r["ppl"] for r in runs], [r["results"].get("train_minutes") for r in runs]
        resegmented = any(k.startswith(TOKENIZATION) for k in changed_keys(runs[0]["settings"], base_settings))
        ppl_cell = f"{mean(ppl):.2f}{'*' if resegmented else ''}" if None not in ppl else ""
        marked = marked or (resegmented and ppl_cell != "")
        minutes_cell = " / ".join("" if m is None else f"{m:.1f}" for m in minutes)  # runs may share the machine
        change = "-" if arm == baseline else changes.pop()
        delta = "" if arm == baseline else f"{mean(val) - base_val:+.2f}"
        spread = max(base_range, max(val) - min(val))
        judged = "" if arm == baseline else verdict(mean(val) - base_val, len(runs), spread)
        per_seed = " / ".join(f"{v:.2f}{'†' if r['recorded'] else ''}" for v, r in zip(val, runs, strict=True))
        rows.append(
            f"| {arm} | {change} | {len(runs)} | {per_seed} | "
            f"{mean(val):.2f} ({max(val) - min(val):.2f}) | {delta} | {judged} | {ppl_cell} | "
            f"{mean(test):.2f} | {minutes_cell} |"
        )
    spread_line = pooled_spread(list(vals.values()))
    if spread_line:
        rows.append(spread_line)
    if marked:
        rows.append("\n\\* perplexity per piece of another vocabulary or text: not comparable with the baseline's")
    if any(r["recorded"] for runs in data.values() for r in runs):
        rows.append("\n† a record written by hand, its run directory lost: the figures recorded when it was scored")
    if unfinished:
        rows.append(f"\nnot scored yet (left out): {', '.join(unfinished)}")
    return "\n".join(rows)


DOC_START, DOC_END = "<!-- ablation table -->", "<!-- end of ablation table -->"


def split_doc(path: str) -> tuple[str, str]:
    """The Markdown file `path` as (up to and including its DOC_START line, from the newline before DOC_END on)."""
    if not os.path.isfile(path):
        raise AblationError(f"{path} does not exist")
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    start, end = doc.find(DOC_START + "\n"), doc.find("\n" + DOC_END)
    if start < 0 or end < start or doc.count(DOC_START) != 1 or doc.count(DOC_END) != 1:
        raise AblationError(f"{path} needs one line {DOC_START} and, after it, one line {DOC_END} around the table")
    return doc[: start + len(DOC_START) + 1], doc[end:]


def write_into_doc(path: str, text: str) -> None:
    """Replace what lies between the DOC_START and DOC_END lines of the Markdown file `path` with `text`."""
    before, after = split_doc(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(before + "\n" + text + "\n" + after)  # blank lines around the table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", help="folder of arms: RUNS/ARM/SEED/ run directories (or their records)")
    parser.add_argument("--baseline", required=True, help="the arm every other is compared with")
    parser.add_argument("--results", default="results.json", help="results file of each run (results_avgN.json)")
    parser.add_argument(
        "--partial",
        action="store_true",
        help="leave out runs without a results file (still training) and list them under the table",
    )
    parser.add_argument(
        "--add",
        metavar="RUNS",
        default="",
        help="first keep the records of the scored runs in RUNS/ARM/SEED/ under the first argument",
    )
    parser.add_argument(
        "--doc",
        metavar="FILE",
        default="",
        help=f"also write the table into FILE between the lines {DOC_START} and {DOC_END}",
    )
    args = parser.parse_args(argv)
    for folder in (args.runs, args.add):
        if folder and not os.path.isdir(folder):
            print(f"error: {folder} is not a folder", file=sys.stderr)
            return 1
    if args.doc and args.partial:
        print("error: --doc writes the table of scored runs only: leave out --partial", file=sys.stderr)
        return 1
    try:
        if args.doc:
            split_doc(args.doc)  # before anything is copied
        if args.add:
            kept = keep_records(args.add, args.runs, args.results)
            print(f"kept {len(kept)} new record(s) in {args.runs}: {', '.join(kept) or 'none'}", file=sys.stderr)
        text = table(args.runs, args.baseline, args.results, args.partial)
        if args.doc:
            write_into_doc(args.doc, text)
        print(text)
    except AblationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
