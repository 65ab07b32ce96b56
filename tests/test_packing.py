"""Packing (`data.pack_length`): several sentence pairs per row, with segment ids and positions.

What must hold: every example lands in exactly one row, within the row length on both sides; the rows carry each
pair's tokens, its own BOS, positions from 0 and one segment id; and the model gives each packed pair the logits it
gets alone (so packing changes the batch layout, never the objective). torch_ref's packed logits against the JAX
model's are in parity_tests/test_model_parity.py; a packed training run resumes bit-identically in test_train.py.
"""

import jax
import numpy as np
import pytest
from flax import nnx

from jax_transformer.config import ConfigError, DataConfig, UserError, model_preset
from jax_transformer.data import pipeline as data
from jax_transformer.data.batching import pack_rows
from jax_transformer.data.tokenizer import BOS_ID, EOS_ID
from jax_transformer.model import transformer as jm
from tests.test_data import synthetic


def test_pack_rows_places_every_example_once_within_the_row_length():
    lengths = np.random.default_rng(0).integers(1, 30, size=(500, 2))
    order = np.random.default_rng(1).permutation(500)
    for open_rows in (1, 8, 64):
        rows = pack_rows(lengths, order, 40, open_rows=open_rows)
        members = np.concatenate(rows)
        assert sorted(members.tolist()) == list(range(500))  # each exactly once
        for row in rows:
            assert (lengths[row].sum(axis=0) <= 40).all()
    # one open row is next fit: rows are consecutive runs of the order
    assert np.array_equal(np.concatenate(pack_rows(lengths, order, 40, open_rows=1)), order)
    # more open rows fill rows better
    assert len(pack_rows(lengths, order, 40, open_rows=64)) < len(pack_rows(lengths, order, 40, open_rows=1))


def test_packed_batch_holds_each_pair_with_its_own_bos_positions_and_segment():
    examples = synthetic(60)
    iterator = data.BatchIterator(examples, max_tokens=512, seed=3, pack_length=64)
    assert iterator.shapes == [(8, 64, 64)]
    seen = []
    for batch in iterator.epoch_batches(0):
        assert set(batch) == {"src", "tgt_in", "tgt_out", "src_segments", "tgt_segments", "src_positions",
                              "tgt_positions"}  # fmt: skip
        assert all(array.shape == (8, 64) for array in batch.values())
        for r in range(8):
            for segment in range(1, batch["src_segments"][r].max() + 1):
                src_span = batch["src_segments"][r] == segment
                tgt_span = batch["tgt_segments"][r] == segment
                source, target = batch["src"][r][src_span], batch["tgt_out"][r][tgt_span]
                i = int(source[0]) - 10  # synthetic(): the first source token names the example
                seen.append(i)
                np.testing.assert_array_equal(source, examples[i][0])
                np.testing.assert_array_equal(target, examples[i][1])
                np.testing.assert_array_equal(batch["tgt_in"][r][tgt_span], np.r_[BOS_ID, target[:-1]])
                np.testing.assert_array_equal(batch["src_positions"][r][src_span], np.arange(len(source)))
                np.testing.assert_array_equal(batch["tgt_positions"][r][tgt_span], np.arange(len(target)))
                assert target[-1] == EOS_ID
            padding = batch["src_segments"][r] == 0
            assert (batch["src"][r][padding] == 0).all() and (batch["src_positions"][r][padding] == 0).all()
    assert sorted(seen) == list(range(60))


def test_packed_epochs_are_reshuffled_reproducibly_and_resume_exactly():
    examples = synthetic(300)
    first_rows = lambda it, epoch: [b["src"][:, 0].tolist() for b in it.epoch_batches(epoch)]
    a = data.BatchIterator(examples, max_tokens=512, seed=5, pack_length=64)
    b = data.BatchIterator(examples, max_tokens=512, seed=5, pack_length=64)
    assert first_rows(a, 0) == first_rows(b, 0)
    assert first_rows(a, 0) != first_rows(a, 1)
    stream = iter(a)
    consumed = [next(stream) for _ in range(a.num_batches_per_epoch + 3)]  # into the second epoch
    b.restore(a.state())
    after_a, after_b = next(stream), next(iter(b))
    for name in after_a:
        np.testing.assert_array_equal(after_a[name], after_b[name])
    assert len(consumed) == a.num_batches_per_epoch + 3
    # a bucketed iterator's position cannot be continued by a packed one
    bucketed = data.BatchIterator(examples, max_tokens=512, seed=5)
    with pytest.raises(UserError, match="differ from the run being resumed"):
        bucketed.restore(a.state())


def test_packing_settings_are_checked():
    with pytest.raises(ConfigError, match="pack_length=64 must be 0"):
        DataConfig(max_len=100, pack_length=64)
    with pytest.raises(UserError, match="does not fit a packed row"):
        data.BatchIterator(synthetic(50), max_tokens=512, pack_length=20)


def test_packed_validation_batches_hold_every_example_once():
    examples = synthetic(80) + [(np.r_[np.arange(90, 160), EOS_ID].astype(np.int32), np.r_[7, EOS_ID])]
    total = sum(int((batch["tgt_out"] != 0).sum()) for batch in data.packed_batches(examples, 512, 64))
    assert total == sum(len(t) for _, t in examples)  # the 71-token source gets a row of its own


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
    rows = [np.array([0, 1, 2]), np.array([3, 4])]
    batch = data._make_packed_batch(examples, rows, 32)
    packing = {k: batch[k] for k in ("src_segments", "tgt_segments", "src_positions", "tgt_positions")}
    packed = np.asarray(model(batch["src"], batch["tgt_in"], **packing))  # (2, 32, vocab)
    worst = 0.0
    for r, members in enumerate(rows):
        for segment, i in enumerate(members, start=1):
            source, target = examples[i]
            tgt_in = np.r_[BOS_ID, target[:-1]][None].astype(np.int32)
            alone = np.asarray(model(source[None], tgt_in))[0]  # (len(target), vocab)
            got = packed[r][batch["tgt_segments"][r] == segment]
            worst = max(worst, float(np.abs(got - alone).max()))
    print(f"\npacked vs alone, max abs logit difference {worst:.2e}")
    assert worst <= 1e-5
    # the perturbation check: another pair's tokens never reach a pair's logits
    changed = batch["src"].copy()
    changed[0][batch["src_segments"][0] == 2] = 3
    again = np.asarray(model(changed, batch["tgt_in"], **packing))
    others = batch["tgt_segments"][0] != 2
    np.testing.assert_array_equal(again[0][others], packed[0][others])
    assert not np.allclose(again[0][~others], packed[0][~others])
