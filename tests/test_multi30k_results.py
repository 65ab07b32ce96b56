"""scripts/multi30k_results.py end to end on a slice of Multi30k: train, average, score; one seed and several."""

import gzip
import json
import os

import pytest

from jax_transformer.config import Config
from tests.scripts import ROOT, load_script

MULTI30K = os.path.join(ROOT, "data", "multi30k")

CONFIG = """
from jax_transformer.config import Config, DataConfig, DecodeConfig, TrainConfig, model_preset


def get_config():
    return Config(
        name="t",
        model=model_preset("test", max_len=128),
        data=DataConfig(path={corpus!r}, vocab_size=200, max_len=40, max_tokens=400, pack_length=40,
                        cache_dir={cache!r}),
        train=TrainConfig(steps=8, schedule="inverse_sqrt", learning_rate=2e-3, warmup_steps=4, log_every=4,
                          eval_every=4, bleu_every=1000, save_every=4, keep_checkpoints=3),
        decode=DecodeConfig(beam_size=2, alpha=0.6),
    )
"""


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """A tiny recipe file over 300 training pairs, with 8-sentence val and test2016 splits."""
    folder = tmp_path_factory.mktemp("multi30k_results")
    corpus = folder / "data"
    corpus.mkdir()
    for name, n in (("train", 300), ("val", 8), ("test_2016_flickr", 8)):
        for lang in ("en", "de"):
            with gzip.open(os.path.join(MULTI30K, f"{name}.{lang}.gz"), "rt", encoding="utf-8") as f:
                lines = [next(f) for _ in range(n)]
            (corpus / f"{name}.{lang}").write_text("".join(lines), encoding="utf-8")
    path = folder / "recipe.py"
    path.write_text(CONFIG.format(corpus=str(corpus), cache=str(folder / "cache")), encoding="utf-8")
    return str(path), str(corpus)


def test_seeds_train_in_their_own_directories_and_report_mean_and_range(recipe, tmp_path, capsys):
    path, corpus = recipe
    script = load_script("multi30k_results")
    run = tmp_path / "run"
    argv = ["--config", path, "--data-dir", corpus, "--average", "2", "--seeds", "0,3", f"run_dir={run}"]
    assert script.main(argv) == 0

    rows = [json.loads((tmp_path / name / "results_avg2.json").read_text()) for name in ("run", "run_s3")]
    assert [(r["seed"], r["run_dir"]) for r in rows] == [(0, str(run)), (3, f"{run}_s3")]
    for row, name, seed in zip(rows, ("run", "run_s3"), (0, 3), strict=True):
        assert json.loads((tmp_path / name / "config.json").read_text())["seed"] == seed  # trained with that seed
        assert row["averaged_steps"] == [4, 8] and row["steps"] == 8
    losses = [[json.loads(line)["loss"] for line in open(tmp_path / name / "metrics.jsonl") if '"train"' in line]
              for name in ("run", "run_s3")]  # fmt: skip
    assert losses[0] != losses[1]  # two different runs, not one run scored twice

    summary = json.loads((run / "results_seeds_avg2.json").read_text())
    assert summary["seeds"] == [0, 3] and summary["run_dirs"] == [str(run), f"{run}_s3"]
    for key in ("val_lc_tok_bleu", "test2016_lc_tok_bleu", "test2016_bleu", "test2016_chrf"):
        values = [r[key] for r in rows]
        assert summary[key] == {"mean": round(sum(values) / 2, 2), "min": min(values), "max": max(values),
                                "per_seed": values}  # fmt: skip
    table = capsys.readouterr().out.strip().splitlines()[-1]
    chrf = summary["test2016_chrf"]
    assert table.startswith("| t | en->de | 0,3 | ") and f"| {chrf['mean']:.2f} |" in table

    # scored again alone, without its seed on the command line, a run's row names the seed it was trained with
    assert (
        script.main(["--config", path, "--data-dir", corpus, "--average", "2", "--skip-train", f"run_dir={run}_s3"])
        == 0
    )
    assert json.loads((tmp_path / "run_s3" / "results_avg2.json").read_text())["seed"] == 3


def test_one_run_without_seeds_writes_results_json(recipe, tmp_path):
    path, _ = recipe
    script = load_script("multi30k_results")
    # no --data-dir: val and test2016 come from the run's data.path (8 sentences each), not from data/multi30k
    assert script.main(["--config", path, "train.steps=4", f"run_dir={tmp_path / 'run'}"]) == 0
    row = json.loads((tmp_path / "run" / "results.json").read_text())
    assert row["steps"] == 4 and row["averaged_steps"] == [4] and row["seed"] == 0
    assert 0 <= row["test2016_lc_tok_bleu"] <= 100 and row["parameters"] > 0
    assert os.path.exists(row["curves_png"])
    for split in ("val", "test2016"):  # the scored translations are kept, one line per sentence
        assert len(open(tmp_path / "run" / "avg10" / f"{split}.de", encoding="utf-8").readlines()) == 8
    assert not os.path.exists(tmp_path / "run" / "results_seeds.json")


def test_each_seed_has_its_own_directory_beside_the_configs():
    script = load_script("multi30k_results")
    config = Config(name="t", run_dir="runs/x/", seed=0)  # a trailing slash, as shell completion leaves it
    assert [script.seed_run_dir(config, seed) for seed in (0, 2)] == ["runs/x", "runs/x_s2"]
    assert script.seed_run_dir(Config(name="t", seed=1), 0) == os.path.join("runs", "t_s0")


def test_seeds_refuse_a_seed_override_and_a_missing_run_to_score(recipe, tmp_path, capsys):
    path, corpus = recipe
    script = load_script("multi30k_results")
    with pytest.raises(SystemExit) as stop:
        script.main(["--config", path, "--seeds", "0,1", "seed=1"])
    assert stop.value.code == 2 and "leave out the seed= override" in capsys.readouterr().err
    assert script.main(["--config", path, "--seeds", "0,1", "--skip-train", f"run_dir={tmp_path / 'none'}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run in" in err and "none_s1" in err
    assert not os.path.exists(tmp_path / "none")  # nothing written
    os.makedirs(tmp_path / "other_s1")
    Config(name="t", seed=5).save(str(tmp_path / "other_s1" / "config.json"))  # a run of another seed
    assert script.main(["--config", path, "--seeds", "0,1", f"run_dir={tmp_path / 'other'}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a run of seed 5, not 1" in err
    assert not os.path.exists(tmp_path / "other")  # refused before seed 0 was trained


def test_a_seed_listed_twice_is_refused(recipe, capsys):
    path, corpus = recipe
    with pytest.raises(SystemExit) as stop:
        load_script("multi30k_results").main(["--config", path, "--seeds", "1,1"])
    assert stop.value.code == 2 and "lists a seed twice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        load_script("multi30k_results").main(["--config", path, "--seeds", "0 1"])
    assert stop.value.code == 2 and "comma-separated list of integers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # refused before training, not after it
        load_script("multi30k_results").main(["--config", path, "--average", "0"])
    assert stop.value.code == 2 and "--average must be at least 1" in capsys.readouterr().err
