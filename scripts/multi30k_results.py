"""Run a Multi30k recipe end to end and print its row of the README's results table.

  python scripts/multi30k_results.py --config configs/multi30k_en_de.py
  python scripts/multi30k_results.py --config configs/multi30k_en_de.py --skip-train   # score a finished run

Steps: train the recipe (or resume it: re-running continues from the latest checkpoint); average its last N
checkpoints into RUN/avgN (rebuilt each time); translate val and test2016 with the recipe's beam search (the
translations go into that folder too: RUN/avgN/val.TGT and test2016.TGT, TGT the target language); score the cased,
detokenized output with cased sacreBLEU, lowercased Moses-tokenized BLEU (the Multi30k literature's figure) and chrF;
read the time to quality from the run's validation log; draw the training curves (PNG).

With --at-step S the averaged model is that of the N checkpoints up to step S (the run as if stopped there: with the
recipe's inverse-sqrt schedule, which does not depend on train.steps, that is exactly the run with train.steps=S),
scored and timed at S; its results go to RUN/results_avgN_atS.json. The time-to-quality figures come from this.
The default (the last 10, the whole run) writes RUN/results.json; any other --average N writes RUN/results_avgN.json.

With --seeds S1,S2,... the recipe is trained (or resumed) and scored once per seed, the config's own seed in its run
directory RUN and every other seed S in RUN_sS; each keeps its own results file, and the mean and range over the seeds
(the figure a results row reports) go to results_seeds.json (results_seeds_avgN[_atS].json for the other results
files) in the first seed's directory.

With --test-curve every checkpoint the run still keeps is also scored on test2016 (beam search, no averaging), which
gives the wall time at which a single checkpoint first passes the --target lc-tok BLEU on test2016. That is for the
report only: nothing is selected on test2016 (the recipe, beam and alpha were chosen on val).
"""

import argparse
import json
import os
import shutil
import sys


def score_split(translator, split: str, data_dir: str, decode, out: str = "") -> dict:
    """Scores of `split` decoded with the recipe's beam size and alpha (`decode`), whatever the checkpoint's saved
    config says (a run trained before the recipe's decoding was tuned keeps its old values). With `out`, the
    translations are also written there, one per line (`sacrebleu REF -i A B --paired-bs -m bleu` compares two)."""
    from jax_transformer.cli.evaluate import score, split_texts

    sources, references = split_texts(translator.config.data, split, data_dir)
    hypotheses = translator.translate(sources, beam_size=decode.beam_size, alpha=decode.alpha, progress=False)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.writelines(h + "\n" for h in hypotheses)
    return score(hypotheses, [refs[0] for refs in references], translator.config.data.tgt_lang)


def minutes_at_steps(records: list[dict]) -> dict[int, float]:
    """Cumulative wall-clock minutes of each validated step (over restarts), from a run's metrics.jsonl records."""
    from jax_transformer.viz import training_series

    series = training_series(records)
    return {int(s): float(m) for s, m in zip(series["valid_step"], series["valid_minutes"], strict=True)}


def training_hardware(records: list[dict], here: str) -> str:
    """The machines a run trained on (every training process logs a "start" record), in order, without repeats;
    `here` (the machine scoring it) for a run from before those records."""
    seen = [r["hardware"] for r in records if r.get("kind") == "start" and r.get("hardware")]
    return " / ".join(dict.fromkeys(seen)) if seen else f"{here} (the scoring machine: training's was not logged)"


def first_validation_at(
    records: list[dict], minutes: dict[int, float], key: str, target: float
) -> tuple[int, float] | None:
    """(step, minutes) of the first validation whose `key` reached `target`, else None."""
    for record in records:
        if record.get("kind") == "valid" and record.get(key, -1.0) >= target:
            return int(record["step"]), minutes[int(record["step"])]
    return None


DEFAULT_AVERAGE = 10


def output_names(args) -> tuple[str, str]:
    """(the averaged model's folder, the suffix of the results files) for --average and --at-step: avgN and "" for the
    default (results.json), avgN_atS and _avgN_atS (results_avgN_atS.json) otherwise."""
    at = "" if args.at_step is None else f"_at{args.at_step}"
    model = f"avg{args.average}{at}"
    return model, ("" if model == f"avg{DEFAULT_AVERAGE}" else f"_{model}")


SEED_KEYS = ("val_lc_tok_bleu", "val_bleu", "test2016_lc_tok_bleu", "test2016_bleu", "test2016_chrf", "train_minutes")


def seed_list(text: str) -> list[int]:
    """--seeds 0,1,2 as [0, 1, 2]."""
    try:
        return [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 0,1,2") from None


def seed_run_dir(config, seed: int) -> str:
    """Where seed `seed` of a recipe trains: its own run directory for the config's seed, RUN_sSEED for any other."""
    directory = os.path.normpath(config.directory)  # runs/x/ -> runs/x_s1, not runs/x/_s1
    return directory if seed == config.seed else f"{directory}_s{seed}"


def over_seeds(rows: list[dict]) -> dict:
    """Mean, min and max over the seeds' results rows of each score (and the training minutes)."""
    summary = {"recipe": rows[0]["recipe"], "direction": rows[0]["direction"], "seeds": [r["seed"] for r in rows],
               "run_dirs": [r["run_dir"] for r in rows], "parameters": rows[0]["parameters"],
               "steps": [r["steps"] for r in rows], "beam": rows[0]["beam"], "alpha": rows[0]["alpha"]}  # fmt: skip
    for key in SEED_KEYS:
        values = [r[key] for r in rows]
        summary[key] = {"mean": round(sum(values) / len(values), 2), "min": min(values), "max": max(values),
                        "per_seed": values}  # fmt: skip
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--config", default="configs/multi30k_en_de.py")
    parser.add_argument("--skip-train", action="store_true", help="score the existing run directory only")
    parser.add_argument(
        "--average", type=int, default=DEFAULT_AVERAGE, help="average the last N checkpoints (1: no averaging)"
    )
    parser.add_argument("--target", type=float, default=40.0, help="lc-tok BLEU whose time to reach is reported")
    parser.add_argument("--at-step", type=int, default=None, help="average and score the run as it was at this step")
    parser.add_argument("--test-curve", action="store_true", help="also score every kept checkpoint on test2016")
    parser.add_argument("--seeds", type=seed_list, default=None,
                        help="seeds 0,1,2: train and score each; report their mean and range")  # fmt: skip
    parser.add_argument("--png", default="", help="training curves PNG (default: RUN/curves.png)")
    parser.add_argument("--data-dir", default=None, help="where val and test2016 are read (default: the data.path)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.steps=4000")
    args = parser.parse_args(argv)
    if args.average < 1:  # refused now, not after hours of training
        parser.error(f"--average must be at least 1, got {args.average}")
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds lists a seed twice: {args.seeds}")
    if args.seeds is not None and args.png:
        parser.error("--png names one file; with --seeds each seed draws RUN/curves.png")
    if args.seeds is not None and any(o.split("=", 1)[0] == "seed" for o in args.overrides):
        parser.error("--seeds sets each run's seed: leave out the seed= override")
    from jax_transformer.cli import run_cli

    def run():
        import dataclasses

        from jax_transformer.config import Config, UserError, load_config_file

        config = load_config_file(args.config, args.overrides)
        if args.seeds is None:
            result(config, args)
            return
        configs = [dataclasses.replace(config, seed=seed, run_dir=seed_run_dir(config, seed)) for seed in args.seeds]
        missing = []
        for seed_config in configs:  # every seed's directory checked before anything is trained or scored
            saved = os.path.join(seed_config.directory, "config.json")
            if not os.path.exists(saved):
                missing.append(seed_config.directory)
            elif (trained := Config.load(saved).seed) != seed_config.seed:
                raise UserError(f"{seed_config.directory} holds a run of seed {trained}, not {seed_config.seed}: "
                                "move it away, or list its seed in --seeds")  # fmt: skip
        if args.skip_train and missing:
            raise UserError(f"--skip-train: no run in {', '.join(missing)}; train those seeds first (no --skip-train)")
        rows = []
        for seed_config in configs:
            print(f"seed {seed_config.seed}: {seed_config.directory}", file=sys.stderr)
            rows.append(result(seed_config, args))
        summary = over_seeds(rows)
        suffix = output_names(args)[1]
        with open(os.path.join(rows[0]["run_dir"], f"results_seeds{suffix}.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
        print(json.dumps(summary, indent=2))

        def cell(key: str) -> str:
            return f"{summary[key]['mean']:.2f} ({summary[key]['min']:.2f}-{summary[key]['max']:.2f})"

        print("| recipe | direction | seeds | val lc-tok BLEU, mean (range) | test2016 lc-tok BLEU, mean (range) | "
              "sacreBLEU | chrF | params | minutes per seed |")  # fmt: skip
        print(
            f"| {summary['recipe']} | {summary['direction']} | {','.join(map(str, args.seeds))} | "
            f"{cell('val_lc_tok_bleu')} | {cell('test2016_lc_tok_bleu')} | {summary['test2016_bleu']['mean']:.2f} | "
            f"{summary['test2016_chrf']['mean']:.2f} | {summary['parameters'] / 1e6:.2f}M | "
            f"{', '.join(f'{m:.1f}' for m in summary['train_minutes']['per_seed'])} |"
        )

    return run_cli(run, keep_memory=True)


def result(config, args) -> dict:
    """Train (unless --skip-train), average, score and plot one run of `config`; write and print its results row."""
    from jax_transformer import machine
    from jax_transformer.cli.average import average_run
    from jax_transformer.decode.translator import load_translator
    from jax_transformer.train.run_log import read_metrics
    from jax_transformer.viz import plot_training_curves

    run_dir = config.directory
    if not args.skip_train:
        from jax_transformer.tasks.translation import train

        train(config)
    records = read_metrics(run_dir)
    train_records = [r for r in records if r.get("kind") == "train"]
    minutes = minutes_at_steps(records)
    last_step = max(minutes) if minutes else (train_records[-1]["step"] if train_records else 0)
    if args.at_step is not None:
        last_step = args.at_step
    total_minutes = minutes.get(last_step, float("nan"))

    model_name, suffix = output_names(args)
    model_dir = os.path.join(run_dir, model_name)
    if os.path.exists(model_dir):  # derived from the checkpoints: rebuilt every time
        shutil.rmtree(model_dir)
    steps = average_run(run_dir, args.average, model_dir, args.at_step)
    translator = load_translator(model_dir)
    import jax

    params = sum(x.size for x in jax.tree.leaves(translator.params))
    tgt = config.data.tgt_lang
    results = {split: score_split(translator, split, args.data_dir, config.decode, f"{model_dir}/{split}.{tgt}")
               for split in ("val", "test2016")}  # fmt: skip

    curve = []
    if args.test_curve:
        for step in steps:
            single = load_translator(run_dir, str(step))
            scores = score_split(single, "test2016", args.data_dir, config.decode)
            curve.append({"step": step, "minutes": minutes.get(step), "lc_tok_bleu": scores["lc_tok_bleu"],
                          "bleu": scores["bleu"]})  # fmt: skip
            print(f"checkpoint {step}: test2016 lc-tok BLEU {scores['lc_tok_bleu']:.2f}", file=sys.stderr)

    png = args.png or os.path.join(run_dir, "curves.png")
    plot_training_curves(run_dir, png)
    reached_val = first_validation_at(records, minutes, "lc_tok_bleu", args.target)
    reached_test = next((c for c in curve if c["lc_tok_bleu"] >= args.target), None)
    test = results["test2016"]
    row = {
        "recipe": config.name, "direction": f"{config.data.src_lang}->{config.data.tgt_lang}",
        "seed": translator.config.seed, "run_dir": run_dir,  # the scored run's own seed (--skip-train)
        "test2016_lc_tok_bleu": test["lc_tok_bleu"], "test2016_bleu": test["bleu"], "test2016_chrf": test["chrf"],
        "val_lc_tok_bleu": results["val"]["lc_tok_bleu"], "val_bleu": results["val"]["bleu"],
        "val_length_ratio": results["val"]["length_ratio"], "test2016_length_ratio": test["length_ratio"],
        "parameters": params, "steps": last_step, "averaged_steps": steps,
        "train_minutes": round(total_minutes, 1),
        f"minutes_to_val_greedy_lc_tok_{args.target:g}": round(reached_val[1], 1) if reached_val else None,
        f"minutes_to_test_beam_lc_tok_{args.target:g}": (
            round(reached_test["minutes"], 1) if reached_test and reached_test["minutes"] else None),
        "beam": config.decode.beam_size, "alpha": config.decode.alpha,
        "hardware": training_hardware(records, machine.describe()),
        "signatures": {k: test[f"{k}_signature"] for k in ("bleu", "lc_tok_bleu", "chrf")},
        "test_curve": curve, "curves_png": png,
    }  # fmt: skip
    with open(os.path.join(run_dir, f"results{suffix}.json"), "w", encoding="utf-8") as f:
        json.dump(row, f, indent=2)
    print(json.dumps(row, indent=2))
    print(
        "| recipe | direction | val lc-tok BLEU | test2016 lc-tok BLEU | sacreBLEU | chrF | params | steps | time "
        "| hardware |"
    )
    print(
        f"| {row['recipe']} | {row['direction']} | {row['val_lc_tok_bleu']:.2f} | {test['lc_tok_bleu']:.2f} | "
        f"{test['bleu']:.2f} | {test['chrf']:.2f} | {params / 1e6:.2f}M | {last_step:,} (avg last {len(steps)}) | "
        f"{total_minutes:.0f} min | {row['hardware']} |"
    )
    return row


if __name__ == "__main__":
    sys.exit(main())
