"""`python -m jax_transformer.evaluate`: the command lives in jax_transformer/cli/evaluate.py."""

from jax_transformer.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
