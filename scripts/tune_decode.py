"""Choose beam size and length penalty on the validation split: one model, every (beam, alpha) pair, one table.

  python scripts/tune_decode.py runs/multi30k_en_de/avg5                       # beams 4 5 6 x alphas 0.6 0.8 1.0
  python scripts/tune_decode.py runs/multi30k_en_de --beams 5 --alphas 0.4 0.6 0.8 1.0 1.2 --split val
  python scripts/tune_decode.py runs/dialogsum/avg5 --beams 4 --alphas 0.6 1.0 1.5 2.0   # ROUGE (decode.metric)

The model is a run directory (its latest checkpoint) or a model directory (e.g. the average that
scripts/multi30k_results.py writes to RUN/avgN). Each pair decodes the whole split with the model's other decode
settings (min_len, no_repeat_ngram_size); scores follow the model's decode.metric: for 'bleu' the cased, detokenized
output's cased sacreBLEU, lowercased Moses-tokenized BLEU, chrF and the output's length over the references'
(`jax_transformer.cli.evaluate.score`; under 1, BLEU's brevity penalty applies), chosen by lc-tok BLEU; for
'rouge' ROUGE-1/2/L F1 (`evaluate.score_rouge`, max over references), chosen by ROUGE-1.
Tune on val only: the test split is for the final figure. Writes the table as JSON with --json-out.
"""

import argparse
import json
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a run directory or a model directory")
    parser.add_argument("--beams", type=int, nargs="+", default=[4, 5, 6])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.6, 0.8, 1.0])
    parser.add_argument("--split", default=None, help="a split of the model's data (default: its data.valid_split)")
    parser.add_argument("--data-dir", default=None, help="where --split finds its files (default: the data.path)")
    parser.add_argument("--json-out", default="", help="also write the rows here")
    args = parser.parse_args(argv)

    from jax_transformer.cli import require_writable_file, run_cli, write_text

    def run():
        from jax_transformer.cli.evaluate import score, score_rouge, split_texts
        from jax_transformer.config import UserError
        from jax_transformer.decode.translator import load_translator

        if any(b < 1 for b in args.beams) or any(a < 0 for a in args.alphas):
            raise UserError("--beams must be >= 1 and --alphas >= 0")
        if args.json_out:
            require_writable_file(args.json_out, "--json-out")
        translator = load_translator(args.model)
        data = translator.config.data
        args.split = args.split or data.valid_split
        sources, references = split_texts(data, args.split, args.data_dir)
        if translator.config.decode.metric == "rouge":
            columns, key = ("rouge1", "rouge2", "rougeL"), "rouge1"
            evaluate = lambda hypotheses: score_rouge(hypotheses, references)
        else:
            columns, key = ("lc_tok_bleu", "bleu", "chrf", "length_ratio"), "lc_tok_bleu"
            evaluate = lambda hypotheses: score(hypotheses, [refs[0] for refs in references], data.tgt_lang)
        rows = []
        print(f"{args.model}: {args.split}, {len(sources):,} sentences", file=sys.stderr)
        print(f"| beam | alpha | {' | '.join(columns)} | seconds |\n|---:|---:|{'---:|' * len(columns)}---:|")
        for beam in args.beams:
            for alpha in args.alphas:
                started = time.time()
                s = evaluate(translator.translate(sources, beam_size=beam, alpha=alpha))
                row = {"beam": beam, "alpha": alpha, **{c: s[c] for c in columns},
                       "seconds": round(time.time() - started, 1)}  # fmt: skip
                rows.append(row)
                cells = " | ".join(f"{row[c]:.3f}" if c == "length_ratio" else f"{row[c]:.2f}" for c in columns)
                print(f"| {beam} | {alpha:g} | {cells} | {row['seconds']:.0f} |", flush=True)
        best = max(rows, key=lambda r: r[key])
        print(f"best on {args.split}: beam {best['beam']}, alpha {best['alpha']:g} ({key} {best[key]:.2f})",
              file=sys.stderr)
        if args.json_out:
            table = {"model": args.model, "split": args.split, "rows": rows, "best": best}
            write_text(args.json_out, json.dumps(table, indent=2), "--json-out")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
