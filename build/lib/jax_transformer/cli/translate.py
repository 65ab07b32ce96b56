"""Translate sentences with a trained model, one per line, from a file or stdin.

  python -m jax_transformer.translate runs/multi30k_en_de --input test.en --output test.de
  echo "A dog runs on the beach." | python -m jax_transformer.translate runs/multi30k_en_de --beam 5

MODEL is a run directory (its latest checkpoint, or --step best|N), an averaged model directory or an exported one.
"""

import argparse
import sys

from jax_transformer.cli import require_writable_file, run_cli, write_text
from jax_transformer.data.readers import read_lines


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

    from jax_transformer.decode.translator import load_translator

    translator = load_translator(args.model, args.step)
    decode = translator.config.decode
    flags = {"max_extra_len": args.max_extra_len, "max_tokens": args.max_tokens, "min_len": args.min_len,
             "no_repeat_ngram_size": args.no_repeat_ngram, "beam_size": args.beam, "alpha": args.alpha}  # fmt: skip
    changes = {key: value for key, value in flags.items() if value is not None}
    # DecodeConfig validates the values (ConfigError, one line: "decode.beam_size must be positive, got 0")
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
        if args.output:
            require_writable_file(args.output, "--output")
        sentences = read_lines(args.input)
        translator = load_for_search(args)
        show_progress = args.input not in (None, "-")
        outputs = translator.translate(sentences, args.beam, args.alpha, progress=show_progress)
        text = "".join(line + "\n" for line in outputs)
        if args.output:
            write_text(args.output, text, "--output")
        else:
            sys.stdout.write(text)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
