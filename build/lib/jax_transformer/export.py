"""`python -m jax_transformer.export`: the command lives in jax_transformer/cli/export.py."""

from jax_transformer.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
