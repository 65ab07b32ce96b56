"""Average classifiers fine-tuned from one pretrained model into one model (a uniform "model soup").

  python -m jax_transformer.soup runs/sst2_seed0 runs/sst2_seed1 runs/sst2_seed2 --out runs/sst2_soup

Fine-tuned from the same pretrained weights, runs that differ only in seed (head initialisation, data order, dropout)
stay in one basin of the loss, and the element-wise mean of their weights usually scores like their ensemble at the
cost of one model (Wortsman et al., 2022, "Model soups"). Each run gives its best checkpoint (`--checkpoint best`,
chosen on dev accuracy during its training) or its last (`--checkpoint last`, chosen by nothing). The runs must share
model, labels and tokenizer. The output is a classification run directory (config, labels, model, tokenizer, one
checkpoint) that `predict` and `Classifier.load` read like any run. The command then scores on the runs' dev file:
each run, the soup, and for comparison the ensemble (mean of the runs' class probabilities, N times the cost).
"""

import argparse
import json
import os
import shutil
import sys

from jax_transformer.cli import require_new_output_dir, run_cli

RUN_FILES = ("config.json", "labels.json", "model.json")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def check_compatible(run_dirs: list[str]) -> None:
    """Refuse runs that cannot be averaged: missing files, or a different model, label set or tokenizer."""
    from jax_transformer.config import UserError

    if len(run_dirs) < 2:
        raise UserError(f"a soup needs at least 2 runs, got {len(run_dirs)}")
    for run in run_dirs:
        for name in (*RUN_FILES, "tokenizer", "checkpoints"):
            if not os.path.exists(os.path.join(run, name)):
                raise UserError(f"{run} has no {name}: not a classification run directory")
    first = run_dirs[0]
    for run in run_dirs[1:]:
        for name in ("labels.json", "model.json", "tokenizer/vocab.txt"):
            a, b = os.path.join(first, name), os.path.join(run, name)
            if os.path.exists(a) and _read(a) != _read(b):
                raise UserError(f"{run} and {first} differ in {name}: only runs of one model and label set average")


def make_soup(run_dirs: list[str], out_dir: str, checkpoint: str = "best") -> dict:
    """Average the runs' `checkpoint` ('best' or 'last') weights into the run directory `out_dir`; returns what went
    in (`sources`: run, step, its dev accuracy when it was evaluated)."""
    from jax_transformer.tasks.classification import checkpoint_weights
    from jax_transformer.train.checkpoint import Checkpointer, mean_params

    check_compatible(run_dirs)
    require_new_output_dir(out_dir, *run_dirs)  # nothing in it is overwritten or mixed with the soup
    sources, trees = [], []
    for run in run_dirs:
        checkpoints = Checkpointer(os.path.join(run, "checkpoints"), keep=1, read_only=True)
        step = checkpoints.select("best" if checkpoint == "best" else "latest", best_or_latest=True)
        metrics = checkpoints.restore_meta(step).get("metrics") or {}
        trees.append(checkpoint_weights(checkpoints.restore_arrays(step)))
        checkpoints.close()
        sources.append({"run": run, "step": step, "dev_accuracy": metrics.get("accuracy")})
    params = mean_params(trees)

    os.makedirs(out_dir, exist_ok=True)
    for name in RUN_FILES:
        shutil.copyfile(os.path.join(run_dirs[0], name), os.path.join(out_dir, name))
    shutil.copytree(os.path.join(run_dirs[0], "tokenizer"), os.path.join(out_dir, "tokenizer"), dirs_exist_ok=True)
    soup = {"method": "uniform soup (mean of weights)", "checkpoint": checkpoint, "sources": sources}
    saver = Checkpointer(os.path.join(out_dir, "checkpoints"), keep=1, keep_best=False)
    saver.save(0, {"params": params}, {"step": 0, "soup": soup})
    saver.close()
    with open(os.path.join(out_dir, "soup.json"), "w", encoding="utf-8") as f:
        json.dump(soup, f, indent=2)
        f.write("\n")
    return soup


def score_on_dev(run_dirs: list[str], out_dir: str, steps: list[int]) -> dict:
    """Dev accuracy of each run (at `steps`), of the soup in `out_dir`, and of the runs' probability ensemble."""
    import numpy as np

    from jax_transformer.data import classification as cdata
    from jax_transformer.tasks.classification import Classifier, classification_report

    soup = Classifier.load(out_dir)
    cfg = soup.config.data
    path = os.path.join(cfg.path, cfg.valid_file)
    dev, _ = cdata.load_dataset(path, cfg, soup.labels, soup.tokenizer, cfg.max_valid_examples)
    probs = [Classifier.load(run, step).probabilities(dev.texts) for run, step in zip(run_dirs, steps, strict=True)]
    accuracy = lambda p: classification_report(dev.labels, p.argmax(-1), len(soup.labels))["accuracy"]  # noqa: E731
    return {
        "dev_file": path,
        "runs": [accuracy(p) for p in probs],
        "soup": soup.evaluate(dev),
        "ensemble": accuracy(np.mean(probs, axis=0)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jax_transformer.soup", description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("runs", nargs="+", help="classification run directories fine-tuned from one pretrained model")
    parser.add_argument("--out", required=True, help="the soup's run directory (must not hold a model yet)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="each run's best checkpoint by dev accuracy (default) or its last")  # fmt: skip
    parser.add_argument("--no-eval", action="store_true", help="do not score the runs, soup and ensemble on dev")
    args = parser.parse_args(argv)

    def run():
        soup = make_soup(args.runs, args.out, args.checkpoint)
        steps = [s["step"] for s in soup["sources"]]
        print(f"averaged {len(steps)} runs ({args.checkpoint} checkpoints: steps {steps}) into {args.out}")
        if args.no_eval:
            return
        scores = score_on_dev(args.runs, args.out, steps)
        for run_dir, acc in zip(args.runs, scores["runs"], strict=True):
            print(f"  {run_dir}: dev accuracy {acc:.4f}")
        report = scores["soup"]
        print(f"soup: dev accuracy {report['accuracy']:.4f}, macro-F1 {report['f1_macro']:.4f}, "
              f"confusion matrix {report['confusion_matrix']}")  # fmt: skip
        print(f"ensemble of the {len(steps)} runs (mean probability, for comparison): dev accuracy "
              f"{scores['ensemble']:.4f}")  # fmt: skip
        with open(os.path.join(args.out, "eval.json"), "w", encoding="utf-8") as f:
            json.dump({**report, "step": 0, "runs": scores["runs"], "ensemble_accuracy": scores["ensemble"],
                       "dev_file": scores["dev_file"]}, f, indent=2)  # fmt: skip
            f.write("\n")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
