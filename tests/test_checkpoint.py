"""Checkpointer: retention (last K + best) and the best step, also from a re-opened directory."""

import numpy as np
import pytest

from jax_transformer.train.checkpoint import Checkpointer


@pytest.mark.parametrize("metric, values, best", [("bleu", [5.0, 9.0, 7.0, 6.0], 2), ("loss", [3.0, 2.0, 1.5, 1.8], 3),
                                                  ("accuracy", [0.8, 0.9, 0.85, 0.7], 2)])  # fmt: skip
def test_best_step_is_the_best_metric_also_after_reopening(tmp_path, metric, values, best):
    directory = str(tmp_path / "checkpoints")
    checkpoints = Checkpointer(directory, keep=1, keep_best=True)
    for step, value in enumerate(values, start=1):
        state = {"params": {"w": np.full((2,), float(step), np.float32)}}
        checkpoints.save(step, state, {"step": step, "metrics": {metric: value}}, metrics={metric: value})
    checkpoints.save(5, {"params": {"w": np.zeros((2,), np.float32)}}, {"step": 5, "metrics": {}})  # not evaluated
    assert checkpoints.best_step() == best
    assert best in checkpoints.all_steps() and 5 in checkpoints.all_steps()  # the best and the latest are kept
    checkpoints.close()
    reopened = Checkpointer(directory, read_only=True)
    assert reopened.best_step() == best
    np.testing.assert_array_equal(reopened.restore_arrays(best)["params"]["w"], np.full((2,), float(best)))


def test_no_evaluated_checkpoint_has_no_best(tmp_path):
    checkpoints = Checkpointer(str(tmp_path / "c"), keep=2)
    checkpoints.save(1, {"params": {"w": np.zeros((2,), np.float32)}}, {"step": 1, "metrics": {}})
    assert checkpoints.best_step() is None


def test_a_damaged_checkpoint_is_named_with_the_way_out(tmp_path):
    """A truncated data file: restoring (for training or inference) raises one UserError naming the step and the
    other kept checkpoints, not an orbax traceback."""
    import os

    import jax

    from jax_transformer.config import UserError

    directory = str(tmp_path / "c")
    checkpoints = Checkpointer(directory, keep=2)
    state = {"params": {"w": np.arange(4096, dtype=np.float32)}}
    for step in (1, 2):
        checkpoints.save(step, state, {"step": step})
    walk = os.walk(os.path.join(directory, "2", "state"))
    data = [os.path.join(d, f) for d, _, names in walk for f in names if os.path.basename(d) == "d"]
    assert data  # the arrays' data files (orbax's ocdbt layout)
    for path in data:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    reopened = Checkpointer(directory, read_only=True)
    for restore in (lambda: reopened.restore_arrays(2), lambda: reopened.restore(2, jax.tree.map(np.asarray, state))):
        with pytest.raises(UserError) as error:
            restore()
        message = str(error.value)
        assert "checkpoint" in message and "/2 is damaged or incomplete" in message, message
        assert "--step with another kept checkpoint (1)" in message and "\n" not in message, message
    np.testing.assert_array_equal(reopened.restore_arrays(1)["params"]["w"], state["params"]["w"])  # the other reads


def test_a_resumed_run_keeps_the_best_of_its_earlier_sessions(tmp_path):
    """Re-opened for writing (a resumed run), the retention still knows the earlier checkpoints' metrics: the best of
    the first session survives the saves of the second until a better one comes."""
    directory = str(tmp_path / "checkpoints")

    def w(step):
        return {"params": {"w": np.full((2,), float(step), np.float32)}}

    def save(checkpoints, step, loss=None, bleu=None):  # ranked by loss, as train.best_metric='loss'; BLEU logged too
        evaluated = {} if loss is None else {"loss": loss, "bleu": bleu}
        ranked = {"loss": loss} if evaluated else None
        checkpoints.save(step, w(step), {"step": step, "metrics": evaluated}, metrics=ranked)

    first = Checkpointer(directory, keep=1, keep_best=True)
    for step, loss, bleu in ((1, 3.0, 10.0), (2, 1.0, 20.0), (3, 2.0, 30.0)):  # best by loss: 2 (by BLEU it would be 3)
        save(first, step, loss, bleu)
    assert first.all_steps() == [2, 3] and first.best_step() == 2
    first.close()

    resumed = Checkpointer(directory, keep=1, keep_best=True)
    save(resumed, 4, 1.5, 40.0)
    save(resumed, 5)  # not evaluated
    assert resumed.all_steps() == [2, 5] and resumed.best_step() == 2
    save(resumed, 6, 0.5, 5.0)  # a better one: the old best goes
    assert resumed.all_steps() == [6] and resumed.best_step() == 6
    np.testing.assert_array_equal(resumed.restore_arrays(6)["params"]["w"], w(6)["params"]["w"])


def test_an_unreadable_meta_does_not_stop_the_others_from_being_ranked(tmp_path):
    directory = str(tmp_path / "checkpoints")
    checkpoints = Checkpointer(directory, keep=3)
    for step, bleu in ((1, 30.0), (2, 20.0)):
        checkpoints.save(step, {"w": np.zeros(2, np.float32)}, {"metrics": {"bleu": bleu}}, metrics={"bleu": bleu})
    checkpoints.close()
    with open(f"{directory}/1/meta/metadata", "w") as f:
        f.write("{not json")  # the earlier best, damaged
    resumed = Checkpointer(directory, keep=3)  # a resumed run opens the directory for writing
    assert resumed.best_step() == 2
