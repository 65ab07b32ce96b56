"""Scores, computed from the cased, detokenized text a user gets.

- `bleu`: sacreBLEU as WMT reports it (cased, 13a tokenization), with its signature.
- `lc_tok_bleu`: what the Multi30k literature reports: hypotheses and references lowercased and Moses-tokenized
  (sacremoses, the same rules as `tokenizer.perl`), then scored with `tokenize='none'`. Same output, other recipe.
- `chrf`: sacreBLEU chrF.
- `rouge`: ROUGE-1/2/L F1 of summaries (Google's `rouge-score`, Porter stemming), with one or several references per
  example: the per-example score is the best over its references (`multi_ref='max'`, what `rouge-score`'s
  `score_multi` does) or their mean (`'mean'`), then averaged over examples and scaled to 0-100.
"""

import functools

import sacrebleu


def bleu(hypotheses: list[str], references: list[str]):
    """Cased sacreBLEU (13a). Returns the `BLEUScore` (`.score`) and its signature string."""
    metric = sacrebleu.metrics.BLEU()
    return metric.corpus_score(hypotheses, [references]), str(metric.get_signature())


@functools.lru_cache(maxsize=4)
def _moses(lang: str):
    from sacremoses import MosesTokenizer

    return MosesTokenizer(lang=lang)


def moses_lowercase(sentences: list[str], lang: str) -> list[str]:
    tokenizer = _moses(lang)
    return [tokenizer.tokenize(s.lower(), return_str=True, escape=False) for s in sentences]


def lc_tok_bleu(hypotheses: list[str], references: list[str], lang: str):
    """Lowercased, Moses-tokenized BLEU (tokenize='none'), comparable with published Multi30k tables."""
    metric = sacrebleu.metrics.BLEU(tokenize="none", force=True)
    score = metric.corpus_score(moses_lowercase(hypotheses, lang), [moses_lowercase(references, lang)])
    return score, str(metric.get_signature()) + f"|lc|moses-tok:{lang}"


def chrf(hypotheses: list[str], references: list[str]):
    metric = sacrebleu.metrics.CHRF()
    return metric.corpus_score(hypotheses, [references]), str(metric.get_signature())


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
MULTI_REF = ("max", "mean", "first")


def rouge(hypotheses: list[str], references: list[list[str]] | list[str], multi_ref: str = "max") -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 x 100 over examples. references[i] is one text or a list of texts for hypotheses[i];
    several are combined per example by `multi_ref`: 'max' (the best-matching reference, per ROUGE type, as
    `RougeScorer.score_multi`), 'mean' (the average over references) or 'first' (the first reference alone, e.g.
    DialogSum's summary1, which the dataset authors' public BART baseline scores against). ROUGE-L is the
    sentence-level LCS ('rougeL', no sentence splitting). Tokens are rouge-score's default: lowercased
    alphanumerics, Porter-stemmed."""
    from rouge_score import rouge_scorer

    from jax_transformer.config import UserError

    if multi_ref not in MULTI_REF:
        raise UserError(f"multi_ref={multi_ref!r} is not one of {', '.join(MULTI_REF)}")
    if len(hypotheses) != len(references):
        raise UserError(f"{len(hypotheses)} hypotheses but {len(references)} references; they must align")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs:
            raise UserError("an example has no reference")
        scores = [scorer.score(ref, hypothesis) for ref in refs]  # score(target, prediction)
        for key in ROUGE_TYPES:
            values = [s[key].fmeasure for s in scores]
            combined = {"max": max(values), "mean": sum(values) / len(values), "first": values[0]}
            totals[key] += combined[multi_ref]
    return {key: 100.0 * value / max(len(hypotheses), 1) for key, value in totals.items()}
