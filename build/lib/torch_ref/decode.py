"""Decoding for the PyTorch mirror: greedy search and beam search over the model's key/value cache.

A line-for-line port of `jax_transformer/decode.py` (the cache methods are in `torch_ref/model.py`), so that
an exported model translates token for token as it does in JAX: the same GNMT length penalty, the same per-sentence
output limits (real source length + max_extra_len, at most max_len, EOS forced at the limit), PAD and BOS never
produced, the same summary options (min_len, no_repeat_ngram_size; 0 = off), the same candidate layout (beam-major,
k * vocab) and the same tie-breaking (`_top_k` sorts stably, so equal scores keep the lower index first, as
`jax.lax.top_k` does; `argmax` returns the first maximum in both frameworks).

All functions expect a model in eval mode and run without gradients. Outputs are token ids (batch, max_len) without
BOS, EOS included where generated, padded with the model's pad id.
"""

import torch

NEG_INF = -1.0e9


# ---------------------------------------------------------------------------------------------------------------------
# Searches (mirror jax_transformer/decode.py)
# ---------------------------------------------------------------------------------------------------------------------


def output_limits(src_ids, pad_id: int, max_extra_len: int, max_len: int):
    """Per-sentence output length limits: real source length + max_extra_len, at most max_len. (batch,)"""
    return torch.clamp((src_ids != pad_id).sum(dim=1) + max_extra_len, max=max_len)


def _constrain(log_probs, index: int, limits, eos_id: int, banned: tuple):
    """PAD and BOS are never produced (the model would read a generated PAD as padding), and only EOS, at no cost,
    may be produced at the last position a sentence is allowed. log_probs: (batch, ..., vocab)."""
    log_probs = log_probs.clone()
    log_probs[..., list(banned)] = NEG_INF
    at_limit = (index + 1 >= limits).reshape((-1,) + (1,) * (log_probs.ndim - 1))
    only_eos = torch.full((log_probs.shape[-1],), NEG_INF, dtype=log_probs.dtype, device=log_probs.device)
    only_eos[eos_id] = 0.0
    return torch.where(at_limit, only_eos, log_probs)


def repeated_ngram_bans(seqs, index: int, n: int, vocab: int):
    """(rows, vocab) bool: the tokens that would complete an n-gram already in each row. seqs: (rows, max_len), the
    tokens produced so far at positions < index (later positions are ignored)."""
    rows, max_len = seqs.shape
    banned = torch.zeros((rows, vocab), dtype=torch.bool, device=seqs.device)
    if max_len < n or index < n:  # no whole n-gram before position index yet
        return banned
    windows = seqs[:, :index].unfold(1, n, 1)  # (rows, index - n + 1, n): every n-gram wholly before index
    tail = seqs[:, index - (n - 1) : index]  # (rows, n - 1): the prefix an n-gram completed now would start with
    match = (windows[:, :, :-1] == tail[:, None, :]).all(dim=-1)  # (rows, index - n + 1)
    rows_index = torch.arange(rows, device=seqs.device)[:, None].expand_as(match)
    banned[rows_index[match], windows[:, :, -1][match]] = True
    return banned


def _ban(log_probs, seqs, index: int, eos_id: int, min_len: int, no_repeat_ngram_size: int):
    """The summary options: EOS banned before `min_len` tokens, tokens completing a repeated n-gram banned.
    log_probs: (rows, vocab) or (batch, k, vocab) with seqs (rows, max_len) or (batch, k, max_len). Applied before
    `_constrain`, so a sentence at its length limit still ends."""
    if min_len and index < min_len:
        log_probs = log_probs.clone()
        log_probs[..., eos_id] = NEG_INF
    if no_repeat_ngram_size:
        vocab = log_probs.shape[-1]
        banned = repeated_ngram_bans(seqs.reshape(-1, seqs.shape[-1]), index, no_repeat_ngram_size, vocab)
        log_probs = torch.where(banned.reshape(log_probs.shape), NEG_INF, log_probs)
    return log_probs


def _top_k(x, k: int):
    """`jax.lax.top_k` on the last axis: the k largest, sorted, equal values in index order (a stable sort)."""
    values, indices = torch.sort(x, dim=-1, descending=True, stable=True)
    return values[..., :k], indices[..., :k]


def _default_limits(src_ids, max_len: int, limits):
    if limits is None:
        return torch.full((src_ids.shape[0],), max_len, dtype=torch.long, device=src_ids.device)
    return torch.as_tensor(limits, device=src_ids.device)


@torch.no_grad()
def greedy_search(
    model, src_ids, max_len: int, bos_id: int, eos_id: int, limits=None, min_len: int = 0, no_repeat_ngram_size: int = 0
):
    """Pick the most probable next token at every step until every sentence emitted EOS (or reached its limit)."""
    src_ids = torch.as_tensor(src_ids, dtype=torch.long)
    batch, pad_id = src_ids.shape[0], model.config.pad_id
    limits = _default_limits(src_ids, max_len, limits)
    memory, src_mask = model.encode(src_ids)
    cross = model.cross_key_values(memory)
    cache = model.init_cache(batch, max_len)
    output = torch.full((batch, max_len), pad_id, dtype=torch.long, device=src_ids.device)
    last = torch.full((batch,), bos_id, dtype=torch.long, device=src_ids.device)
    done = torch.zeros((batch,), dtype=torch.bool, device=src_ids.device)
    index = 0
    while index < max_len and not bool(done.all()):
        logits, cache = model.decode_step(last, index, cache, cross, src_mask)  # (batch, vocab)
        logits = _ban(logits, output, index, eos_id, min_len, no_repeat_ngram_size)
        logits = _constrain(logits, index, limits, eos_id, (pad_id, bos_id))
        token = torch.where(done, pad_id, logits.argmax(dim=-1))
        output[:, index] = token
        done = done | (token == eos_id)
        last, index = token, index + 1
    return output


def length_penalty(length, alpha: float):
    """GNMT length penalty (Wu et al., 2016): ((5 + length) / 6)^alpha; scores are log P / penalty."""
    return ((5.0 + torch.as_tensor(length, dtype=torch.float32)) / 6.0) ** alpha


@torch.no_grad()
def beam_search(
    model, src_ids, beam_size: int, max_len: int, bos_id: int, eos_id: int, alpha: float, limits=None,
    min_len: int = 0, no_repeat_ngram_size: int = 0, finish_from_top_k: bool = False, wait_for_k_finished: bool = False,
):  # fmt: skip
    """Batched beam search over the KV cache. Returns (tokens (batch, max_len), scores (batch,)) of the best
    hypothesis per sentence, scored log P(y | x) / length_penalty(|y|) with |y| counting EOS.

    Each step expands every live beam by every token, keeps the 2K best candidates, moves those ending in EOS to the
    finished set (the K best finished so far are kept) and continues with the K best that did not end. With
    `finish_from_top_k` only the candidates ranked in the top K of the 2K may finish (the others are dropped), the rule
    of Hugging Face generate() and fairseq; by default every one may (tensor2tensor and the Flax WMT example), which
    keeps more short, probable hypotheses. A sentence is done when no live beam can still beat its best finished
    hypothesis (with `wait_for_k_finished`: its K-th best, Hugging Face's rule; the same best hypothesis in more
    steps); the loop ends when every sentence is done or at max_len. (The same algorithm as
    `jax_transformer.decode.search.beam_search`.)
    """
    src_ids = torch.as_tensor(src_ids, dtype=torch.long)
    device = src_ids.device
    batch, k, pad_id = src_ids.shape[0], beam_size, model.config.pad_id
    limits = _default_limits(src_ids, max_len, limits)
    memory, src_mask = model.encode(src_ids)
    per_beam = lambda x: x.repeat_interleave(k, dim=0)  # (batch, ...) -> (batch * k, ...), beams of a sentence adjacent
    src_mask = per_beam(src_mask)
    cross = model.cross_key_values(per_beam(memory))
    cache = model.init_cache(batch * k, max_len)

    alive_seqs = torch.full((batch, k, max_len), pad_id, dtype=torch.long, device=device)
    alive_logp = torch.tensor([0.0] + [NEG_INF] * (k - 1), device=device).repeat(batch, 1)  # one live beam at first
    finished_seqs = torch.full((batch, k, max_len), pad_id, dtype=torch.long, device=device)
    finished_scores = torch.full((batch, k), NEG_INF, device=device)
    last = torch.full((batch * k,), bos_id, dtype=torch.long, device=device)
    max_penalty = length_penalty(limits, alpha)  # (batch,)

    def gather(x, indices):  # x: (batch, n, ...), indices: (batch, m) -> (batch, m, ...)
        return torch.take_along_dim(x, indices.reshape(indices.shape + (1,) * (x.ndim - 2)), dim=1)

    def sentence_done(alive_logp, finished_scores):
        best_alive_possible = alive_logp[:, 0] / max_penalty
        # finished_scores is sorted, best first; the K-th best is NEG_INF until K hypotheses have finished
        bar = finished_scores[:, -1] if wait_for_k_finished else finished_scores[:, 0]
        return best_alive_possible < bar  # (batch,)

    index = 0
    while index < max_len and not bool(sentence_done(alive_logp, finished_scores).all()):
        logits, cache = model.decode_step(last, index, cache, cross, src_mask)  # (batch * k, vocab)
        vocab = logits.shape[-1]
        log_probs = torch.log_softmax(logits.float(), dim=-1).reshape(batch, k, vocab)
        log_probs = _ban(log_probs, alive_seqs, index, eos_id, min_len, no_repeat_ngram_size)
        log_probs = _constrain(log_probs, index, limits, eos_id, (pad_id, bos_id))
        candidates = (alive_logp[:, :, None] + log_probs).reshape(batch, k * vocab)
        top_logp, top_index = _top_k(candidates, 2 * k)  # (batch, 2k)
        top_beam, top_token = top_index // vocab, top_index % vocab
        top_seqs = gather(alive_seqs, top_beam).clone()  # (batch, 2k, max_len)
        top_seqs[:, :, index] = top_token
        ended = top_token == eos_id

        # the k best candidates that did not end stay alive
        alive_logp, keep = _top_k(torch.where(ended, NEG_INF, top_logp), k)
        alive_seqs = gather(top_seqs, keep)
        source_beam = torch.take_along_dim(top_beam, keep, dim=1)  # (batch, k): which old beam each continues
        rows = (torch.arange(batch, device=device)[:, None] * k + source_beam).reshape(-1)
        cache = [{name: c[rows] for name, c in layer.items()} for layer in cache]
        last = alive_seqs[:, :, index].reshape(-1)

        # those that ended join the finished set, which keeps its k best
        may_finish = ended & (torch.arange(2 * k, device=device) < k) if finish_from_top_k else ended
        new_scores = torch.where(may_finish, top_logp / length_penalty(index + 1, alpha), NEG_INF)
        finished_scores, best = _top_k(torch.cat([finished_scores, new_scores], dim=1), k)
        finished_seqs = gather(torch.cat([finished_seqs, top_seqs], dim=1), best)
        index += 1

    # a sentence with no finished hypothesis (only possible without a limit) falls back to its best live beam
    none_finished = finished_scores[:, 0] <= NEG_INF / 2
    tokens = torch.where(none_finished[:, None], alive_seqs[:, 0], finished_seqs[:, 0])
    scores = torch.where(none_finished, alive_logp[:, 0] / max_penalty, finished_scores[:, 0])
    return tokens, scores
