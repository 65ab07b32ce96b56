"""Packing (`data.pack_length`) through the streaming loader (`data/stream.py`): several sentence pairs per row, with
segment ids and positions, streamed from a random-access source by grain.

What must hold: every example lands in one row within the row length on both sides, once per epoch; the rows carry
each pair's tokens, its own BOS, positions from 0 and one segment id; epochs are reshuffled reproducibly; each of
several processes reads a disjoint share; a restored stream continues exactly; and the model gives each packed pair
the logits it gets alone (so packing changes the batch layout, never the objective). torch_ref's packed logits
against the JAX model's are in parity_tests/test_model_parity.py; a packed training run resumes bit-identically in
test_train.py, a two-process one in test_sharding.py.
"""

import json
from collections import Counter

import grain
import jax
import numpy as np
import pytest
from flax import nnx

from jax_transformer.config import ConfigError, DataConfig, UserError, model_preset
from jax_transformer.data import pipeline as data
from jax_transformer.data.stream import READ_CHUNK, BucketStream, PackedStream, packed_eval_batches
from jax_transformer.data.tokenizer import BOS_ID, EOS_ID
from jax_transformer.model import transformer as jm
from tests.test_data import synthetic


def pairs_of(batch) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(source, target, tgt_in) of every pair packed in `batch`, checking each pair's layout on the way."""
    out = []
    for r in range(len(batch["src"])):
        for segment in range(1, batch["src_segments"][r].max() + 1):
            src_span, tgt_span = batch["src_segments"][r] == segment, batch["tgt_segments"][r] == segment
            source, target = batch["src"][r][src_span], batch["tgt_out"][r][tgt_span]
            np.testing.assert_array_equal(batch["src_positions"][r][src_span], np.arange(len(source)))
            np.testing.assert_array_equal(batch["tgt_positions"][r][tgt_span], np.arange(len(target)))
            assert np.ptp(np.flatnonzero(src_span)) == len(source) - 1  # one contiguous span per pair
            out.append((source, target, batch["tgt_in"][r][tgt_span]))
        padding = batch["src_segments"][r] == 0
        assert (batch["src"][r][padding] == 0).all() and (batch["src_positions"][r][padding] == 0).all()
        assert (batch["tgt_out"][r][batch["tgt_segments"][r] == 0] == 0).all()
    return out


def ids_of(batches) -> list[int]:
    return [int(source[0]) - 10 for batch in batches for source, _, _ in pairs_of(batch)]  # synthetic(): i + 10


def take(stream: PackedStream, n: int) -> list[dict]:
    iterator = iter(stream)
    return [next(iterator) for _ in range(n)]


def test_packed_batches_hold_each_pair_with_its_own_bos_positions_and_segment():
    examples = synthetic(60)
    stream = PackedStream(examples, max_tokens=512, pack_length=64, seed=3)
    assert stream.shapes == [(8, 64, 64)]
    batches = take(stream, 12)
    for batch in batches:
        assert set(batch) == {"src", "tgt_in", "tgt_out", "src_segments", "tgt_segments", "src_positions",
                              "tgt_positions"}  # fmt: skip
        assert all(array.shape == (8, 64) and array.dtype == np.int32 for array in batch.values())
        for source, target, tgt_in in pairs_of(batch):
            i = int(source[0]) - 10
            np.testing.assert_array_equal(source, examples[i][0])
            np.testing.assert_array_equal(target, examples[i][1])
            np.testing.assert_array_equal(tgt_in, np.r_[BOS_ID, target[:-1]])
            assert target[-1] == EOS_ID
    real = sum(int((b["src_segments"] > 0).sum() + (b["tgt_segments"] > 0).sum()) for b in batches)
    assert real / sum(2 * b["src"].size for b in batches) > 0.85  # rows are well filled


def test_every_example_once_per_epoch_and_epochs_reshuffled_reproducibly():
    examples = synthetic(300)
    batches = take(PackedStream(examples, max_tokens=512, pack_length=64, seed=5), 90)  # ~3.5 epochs
    seen = ids_of(batches)
    counts = Counter(seen)
    assert len(seen) > 3 * 300 and set(counts) == set(range(300))
    # every epoch of the index stream is a permutation of all examples, each a new one (the packer then holds a pair
    # in an open row for a while, so the rows' counts may lag behind the epochs read)
    from jax_transformer.data.stream import _share

    indices = list(_share(examples, 5, True, 0, 1).repeat(4))
    epochs = [indices[e * 300 : (e + 1) * 300] for e in range(4)]
    assert all(sorted(epoch) == list(range(300)) for epoch in epochs) and len({tuple(e) for e in epochs}) == 4
    assert max(counts.values()) - min(counts.values()) <= 2
    first, second = seen[:300], seen[300:600]
    assert first != second and sorted(first[:250]) != sorted(second[:250])  # epochs differ in order
    again = ids_of(take(PackedStream(examples, max_tokens=512, pack_length=64, seed=5), 90))
    assert again == seen  # the same seed, the same stream
    other = ids_of(take(PackedStream(examples, max_tokens=512, pack_length=64, seed=6), 20))
    assert other != seen[: len(other)]
    unshuffled = [ids_of(take(PackedStream(examples, 512, 64, seed=seed, shuffle=False), 30)) for seed in (0, 7)]
    assert unshuffled[0] == unshuffled[1] != seen[: len(unshuffled[0])]  # unshuffled: the seed does not matter


def test_processes_read_disjoint_shares_that_cover_the_data():
    examples = synthetic(301)
    shares = []
    for index in range(2):
        stream = PackedStream(examples, max_tokens=512, pack_length=64, seed=5, process_index=index, process_count=2)
        assert stream.rows_per_batch == 4 and stream.share == (151, 150)[index]  # half the rows, half the data
        shares.append(set(ids_of(take(stream, 60))))  # > 1 epoch of the share
    assert shares[0].isdisjoint(shares[1]) and shares[0] | shares[1] == set(range(301))
    with pytest.raises(UserError, match="cannot be split evenly over 3"):
        PackedStream(examples, max_tokens=512, pack_length=64, process_count=3)


def test_a_restored_stream_continues_exactly():
    examples = synthetic(300)
    a = PackedStream(examples, max_tokens=512, pack_length=64, seed=5)
    stream = iter(a)
    for _ in range(47):  # into the second epoch, in the middle of a packing window
        next(stream)
    state = json.loads(json.dumps(a.state()))  # as a checkpoint stores it
    expected = [next(stream) for _ in range(25)]
    b = PackedStream(examples, max_tokens=512, pack_length=64, seed=5)
    b.restore(state)
    assert b.epoch == state["examples"] // 300 >= 1
    for x, y in zip(expected, take(b, 25), strict=True):
        for name in x:
            np.testing.assert_array_equal(x[name], y[name])
    assert b.examples_read == a.examples_read  # and it counts the epochs on
    # another seed, data or layout cannot continue it
    for other in (dict(seed=6), dict(pack_length=48), dict(process_count=2)):
        settings = dict(max_tokens=512, pack_length=64, seed=5) | other
        with pytest.raises(UserError, match="differ from the run being resumed"):
            PackedStream(examples, **settings).restore(state)
    with pytest.raises(UserError, match="differ from the run being resumed"):
        PackedStream(examples[:-1], max_tokens=512, pack_length=64, seed=5).restore(state)


class BatchedReadsOnly(list):
    """A source that refuses single reads (an array_record read costs a fixed amount per record of its file) and
    counts its batched ones."""

    def __init__(self, examples):
        super().__init__(examples)
        self.reads = []

    def __getitem__(self, i):
        raise AssertionError(f"record {i} read on its own")

    def __getitems__(self, indices):
        self.reads.append(len(indices))
        return [list.__getitem__(self, i) for i in indices]


def test_streams_read_their_source_in_batches():
    packed = BatchedReadsOnly(synthetic(3000))
    take(PackedStream(packed, max_tokens=512, pack_length=64, seed=5), 5)
    assert packed.reads and set(packed.reads) == {READ_CHUNK}
    windows = BatchedReadsOnly(synthetic(3000))
    batches = take(BucketStream(windows, max_tokens=512, length_bucket_step=4, seed=5, window=1000), 300)
    assert len(batches) == 300 and windows.reads.count(1000) >= 2 and set(windows.reads) == {1000}


def test_streaming_from_a_prepared_split_tokenizes_and_skips_long_pairs(tmp_path):
    """The training path: text pairs read by index from the prepared array_record split, tokenized on the way."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    sources = [f"sentence number {i} " + "word " * (i % 7) for i in range(120)]
    targets = [f"satz nummer {i} " + "wort " * (i % 5) for i in range(119)] + ["lang " * 200]
    (folder / "train.en").write_text("".join(line + "\n" for line in sources), encoding="utf-8")
    (folder / "train.de").write_text("".join(line + "\n" for line in targets), encoding="utf-8")
    cfg = DataConfig(path=str(folder), vocab_size=60, max_len=40, cache_dir=str(tmp_path / "cache"))
    split = data.open_split(cfg, "train")
    assert len(split) == 120 and split[3] == (sources[3].strip(), targets[3].strip())
    tokenizer = data.get_tokenizer(cfg, str(tmp_path / "run"), source=split)
    encode = data.pair_encoder(tokenizer, cfg.max_len)
    assert encode(split[119]) is None  # its target is longer than max_len
    stream = PackedStream(split, 320, 40, encode=encode, seed=1, identity=split.identity)
    batches = take(stream, 30)
    texts = Counter(tokenizer.decode([source])[0] for batch in batches for source, _, _ in pairs_of(batch))
    assert set(texts) == {s.strip() for s in sources[:119]}  # all but the long one, which is skipped
    for batch in batches[:3]:
        for source, target, _ in pairs_of(batch):
            i = sources.index(tokenizer.decode([source])[0] + " " * sources[0].endswith(" "))
            assert tokenizer.decode([target])[0] == targets[i].strip()


def test_packing_settings_are_checked():
    with pytest.raises(ConfigError, match="pack_length=64 must be 0"):
        DataConfig(max_len=100, pack_length=64)


def test_packed_validation_batches_hold_every_example_once():
    examples = synthetic(80) + [(np.r_[np.arange(90, 160), EOS_ID].astype(np.int32), np.r_[7, EOS_ID])]
    batches = list(packed_eval_batches(examples, 512, 64))
    assert {b["src"].shape for b in batches[:-1]} == {(8, 64)} and batches[-1]["src"].shape == (1, 71)
    total = sum(int((batch["tgt_out"] != 0).sum()) for batch in batches)
    assert total == sum(len(t) for _, t in examples)  # the 71-token source gets a row of its own
    assert sorted(ids_of(batches[:-1])) == list(range(80))


@pytest.mark.parametrize("variant", [
    dict(),  # post-norm, sinusoidal positions
    dict(norm_position="pre", positional="learned", share_embeddings=False, target_vocab_size=37),
])  # fmt: skip
def test_each_packed_pair_gets_the_logits_it_gets_alone(variant):
    config = model_preset("test", vocab_size=41, max_len=64, **variant)
    model = jm.Transformer(config, rngs=nnx.Rngs(0))
    rs = np.random.RandomState(0)
    noisy = jax.tree.map(lambda x: x + rs.normal(0, 0.1, x.shape).astype(np.float32) if x.ndim == 1 else x,
                         nnx.state(model, nnx.Param))  # fmt: skip
    nnx.update(model, noisy)
    model.eval()
    rng = np.random.default_rng(1)
    examples = [
        (np.r_[rng.integers(3, 41, s - 1), EOS_ID].astype(np.int32), np.r_[rng.integers(3, 37, t - 1), EOS_ID])
        for s, t in [(5, 7), (9, 3), (2, 2), (12, 10), (6, 11)]
    ]
    (batch,) = packed_eval_batches(examples, 64, 32)  # two rows of 32 tokens
    assert batch["src_segments"][0].max() >= 3  # the first row holds several pairs
    packing = {k: batch[k] for k in ("src_segments", "tgt_segments", "src_positions", "tgt_positions")}
    packed = np.asarray(model(batch["src"], batch["tgt_in"], **packing))  # (2, 32, vocab)
    worst, count = 0.0, 0
    for r in range(2):
        for segment in range(1, batch["src_segments"][r].max() + 1):
            source = batch["src"][r][batch["src_segments"][r] == segment]
            target = batch["tgt_out"][r][batch["tgt_segments"][r] == segment]
            tgt_in = np.r_[BOS_ID, target[:-1]][None].astype(np.int32)
            alone = np.asarray(model(source[None], tgt_in))[0]  # (len(target), vocab)
            got = packed[r][batch["tgt_segments"][r] == segment]
            worst, count = max(worst, float(np.abs(got - alone).max())), count + 1
    assert count == len(examples)
    print(f"\npacked vs alone, max abs logit difference {worst:.2e}")
    assert worst <= 1e-5
    # the perturbation check: another pair's tokens never reach a pair's logits
    changed = batch["src"].copy()
    changed[0][batch["src_segments"][0] == 2] = 3  # (a pair's source all 3s: a change for these random ids)
    again = np.asarray(model(changed, batch["tgt_in"], **packing))
    others = batch["tgt_segments"][0] != 2
    np.testing.assert_array_equal(again[0][others], packed[0][others])
    assert not np.allclose(again[0][~others], packed[0][~others])


def test_equal_shares_are_not_read_in_lockstep():
    """With one seed, grain would give two shares of one length the same permutation: process p reading line 2*pi(j) + p
    at position j, so every pair of neighbouring lines would always land in the same global batch."""
    from jax_transformer.data.stream import _share

    orders = [list(_share(range(400), 3, True, index, 2)) for index in range(2)]  # the line numbers each reads
    assert sorted(orders[0]) == list(range(0, 400, 2)) and sorted(orders[1]) == list(range(1, 400, 2))
    in_lockstep = sum(b == a + 1 for a, b in zip(orders[0], orders[1], strict=True))
    assert in_lockstep < 20, in_lockstep  # chance: about 1 position in 200
    one = list(_share(range(400), 0, True, 0, 1))
    assert one == list(grain.MapDataset.range(400).shuffle(seed=0))  # seed 0, one process: grain's seed 0, as before


def test_seeds_do_not_read_the_same_epochs_one_epoch_apart():
    """grain shuffles epoch e with seed + e: if run seeds went to grain as they are, seed 1's epoch e would be seed 0's
    epoch e + 1, and two seeds of one recipe would see the same sequence of epoch orders (correlated draws)."""
    from jax_transformer.data.stream import _share

    n = 400
    epochs = {seed: list(_share(range(n), seed, True, 0, 1).repeat(3)) for seed in range(3)}
    orders = {seed: [tuple(epochs[seed][e * n : (e + 1) * n]) for e in range(3)] for seed in range(3)}
    assert len({order for seed in range(3) for order in orders[seed]}) == 9  # nine epochs, nine permutations
    assert orders[0][1] == tuple(grain.MapDataset.range(n).shuffle(seed=1)[:n])  # seed 0: grain's seed 0 + epoch
