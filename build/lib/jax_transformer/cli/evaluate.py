"""Translate (or summarize) a test set and score it: cased sacreBLEU (13a), lowercased Moses-tokenized BLEU, chrF; or
ROUGE-1/2/L for summaries.

  python -m jax_transformer.evaluate runs/multi30k_en_de --split test2016
  python -m jax_transformer.evaluate runs/multi30k_en_de --src my.en --ref my.de --output hyp.de
  python -m jax_transformer.evaluate runs/dialogsum --split test              # ROUGE (decode.metric of the run)

--split names a split of the run's own data (data.path, or --data-dir): for Multi30k 'val' and 'test2016' (the
bundled files in the run's languages), for TSV / JSONL data the split file's name ('test' reads test.jsonl[.gz]).
The metric is the run's decode.metric unless --metric says otherwise. ROUGE with several references per example
(data.references_field, e.g. DialogSum test's three summaries) takes the best reference per example (--multi-ref
max, as rouge-score's score_multi), their mean (--multi-ref mean) or the first alone (--multi-ref first); all are
printed.
"""

import argparse
import json
import sys

from jax_transformer.cli import require_writable_file, run_cli, write_text
from jax_transformer.cli.translate import add_search_arguments, load_for_search
from jax_transformer.data.readers import read_lines
from jax_transformer.metrics import MULTI_REF

SPLITS = {"val": "val", "test2016": "test_2016_flickr"}


def score(hypotheses: list[str], references: list[str], target_lang: str) -> dict:
    from jax_transformer.metrics import bleu, chrf, lc_tok_bleu

    cased, cased_sig = bleu(hypotheses, references)
    lc, lc_sig = lc_tok_bleu(hypotheses, references, target_lang)
    chrf_score, chrf_sig = chrf(hypotheses, references)
    # BLEU's brevity penalty (Papineni et al. 2002) and the output's length over the references' (lc-tok tokens):
    # a ratio under 1 costs BLEU through the penalty, one over 1 only through the n-gram precisions
    return {
        "bleu": round(cased.score, 2), "lc_tok_bleu": round(lc.score, 2), "chrf": round(chrf_score.score, 2),
        "length_ratio": round(lc.ratio, 3), "brevity_penalty": round(lc.bp, 3),
        "bleu_signature": cased_sig, "lc_tok_bleu_signature": lc_sig, "chrf_signature": chrf_sig,
    }  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_search_arguments(parser)
    parser.add_argument("--split", help="a split of the run's data: val, test2016 (Multi30k), test (DialogSum), ...")
    parser.add_argument("--src", help="source file (instead of --split)")
    parser.add_argument("--ref", help="reference file, line-aligned with --src")
    parser.add_argument("--data-dir", default=None, help="where --split finds its files (default: the run's data.path)")
    parser.add_argument("--metric", choices=("bleu", "rouge"), help="default: the run's decode.metric")
    parser.add_argument("--multi-ref", choices=MULTI_REF, default="max", help="ROUGE over several references")
    parser.add_argument("--output", help="also write the translations here")
    parser.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    args = parser.parse_args(argv)

    def run():
        from jax_transformer.config import UserError

        if args.output:
            require_writable_file(args.output, "--output")
        translator = load_for_search(args)
        data = translator.config.data
        if args.split:
            sources, references = split_texts(data, args.split, args.data_dir)
        elif args.src and args.ref:
            sources, references = read_lines(args.src), [[ref] for ref in read_lines(args.ref)]
        else:
            raise UserError("give --split (e.g. val, test2016, test), or both --src and --ref")
        if len(sources) != len(references):
            raise UserError(f"{len(sources)} source lines but {len(references)} references; they must align")
        hypotheses = translator.translate(sources, args.beam, args.alpha, progress=True)
        if args.output:
            write_text(args.output, "".join(h + "\n" for h in hypotheses), "--output")
        if (args.metric or translator.config.decode.metric) == "rouge":
            result = score_rouge(hypotheses, references, args.multi_ref)
        else:  # BLEU and chrF against the first reference of each example
            result = score(hypotheses, [refs[0] for refs in references], data.tgt_lang)
        if data.max_source_len:  # translate() cut these sources as training did
            lengths = [len(ids) + 1 for ids in translator.tokenizer.encode(sources)]
            result["truncated_sources"] = sum(n > data.max_source_len for n in lengths)
            print(f"{result['truncated_sources']} of {len(sources)} sources truncated to data.max_source_len="
                  f"{data.max_source_len} tokens", file=sys.stderr)  # fmt: skip
        if args.json:
            print(json.dumps(result))
        elif "rouge1" in result:
            for convention in (args.multi_ref, *(c for c in MULTI_REF if c != args.multi_ref)):
                r = result if convention == args.multi_ref else result[f"{convention}_over_references"]
                print(f"ROUGE-1 {r['rouge1']:.2f}  ROUGE-2 {r['rouge2']:.2f}  ROUGE-L {r['rougeL']:.2f}  "
                      f"({result['signature']}, {convention} over references)")  # fmt: skip
        else:
            print(f"BLEU {result['bleu']:.2f}  ({result['bleu_signature']})")
            print(f"lc-tok BLEU {result['lc_tok_bleu']:.2f}  ({result['lc_tok_bleu_signature']})")
            print(f"chrF {result['chrf']:.2f}  ({result['chrf_signature']})")

    return run_cli(run)


def score_rouge(hypotheses: list[str], references: list[list[str]], multi_ref: str = "max") -> dict:
    """ROUGE-1/2/L F1 (0-100) with `multi_ref` as the headline, the other convention under '<name>_over_references'."""
    from jax_transformer.metrics import rouge

    counts = sorted({len(refs) for refs in references})
    result = {key: round(value, 2) for key, value in rouge(hypotheses, references, multi_ref).items()}
    for other in MULTI_REF:
        if other != multi_ref:
            result[f"{other}_over_references"] = {
                k: round(v, 2) for k, v in rouge(hypotheses, references, other).items()
            }
    result["multi_ref"] = multi_ref
    result["signature"] = (
        f"rouge-score F1, Porter stemmer, rougeL=sentence LCS, refs/example {'/'.join(map(str, counts))}"
    )
    return result


def split_texts(data, split: str, data_dir: str | None) -> tuple[list[str], list[list[str]]]:
    """Sources and per-example reference lists of a split of the run's local data (Multi30k names mapped)."""
    import dataclasses

    from jax_transformer.config import UserError
    from jax_transformer.data.readers import read_sources_and_references

    if data.format == "tfds":
        raise UserError("--split reads local data files; for a TFDS run pass --src and --ref")
    if data.format == "files":
        split = SPLITS.get(split, split)
    if data_dir:
        data = dataclasses.replace(data, path=data_dir)
    return read_sources_and_references(data, split)


if __name__ == "__main__":
    sys.exit(main())
