"""Scores, computed from the cased, detokenized text a user gets.

- `bleu`: sacreBLEU as WMT reports it (cased, 13a tokenization), with its signature.
- `lc_tok_bleu`: what the Multi30k literature reports: hypotheses and references lowercased and Moses-tokenized
  (sacremoses, the same rules as `tokenizer.perl`), then scored with `tokenize='none'`. Same output, other recipe.
- `chrf`: sacreBLEU chrF.
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
