"""Translate a test set and score it: cased sacreBLEU (13a), lowercased Moses-tokenized BLEU, chrF.

  python -m jax_transformer.evaluate runs/multi30k_en_de --split test2016
  python -m jax_transformer.evaluate runs/multi30k_en_de --src my.en --ref my.de --output hyp.de

--split val | test2016 uses the bundled Multi30k files in the run's languages (data/multi30k).
"""

import argparse
import json
import os
import sys

from .cli import run_cli
from .translate import add_search_arguments, load_for_search, read_lines

SPLITS = {"val": "val", "test2016": "test_2016_flickr"}


def score(hypotheses: list[str], references: list[str], target_lang: str) -> dict:
    from .metrics import bleu, chrf, lc_tok_bleu

    cased, cased_sig = bleu(hypotheses, references)
    lc, lc_sig = lc_tok_bleu(hypotheses, references, target_lang)
    chrf_score, chrf_sig = chrf(hypotheses, references)
    return {
        "bleu": round(cased.score, 2), "lc_tok_bleu": round(lc.score, 2), "chrf": round(chrf_score.score, 2),
        "bleu_signature": cased_sig, "lc_tok_bleu_signature": lc_sig, "chrf_signature": chrf_sig,
    }  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_search_arguments(parser)
    parser.add_argument("--split", choices=sorted(SPLITS), help="a bundled Multi30k split")
    parser.add_argument("--src", help="source file (instead of --split)")
    parser.add_argument("--ref", help="reference file, line-aligned with --src")
    parser.add_argument("--data-dir", default="data/multi30k", help="where --split finds Multi30k")
    parser.add_argument("--output", help="also write the translations here")
    parser.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    args = parser.parse_args(argv)

    def run():
        from .config import UserError

        translator = load_for_search(args)
        data = translator.config.data
        if args.split:
            name = SPLITS[args.split]
            src = os.path.join(args.data_dir, f"{name}.{data.src_lang}.gz")
            ref = os.path.join(args.data_dir, f"{name}.{data.tgt_lang}.gz")
            sources, references = _read_gz(src), _read_gz(ref)
        elif args.src and args.ref:
            sources, references = read_lines(args.src), read_lines(args.ref)
        else:
            raise UserError("give --split val|test2016, or both --src and --ref")
        if len(sources) != len(references):
            raise UserError(f"{len(sources)} source lines but {len(references)} references; they must align")
        hypotheses = translator.translate(sources, args.beam, args.alpha, progress=True)
        if args.output:
            with open(args.output, "w", encoding="utf-8") as f:
                f.writelines(h + "\n" for h in hypotheses)
        result = score(hypotheses, references, data.tgt_lang)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"BLEU {result['bleu']:.2f}  ({result['bleu_signature']})")
            print(f"lc-tok BLEU {result['lc_tok_bleu']:.2f}  ({result['lc_tok_bleu_signature']})")
            print(f"chrF {result['chrf']:.2f}  ({result['chrf_signature']})")

    return run_cli(run)


def _read_gz(path: str) -> list[str]:
    import gzip

    from .config import UserError

    if not os.path.exists(path):
        raise UserError(f"{path} does not exist; fix: pass --data-dir (the folder with the Multi30k files)")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


if __name__ == "__main__":
    sys.exit(main())
