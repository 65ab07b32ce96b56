"""`python -m jax_transformer.predict`: the command lives in jax_transformer/cli/predict.py."""

from jax_transformer.cli.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
