"""Train (or resume) a Transformer: `python train.py --config configs/NAME.py [--config.KEY=VALUE ...]`.

The command lives in jax_transformer/cli/train.py (also installed as `jt-train`); `--help` lists its options.
"""

from jax_transformer.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
