"""Translate sentences with a trained model, one per line, from a file or stdin.

  python -m jax_transformer.translate runs/multi30k_en_de --input test.en --output test.de
  echo "A dog runs on the beach." | python -m jax_transformer.translate runs/multi30k_en_de --beam 5

MODEL is a run directory (its latest checkpoint, or --step best|N), an averaged model directory or an exported one.
"""

import argparse
import sys

from jax_transformer.cli import run_cli


def read_lines(path: str | None) -> list[str]:
    """Lines of a UTF-8 file (or stdin when path is None or '-'), without line ends."""
    from jax_transformer.config import UserError

    try:
        if path in (None, "-"):
            data = sys.stdin.buffer.read()
            path = "<stdin>"
        else:
            with open(path, "rb") as f:
                data = f.read()
    except FileNotFoundError:
        raise UserError(f"input file {path} does not exist") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: invalid UTF-8; fix: re-encode the file as UTF-8") from None
    return text.splitlines()


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="run directory, averaged or exported model directory")
    parser.add_argument("--step", default="latest", help="checkpoint of a run: latest (default), best, or a step")
    parser.add_argument("--beam", type=int, default=None, help="beam size (default: the run's decode.beam_size)")
    parser.add_argument("--alpha", type=float, default=None, help="GNMT length penalty (default: decode.alpha)")
    parser.add_argument("--max-extra-len", type=int, default=None, help="output may be source length + this")
    parser.add_argument("--max-tokens", type=int, default=None, help="token budget of a decoding batch")
    parser.add_argument("--min-len", type=int, default=None, help="no EOS before this many tokens (decode.min_len)")
    parser.add_argument("--no-repeat-ngram", type=int, default=None,
                        help="no n-gram of this size twice in an output (decode.no_repeat_ngram_size)")  # fmt: skip


def load_for_search(args):
    import dataclasses

    from jax_transformer.config import UserError
    from jax_transformer.decode.translator import load_translator

    translator = load_translator(args.model, args.step)
    decode = translator.config.decode
    changes = {k: v for k, v in (("max_extra_len", args.max_extra_len), ("max_tokens", args.max_tokens)) if v}
    for key, value in (("min_len", args.min_len), ("no_repeat_ngram_size", args.no_repeat_ngram)):
        if value is not None:
            changes[key] = value
    if args.beam is not None and args.beam < 1:
        raise UserError(f"--beam must be at least 1, got {args.beam}")
    # DecodeConfig validates the values (ConfigError, one line)
    translator.config = dataclasses.replace(translator.config, decode=dataclasses.replace(decode, **changes))
    return translator


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_search_arguments(parser)
    parser.add_argument("--input", default=None, help="source file, one sentence per line (default: stdin)")
    parser.add_argument("--output", default=None, help="where to write translations (default: stdout)")
    args = parser.parse_args(argv)

    def run():
        sentences = read_lines(args.input)
        translator = load_for_search(args)
        show_progress = args.input not in (None, "-")
        outputs = translator.translate(sentences, args.beam, args.alpha, progress=show_progress)
        text = "".join(line + "\n" for line in outputs)
        if args.output:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            sys.stdout.write(text)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
