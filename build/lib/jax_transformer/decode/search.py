"""Decoding over the key/value cache: greedy search and batched beam search (§6.1: beam 4, length penalty 0.6).

All functions take a `Transformer` in eval mode and run under `jax.jit` (static output length, preallocated cache).
Outputs are token ids (batch, max_len) without BOS, EOS included where generated, padded with `pad_id`.
Each sentence may produce at most `limits[i]` tokens (EOS included; the paper's source length + 50): the limit is
per sentence, so a translation does not depend on which other sentences share its batch.

Two options for summaries, both off (0) by default, when the outputs are exactly those without them:
`min_len` bans EOS until that many tokens were produced (the length limit still ends a sentence), and
`no_repeat_ngram_size` n bans every token that would complete an n-gram the hypothesis already contains.

The self-attention cache grows in blocks instead of being allocated at `max_len`: the search runs with a cache of
`cache_block` positions, then twice that, and so on up to `max_len` (one `while_loop` per length, all in the same jitted
function; a batch that is done skips the later ones). Every step reads, and beam search reorders, the whole cache, so a
cache sized for the 50 extra tokens a sentence may produce but rarely does made most of a step's memory traffic
(measured in bench/decode_throughput.py). The outputs do not depend on the block size: positions past the current one
are masked either way (a test checks).
"""

import jax
import jax.numpy as jnp

NEG_INF = -1.0e9
CACHE_BLOCK = 8  # positions of the first self-attention cache; it doubles when a step reaches its end


def cache_lengths(max_len: int, cache_block: int | None = CACHE_BLOCK) -> list[int]:
    """The cache lengths a search grows through: cache_block, 2 * cache_block, ... and last max_len. None: max_len."""
    lengths, length = [], cache_block or max_len
    while length < max_len:
        lengths.append(length)
        length *= 2
    return lengths + [max_len]


def _grow(cache, length: int):
    """Pads every cache array (rows, heads, len, head_dim), as `init_cache` makes them, to `length` positions."""
    return jax.tree.map(lambda c: jnp.pad(c, ((0, 0), (0, 0), (0, length - c.shape[2]), (0, 0))), cache)


def _loop_over_cache_lengths(cond, body, carry, lengths, cache_at: int):
    """Runs `while_loop(cond(length), body)` for each cache length in turn, growing the cache (carry[cache_at]) to it
    first; `cond(length)` must stop the loop when the step index reaches `length` (carry[0] is the index)."""
    for length in lengths:
        carry = carry[:cache_at] + (_grow(carry[cache_at], length),) + carry[cache_at + 1 :]
        carry = jax.lax.while_loop(lambda c, length=length: (c[0] < length) & cond(c), body, carry)
    return carry


def output_limits(src_ids, pad_id: int, max_extra_len: int, max_len: int):
    """Per-sentence output length limits: real source length + max_extra_len, at most max_len. (batch,)"""
    return jnp.minimum(jnp.sum(src_ids != pad_id, axis=1) + max_extra_len, max_len).astype(jnp.int32)


def _constrain(log_probs, index, limits, eos_id: int, banned: tuple):
    """PAD and BOS are never produced (the model would read a generated PAD as padding), and only EOS, at no cost,
    may be produced at the last position a sentence is allowed. log_probs: (batch, ..., vocab)."""
    log_probs = log_probs.at[..., list(banned)].set(NEG_INF)
    at_limit = (index + 1 >= limits).reshape((-1,) + (1,) * (log_probs.ndim - 1))
    only_eos = jnp.full(log_probs.shape[-1], NEG_INF).at[eos_id].set(0.0)
    return jnp.where(at_limit, only_eos, log_probs)


def repeated_ngram_bans(seqs, index, n: int, vocab: int):
    """(rows, vocab) bool: the tokens that would complete an n-gram already in each row. seqs: (rows, max_len), the
    tokens produced so far at positions < index (later positions are ignored)."""
    rows, max_len = seqs.shape
    if max_len < n:
        return jnp.zeros((rows, vocab), bool)
    starts = max_len - n + 1
    windows = jnp.stack([seqs[:, i : i + starts] for i in range(n)], axis=-1)  # (rows, starts, n): every n-gram
    # the last n - 1 tokens produced, the prefix an n-gram completed now would start with (rows, n - 1)
    tail = jax.lax.dynamic_slice_in_dim(seqs, jnp.maximum(index - (n - 1), 0), n - 1, axis=1)
    complete = jnp.arange(starts) <= index - n  # n-grams lying wholly before position index (starts,)
    match = jnp.all(windows[:, :, :-1] == tail[:, None, :], axis=-1) & complete  # (rows, starts)
    completions = windows[:, :, -1]  # (rows, starts): the token that ends each n-gram
    hits = jnp.zeros((rows, vocab), jnp.int32).at[jnp.arange(rows)[:, None], completions].add(match.astype(jnp.int32))
    return hits > 0


def _ban(log_probs, seqs, index, eos_id: int, min_len: int, no_repeat_ngram_size: int):
    """The summary options: EOS banned before `min_len` tokens, tokens completing a repeated n-gram banned.
    log_probs: (rows, vocab) or (batch, k, vocab) with seqs (rows, max_len) or (batch, k, max_len). Applied before
    `_constrain`, so a sentence at its length limit still ends."""
    if min_len:
        log_probs = jnp.where(index < min_len, log_probs.at[..., eos_id].set(NEG_INF), log_probs)
    if no_repeat_ngram_size:
        vocab = log_probs.shape[-1]
        banned = repeated_ngram_bans(seqs.reshape(-1, seqs.shape[-1]), index, no_repeat_ngram_size, vocab)
        log_probs = jnp.where(banned.reshape(log_probs.shape), NEG_INF, log_probs)
    return log_probs


def greedy_search(
    model, src_ids, max_len: int, bos_id: int, eos_id: int, limits=None, min_len: int = 0,
    no_repeat_ngram_size: int = 0, cache_block: int | None = CACHE_BLOCK,
):  # fmt: skip
    """Pick the most probable next token at every step until every sentence emitted EOS (or reached its limit)."""
    batch = src_ids.shape[0]
    pad_id = model.config.pad_id
    limits = jnp.full((batch,), max_len, jnp.int32) if limits is None else limits
    memory, src_mask = model.encode(src_ids)
    cross = model.cross_key_values(memory)
    lengths = cache_lengths(max_len, cache_block)
    cache = model.init_cache(batch, lengths[0])
    output = jnp.full((batch, max_len), pad_id, dtype=jnp.int32)

    def cond(carry):
        return ~jnp.all(carry[4])  # some sentence is not done

    def body(carry):
        index, last, cache, output, done = carry
        logits, cache = model.decode_step(last, index, cache, cross, src_mask)  # (batch, vocab)
        logits = _ban(logits, output, index, eos_id, min_len, no_repeat_ngram_size)
        logits = _constrain(logits, index, limits, eos_id, (pad_id, bos_id))
        token = jnp.where(done, pad_id, jnp.argmax(logits, axis=-1).astype(jnp.int32))
        output = output.at[:, index].set(token)
        return index + 1, token, cache, output, done | (token == eos_id)

    start = jnp.full((batch,), bos_id, dtype=jnp.int32)
    init = (jnp.array(0), start, cache, output, jnp.zeros((batch,), dtype=bool))
    return _loop_over_cache_lengths(cond, body, init, lengths, cache_at=2)[3]


def top_k(x, k: int, chunk: int = 128):
    """`jax.lax.top_k(x, k)` over the last axis of (rows, n), in two small passes when n is large: the k largest values
    lie in the k chunks (of `chunk` consecutive entries) with the largest maxima (any other chunk's maximum is below
    k larger values), so only those k x chunk entries are ranked. The same values, in the same order; among exactly
    equal values the index may differ. XLA:CPU's top-k over 4 beams x 8,000 words took 5 times as long (measured)."""
    rows, n = x.shape
    if n <= 4 * k * chunk:
        return jax.lax.top_k(x, k)
    padded = jnp.pad(x, ((0, 0), (0, -n % chunk)), constant_values=-jnp.inf)
    chunks = padded.reshape(rows, -1, chunk)  # (rows, n / chunk, chunk)
    _, best = jax.lax.top_k(chunks.max(axis=-1), k)  # (rows, k): the chunks holding the k largest values
    candidates = jnp.take_along_axis(chunks, best[:, :, None], axis=1).reshape(rows, k * chunk)
    values, index = jax.lax.top_k(candidates, k)
    return values, jnp.take_along_axis(best, index // chunk, axis=1) * chunk + index % chunk


def length_penalty(length, alpha: float):
    """GNMT length penalty (Wu et al., 2016): ((5 + length) / 6)^alpha; scores are log P / penalty."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def beam_search(
    model, src_ids, beam_size: int, max_len: int, bos_id: int, eos_id: int, alpha: float, limits=None,
    min_len: int = 0, no_repeat_ngram_size: int = 0, cache_block: int | None = CACHE_BLOCK,
    finish_from_top_k: bool = False, renormalize_bans: bool = False, wait_for_k_finished: bool = False,
):  # fmt: skip
    """Batched beam search over the KV cache. Returns (tokens (batch, max_len), scores (batch,)) of the best
    hypothesis per sentence, scored log P(y | x) / length_penalty(|y|) with |y| counting EOS.

    Each step expands every live beam by every token, keeps the 2K best candidates, moves those ending in EOS to the
    finished set (the K best finished so far are kept) and continues with the K best that did not end. With
    `finish_from_top_k` only the candidates ranked in the top K of the 2K may finish (the others are dropped), the rule
    of Hugging Face generate() and fairseq; by default every one may (tensor2tensor and the Flax WMT example), which
    keeps more short, probable hypotheses. A sentence is done when no live beam can still beat its best finished
    hypothesis (log P only falls and the penalty is largest at the limit), so the returned hypothesis is final; the
    loop ends when every sentence is done or at max_len. Hugging Face generate() (early_stopping="never"), and
    CTranslate2 with a length penalty, wait for K finished hypotheses and stop when no live beam can beat the K-th
    best: `wait_for_k_finished` does the same, which returns the same best hypothesis in more steps (for timing
    searches that do the same work).

    Banned tokens (PAD, BOS, and the options' bans) are removed after the log-softmax, as fairseq and Hugging Face
    do: a hypothesis keeps the log-probability the model gives it. With `renormalize_bans` they are removed before
    it, so each step's probabilities are renormalized over the allowed tokens (CTranslate2's rule). The two differ
    only where the model gives banned tokens real mass (untrained models; parity_tests/test_ct2.py measures it).
    """
    batch, k, pad_id = src_ids.shape[0], beam_size, model.config.pad_id
    limits = jnp.full((batch,), max_len, jnp.int32) if limits is None else limits
    memory, src_mask = model.encode(src_ids)
    per_beam = lambda x: jnp.repeat(x, k, axis=0)  # (batch, ...) -> (batch * k, ...), beams of a sentence adjacent
    src_mask = per_beam(src_mask)
    cross = jax.tree.map(per_beam, model.cross_key_values(memory))  # projected once per source, copied per beam
    lengths = cache_lengths(max_len, cache_block)
    cache = model.init_cache(batch * k, lengths[0])

    alive_seqs = jnp.full((batch, k, max_len), pad_id, jnp.int32)
    alive_logp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1)), (batch, 1))  # one live beam at the start
    finished_seqs = jnp.full((batch, k, max_len), pad_id, jnp.int32)
    finished_scores = jnp.full((batch, k), NEG_INF)
    last = jnp.full((batch * k,), bos_id, jnp.int32)
    max_penalty = length_penalty(limits, alpha)  # (batch,)

    def gather(x, indices):  # x: (batch, n, ...), indices: (batch, m) -> (batch, m, ...)
        return jnp.take_along_axis(x, indices.reshape(indices.shape + (1,) * (x.ndim - 2)), axis=1)

    def sentence_done(alive_logp, finished_scores):
        best_alive_possible = alive_logp[:, 0] / max_penalty
        # finished_scores is sorted, best first; the K-th best is NEG_INF until K hypotheses have finished
        bar = finished_scores[:, -1] if wait_for_k_finished else finished_scores[:, 0]
        return best_alive_possible < bar  # (batch,)

    def cond(carry):
        _, _, _, alive_logp, _, finished_scores, _ = carry
        return ~jnp.all(sentence_done(alive_logp, finished_scores))

    def body(carry):
        index, last, cache, alive_logp, alive_seqs, finished_scores, finished_seqs = carry
        logits, cache = model.decode_step(last, index, cache, cross, src_mask)  # (batch * k, vocab)
        vocab = logits.shape[-1]
        scores = logits if renormalize_bans else jax.nn.log_softmax(logits)
        scores = _ban(scores.reshape(batch, k, vocab), alive_seqs, index, eos_id, min_len, no_repeat_ngram_size)
        scores = _constrain(scores, index, limits, eos_id, (pad_id, bos_id))
        log_probs = jax.nn.log_softmax(scores) if renormalize_bans else scores  # (batch, k, vocab)
        candidates = (alive_logp[:, :, None] + log_probs).reshape(batch, k * vocab)
        top_logp, top_index = top_k(candidates, 2 * k)  # (batch, 2k)
        top_beam, top_token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
        top_seqs = gather(alive_seqs, top_beam).at[:, :, index].set(top_token)  # (batch, 2k, max_len)
        ended = top_token == eos_id

        # the k best candidates that did not end stay alive
        alive_logp, keep = jax.lax.top_k(jnp.where(ended, NEG_INF, top_logp), k)
        alive_seqs = gather(top_seqs, keep)
        source_beam = jnp.take_along_axis(top_beam, keep, axis=1)  # (batch, k): which old beam each continues
        rows = (jnp.arange(batch)[:, None] * k + source_beam).reshape(-1)
        cache = jax.tree.map(lambda c: jnp.take(c, rows, axis=0, mode="clip"), cache)  # (clip: no bounds checks)
        last = alive_seqs[:, :, index].reshape(-1)

        # those that ended join the finished set, which keeps its k best
        may_finish = ended & (jnp.arange(2 * k) < k) if finish_from_top_k else ended
        new_scores = jnp.where(may_finish, top_logp / length_penalty(index + 1, alpha), NEG_INF)
        finished_scores, best = jax.lax.top_k(jnp.concatenate([finished_scores, new_scores], axis=1), k)
        finished_seqs = gather(jnp.concatenate([finished_seqs, top_seqs], axis=1), best)
        return index + 1, last, cache, alive_logp, alive_seqs, finished_scores, finished_seqs

    init = (jnp.array(0), last, cache, alive_logp, alive_seqs, finished_scores, finished_seqs)
    _, _, _, alive_logp, alive_seqs, finished_scores, finished_seqs = _loop_over_cache_lengths(
        cond, body, init, lengths, cache_at=2
    )
    # a sentence with no finished hypothesis (only possible without a limit) falls back to its best live beam
    none_finished = finished_scores[:, 0] <= NEG_INF / 2
    tokens = jnp.where(none_finished[:, None], alive_seqs[:, 0], finished_seqs[:, 0])
    scores = jnp.where(none_finished, alive_logp[:, 0] / max_penalty, finished_scores[:, 0])
    return tokens, scores
