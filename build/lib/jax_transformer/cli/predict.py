"""Classify text with a fine-tuned run: `python -m jax_transformer.predict RUN_DIR [TEXT ...]`.

Examples:
  python -m jax_transformer.predict runs/sst2_minilm "a great movie"
  echo "dull and far too long" | python -m jax_transformer.predict runs/sst2_minilm
  python -m jax_transformer.predict runs/sst2_minilm --file reviews.txt      # one text per line

Prints one line per text: the label, its probability, and the text (tab-separated). Uses the run's best checkpoint
unless --step is given.
"""

import argparse
import sys

from jax_transformer.cli import run_cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jax_transformer.predict", description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("run_dir", help="a classification run directory (runs/NAME)")
    parser.add_argument("texts", nargs="*", help="texts to classify (none: read --file, else stdin, one per line)")
    parser.add_argument("--file", help="a UTF-8 file with one text per line")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the best)")
    args = parser.parse_args(argv)

    def run():
        from jax_transformer.config import UserError
        from jax_transformer.data.readers import read_lines
        from jax_transformer.tasks.classification import Classifier

        # a file or stdin: UTF-8 checked, a bad byte reported with its line
        texts = args.texts or read_lines(args.file)
        texts = [t for t in texts if t.strip()]
        if not texts:
            raise UserError("no text to classify (give texts, --file, or lines on stdin)")
        classifier = Classifier.load(args.run_dir, args.step)
        for text, (label, prob) in zip(texts, classifier.predict(texts), strict=True):
            print(f"{label}\t{prob:.4f}\t{text}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
