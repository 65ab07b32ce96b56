"""`python -m jax_transformer.average`: the command lives in jax_transformer/cli/average.py."""

from jax_transformer.cli.average import main

if __name__ == "__main__":
    raise SystemExit(main())
