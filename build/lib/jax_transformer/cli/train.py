"""Train (or resume) a Transformer: `python train.py --config configs/NAME.py [--config.KEY=VALUE ...]`.

Examples:
  python train.py --config configs/multi30k_en_de.py
  python train.py --config configs/tiny.py --config.train.steps=100 --config.model.d_model=64
  python train.py --config runs/multi30k_en_de/config.json   # continue a run from its saved config

Overrides use dotted keys of the config (sections: model, data, train, decode, mesh; top level: name, run_dir,
seed).
Unknown keys and wrong types are refused. Re-running the same command resumes the run from its latest checkpoint.
"""

import argparse
import sys

from jax_transformer.cli import run_cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--config", required=True, help="a recipe file configs/NAME.py, or a run's config.json")
    args, rest = parser.parse_known_args(argv)
    overrides = []
    for item in rest:
        if not item.startswith("--config."):
            parser.error(f"unrecognized argument {item!r} (overrides look like --config.model.d_model=256)")
        overrides.append(item[len("--config.") :])

    def run():
        from jax_transformer.config import ClassifyConfig, load_any_config

        config = load_any_config(args.config, overrides)
        if isinstance(config, ClassifyConfig):  # fine-tuning a pretrained encoder for text classification
            from jax_transformer.tasks.classification import train_classifier

            result = train_classifier(config)
            print(
                f"done: dev accuracy {result['accuracy']:.4f} (step {result['step']}), run directory {config.directory}"
            )
            return
        from jax_transformer.tasks.translation import train

        result = train(config)
        print(f"done: step {result['step']}, run directory {config.directory}")

    return run_cli(run, keep_memory=True)


if __name__ == "__main__":
    sys.exit(main())
