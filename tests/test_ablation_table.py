"""scripts/ablation_table.py: rows from scored runs, the change read from the configs, one line for a bad run."""

import json
import os

from tests.scripts import load_script

ablation_table = load_script("ablation_table")


def _run(folder, seed, val, test, ppl, attention_dropout=0.0, bleu_every=500, vocab=8000, path="data/multi30k"):
    os.makedirs(folder)
    config = {"name": "x", "run_dir": str(folder), "seed": seed, "mesh": {"data": -1},
              "model": {"dropout": 0.3, "attention_dropout": attention_dropout, "vocab_size": vocab},
              "data": {"vocab_size": vocab, "path": path},
              "train": {"steps": 4300, "bleu_every": bleu_every}}  # fmt: skip
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)  # as the real files: one value over many lines
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump({"val_lc_tok_bleu": val, "test2016_lc_tok_bleu": test, "train_minutes": 50.0 + seed}, f, indent=2)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"kind": "valid", "step": 100, "ppl": ppl + 1}) + "\n")
        f.write(json.dumps({"kind": "train", "step": 150, "loss": 1.0}) + "\n")
        f.write(json.dumps({"kind": "valid", "step": 200, "ppl": ppl}) + "\n")


def test_rows_give_each_seed_the_mean_range_and_the_change_from_the_configs(tmp_path, capsys):
    _run(tmp_path / "base" / "s0", 0, 40.0, 39.0, 5.0)
    _run(tmp_path / "base" / "s1", 1, 41.0, 39.5, 4.8, bleu_every=100000)  # in-loop BLEU is no change
    _run(tmp_path / "attn" / "s0", 0, 41.5, 40.0, 4.9, attention_dropout=0.1)
    _run(tmp_path / "attn" / "s1", 1, 42.5, 40.5, 4.7, attention_dropout=0.1)
    assert ablation_table.main([str(tmp_path), "--baseline", "base"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6  # the table, a blank line, the pooled seed spread
    assert lines[2] == "| base | - | 2 | 40.00 / 41.00 | 40.50 (1.00) |  |  | 4.90 | 39.25 | 50.0 / 51.0 |"
    assert lines[3] == (
        "| attn | model.attention_dropout=0.1 | 2 | 41.50 / 42.50 | 42.00 (1.00) | +1.50 | better | 4.80 | 40.25 "
        "| 50.0 / 51.0 |"
    )


def test_a_perplexity_over_another_vocabulary_is_marked_not_comparable(tmp_path, capsys):
    _run(tmp_path / "base" / "s0", 0, 40.0, 39.0, 5.0)
    _run(tmp_path / "attn" / "s0", 0, 41.0, 39.0, 4.9, attention_dropout=0.1)
    assert ablation_table.main([str(tmp_path), "--baseline", "base"]) == 0
    assert "*" not in capsys.readouterr().out  # the same pieces: comparable, nothing marked
    _run(tmp_path / "vocab6k" / "s0", 0, 39.5, 39.2, 4.6, vocab=6000)
    assert ablation_table.main([str(tmp_path), "--baseline", "base"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    row = next(line for line in lines if line.startswith("| vocab6k"))
    assert "data.vocab_size=6000 model.vocab_size=6000" in row and "| 4.60* |" in row
    assert next(line for line in lines if line.startswith("| attn")).count("*") == 0
    assert lines[-1] == "\\* perplexity per piece of another vocabulary or text: not comparable with the baseline's"
    _run(tmp_path / "lowercase" / "s0", 0, 41.0, 40.7, 4.6, path="data/multi30k_lowercased")  # other text, own pieces
    assert ablation_table.main([str(tmp_path), "--baseline", "base"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| lowercase"))
    assert "data.path='data/multi30k_lowercased'" in row and "| 4.60* |" in row


def test_an_unscored_run_or_seeds_that_differ_give_one_line(tmp_path, capsys):
    _run(tmp_path / "base" / "s0", 0, 40.0, 39.0, 5.0)
    _run(tmp_path / "mixed" / "s0", 0, 40.0, 39.0, 5.0, attention_dropout=0.1)
    _run(tmp_path / "mixed" / "s1", 1, 40.0, 39.0, 5.0, attention_dropout=0.2)
    assert ablation_table.main([str(tmp_path), "--baseline", "base"]) == 1
    assert "differ in more than the seed" in capsys.readouterr().err
    assert ablation_table.main([str(tmp_path), "--baseline", "nope"]) == 1
    assert "no baseline arm 'nope'" in capsys.readouterr().err
    with open(tmp_path / "base" / "s0" / "results.json", "w") as f:
        f.write('{"val_lc_tok_bleu": 40.0, "test2016_lc')  # cut short by a killed job
    assert ablation_table.main([str(tmp_path), "--baseline", "base"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "results.json is damaged" in err
    with open(tmp_path / "base" / "s0" / "results.json", "w") as f:
        f.write('{"val_lc_tok_bleu": 40.0}')
    assert ablation_table.main([str(tmp_path), "--baseline", "base"]) == 1
    assert "has no test2016_lc_tok_bleu" in capsys.readouterr().err
    with open(tmp_path / "base" / "s0" / "results.json", "w") as f:
        json.dump({"val_lc_tok_bleu": 40.0, "test2016_lc_tok_bleu": 39.0}, f)
    with open(tmp_path / "base" / "s0" / "metrics.jsonl", "a") as f:
        f.write('{"kind": "valid", "step": 300, "pp')  # a log cut short
    assert ablation_table.main([str(tmp_path), "--baseline", "base"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metrics.jsonl is damaged" in err
    os.remove(tmp_path / "base" / "s0" / "results.json")
    assert ablation_table.main([str(tmp_path), "--baseline", "base"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "results.json is missing" in err and "multi30k_results.py" in err


def test_partial_leaves_out_runs_still_training_and_lists_them(tmp_path, capsys):
    _run(tmp_path / "base" / "s0", 0, 40.0, 39.0, 5.0)
    _run(tmp_path / "base" / "s1", 1, 41.0, 39.5, 4.8)
    _run(tmp_path / "attn" / "s0", 0, 41.5, 40.0, 4.9, attention_dropout=0.1)
    _run(tmp_path / "attn" / "s1", 1, 42.5, 40.5, 4.7, attention_dropout=0.1)
    _run(tmp_path / "ffn" / "s0", 0, 39.0, 38.0, 5.1, attention_dropout=0.2)
    for unfinished in ("base/s1", "attn/s1", "ffn/s0"):
        os.remove(tmp_path / unfinished / "results.json")
    assert ablation_table.main([str(tmp_path), "--baseline", "base"]) == 1  # without --partial: an error
    assert "results.json is missing" in capsys.readouterr().err
    assert ablation_table.main([str(tmp_path), "--baseline", "base", "--partial"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[2] == "| base | - | 1 | 40.00 | 40.00 (0.00) |  |  | 5.00 | 39.00 | 50.0 |"
    assert lines[3] == (
        "| attn | model.attention_dropout=0.1 | 1 | 41.50 | 41.50 (0.00) | +1.50 | run a second seed | 4.90 | 40.00 "
        "| 50.0 |"
    )
    assert not any(line.startswith("| ffn") for line in lines)  # no scored seed: no row
    assert lines[-1] == "not scored yet (left out): attn/s1, base/s1, ffn/s0"
    os.remove(tmp_path / "base" / "s0" / "results.json")
    assert ablation_table.main([str(tmp_path), "--baseline", "base", "--partial"]) == 1
    assert "no run of the baseline arm 'base' is scored yet" in capsys.readouterr().err


def test_a_key_an_older_config_lacks_reads_as_its_default(tmp_path, capsys):
    _run(tmp_path / "base" / "s0", 0, 40.0, 39.0, 5.0)
    _run(tmp_path / "base" / "s1", 1, 41.0, 39.5, 4.8)
    path = tmp_path / "base" / "s0" / "config.json"
    with open(path) as f:
        config = json.load(f)
    del config["model"]["attention_dropout"]  # written before the key existed; its default is 0.0
    with open(path, "w") as f:
        json.dump(config, f)
    assert ablation_table.main([str(tmp_path), "--baseline", "base"]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith("| base | - | 2 |")
    config["model"]["attention_dropout"] = 0.1  # now it differs from its other seed
    with open(path, "w") as f:
        json.dump(config, f)
    assert ablation_table.main([str(tmp_path), "--baseline", "base"]) == 1
    assert "differ in more than the seed" in capsys.readouterr().err
    config["model"]["attention_drop"] = 0.1  # not a config key: one line
    with open(path, "w") as f:
        json.dump(config, f)
    assert ablation_table.main([str(tmp_path), "--baseline", "base"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown config key model.attention_drop" in err


def test_the_verdict_follows_the_seed_rule():
    """Two seeds per arm; a third where the difference is under the seed spread; then better / worse or no clear
    difference."""
    assert ablation_table.verdict(+1.5, 1, 0.0) == "run a second seed"
    assert ablation_table.verdict(+0.3, 2, 0.42) == "run a third seed"
    assert ablation_table.verdict(-0.5, 2, 0.42) == "worse"
    assert ablation_table.verdict(+0.42, 3, 0.42) == "better"  # a difference as large as the spread counts
    assert ablation_table.verdict(-0.1, 3, 0.6) == "no clear difference (3 seeds)"


def test_add_keeps_the_records_of_scored_runs_and_the_table_reads_them_alone(tmp_path, capsys):
    runs, records = tmp_path / "runs", tmp_path / "records"
    _run(runs / "base" / "s0", 0, 40.0, 39.0, 5.0)
    _run(runs / "attn" / "s0", 0, 41.5, 40.0, 4.9, attention_dropout=0.1)
    _run(runs / "attn" / "s1", 1, 42.5, 40.5, 4.7, attention_dropout=0.1)
    os.remove(runs / "attn" / "s1" / "results.json")  # still training: not kept
    os.makedirs(records)
    assert ablation_table.main([str(records), "--baseline", "base", "--add", str(runs)]) == 0
    out, err = capsys.readouterr()
    assert "kept 2 new record(s)" in err and "attn/s0, base/s0" in err
    assert sorted(os.listdir(records / "attn" / "s0")) == ["config.json", "metrics.jsonl", "results.json"]
    assert not os.path.exists(records / "attn" / "s1")
    for name in os.listdir(runs):  # the checkpoints go; the records keep the table
        os.rename(runs / name, tmp_path / f"gone_{name}")
    assert ablation_table.main([str(records), "--baseline", "base"]) == 0
    assert capsys.readouterr().out == out
    _run(runs / "attn" / "s0", 0, 41.0, 40.0, 4.9, attention_dropout=0.1)  # scored again, differently
    assert ablation_table.main([str(records), "--baseline", "base", "--add", str(runs)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "results.json differs from" in err and "remove the record first" in err


def test_a_record_written_by_hand_needs_no_log_and_is_marked(tmp_path, capsys):
    _run(tmp_path / "base" / "s0", 0, 40.0, 39.0, 5.0)
    _run(tmp_path / "base" / "s1", 1, 41.0, 39.5, 4.8)
    os.remove(tmp_path / "base" / "s1" / "metrics.jsonl")
    assert ablation_table.main([str(tmp_path), "--baseline", "base"]) == 1  # a run without its log: an error
    assert "metrics.jsonl is missing" in capsys.readouterr().err
    with open(tmp_path / "base" / "s1" / "results.json", "w") as f:
        json.dump({"val_lc_tok_bleu": 41.0, "test2016_lc_tok_bleu": 39.5, "recorded": "from the notes"}, f)
    assert ablation_table.main([str(tmp_path), "--baseline", "base"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[2] == "| base | - | 2 | 40.00 / 41.00† | 40.50 (1.00) |  |  |  | 39.25 | 50.0 /  |"
    assert lines[-1].startswith("† a record written by hand")


def test_doc_writes_the_table_between_its_markers_and_nothing_else(tmp_path, capsys):
    _run(tmp_path / "runs" / "base" / "s0", 0, 40.0, 39.0, 5.0)
    doc = tmp_path / "results.md"
    before, after = "# Results\n\ntext before\n\n", "\n\ntext after\n"
    doc.write_text(before + "<!-- ablation table -->\n| old | table |\n<!-- end of ablation table -->" + after)
    assert ablation_table.main([str(tmp_path / "runs"), "--baseline", "base", "--doc", str(doc)]) == 0
    table = capsys.readouterr().out.strip()
    assert doc.read_text() == (
        before + "<!-- ablation table -->\n\n" + table + "\n\n<!-- end of ablation table -->" + after
    )
    assert ablation_table.main([str(tmp_path / "runs"), "--baseline", "base", "--doc", str(doc)]) == 0
    assert doc.read_text().count(table) == 1  # written again in place: the same file

    doc.write_text("# Results without markers\n")
    assert ablation_table.main([str(tmp_path / "runs"), "--baseline", "base", "--doc", str(doc)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "<!-- ablation table -->" in err
    assert doc.read_text() == "# Results without markers\n"  # left as it was
    assert ablation_table.main([str(tmp_path / "runs"), "--baseline", "base", "--doc", str(doc), "--partial"]) == 1
    assert "leave out --partial" in capsys.readouterr().err


def test_the_committed_records_rebuild_the_table_in_the_results_doc(capsys):
    """docs/results.md shows, between its markers, exactly the table that docs/ablation/ gives: a new record without
    its row (or a row edited by hand) fails here."""
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
    assert ablation_table.main([os.path.join(root, "ablation"), "--baseline", "base"]) == 0
    table = capsys.readouterr().out.strip()
    with open(os.path.join(root, "results.md"), encoding="utf-8") as f:
        doc = f.read()
    between = doc.split(ablation_table.DOC_START, 1)[1].split(ablation_table.DOC_END, 1)[0]
    assert between == "\n\n" + table + "\n\n"


def test_the_pooled_seed_spread_weighs_each_arm_by_its_seeds_less_one(tmp_path, capsys):
    assert ablation_table.pooled_spread([[40.0], [41.0]]) == ""  # one seed each: no spread to pool
    # squared deviations 1 + 1, 1 + 0 + 1 and 0 + 0 from each arm's own mean, over 1 + 2 + 1 = 4: sd 1; the
    # one-seed arm adds nothing
    line = ablation_table.pooled_spread([[40.0, 42.0], [40.0, 41.0, 42.0], [41.0, 41.0], [39.0]])
    assert "pooled over the 3 arm(s) with two or more seeds (7 runs, 4 degrees of freedom): 1.00;" in line
    assert line.endswith("1.00 with 2, 0.82 with 3, 0.63 with 5 seeds per arm")
    _run(tmp_path / "base" / "s0", 0, 40.0, 39.0, 5.0)
    _run(tmp_path / "base" / "s1", 1, 42.0, 39.0, 5.0)  # sd over these two alone: sqrt(2)
    _run(tmp_path / "attn" / "s0", 0, 41.0, 39.0, 5.0, attention_dropout=0.1)
    assert ablation_table.main([str(tmp_path), "--baseline", "base"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.endswith("1.41 with 2, 1.15 with 3, 0.89 with 5 seeds per arm")
