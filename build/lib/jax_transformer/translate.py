"""`python -m jax_transformer.translate`: the command lives in jax_transformer/cli/translate.py."""

from jax_transformer.cli.translate import main

if __name__ == "__main__":
    raise SystemExit(main())
