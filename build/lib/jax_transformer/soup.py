"""`python -m jax_transformer.soup`: the command lives in jax_transformer/cli/soup.py."""

from jax_transformer.cli.soup import main

if __name__ == "__main__":
    raise SystemExit(main())
