"""The one training loop: every task trains through `fit(task)`.

The engine owns the loop, the run directory, the mesh, the checkpoints and the logs; it never knows which task it
trains. A task supplies what is its own (see `tasks/translation.py` and `tasks/classification.py`):

  task.config                         the run's config (`directory`, `seed`, `mesh`, `train` with the loop settings)
  task.prepare()                      read and tokenize the data; may resolve `task.config`; sets `task.batches` (an
                                      endless iterator with `state()` / `restore()` / `epoch`; with `process_local`
                                      each process's own rows, of `data_shards` blocks) and `task.total_steps`
  task.fixed_settings(config)         the settings a resumed run must share with the run in the directory
  task.adjustable_settings(config)    those it may change (e.g. a higher train.steps to extend a finished run)
  task.save_run_files()               what the run directory holds besides config.json (labels, tokenizer, ...)
  task.build() -> (steps, params)     the model, its `Steps` (loss, optimizer, mesh) and the initial parameters
  task.describe(num_params)           a line about the model, printed once
  task.real_tokens(batch)             non-padding tokens of a batch, for tokens/s
  task.train_metrics(sums)            the logged training metrics of summed step metrics
  task.evaluate(state, step) -> dict  validation metrics (`train.best_metric` among them ranks the checkpoints)
  task.finish(result, checkpoints)    the final report

`fit` starts a run in `config.directory` or resumes the one there (same command, same result: batches, dropout
masks and the optimizer continue exactly). It trains on one device or on a mesh of many devices and hosts
(`config.mesh`): every process runs it; process 0 alone writes config.json, the task's files and the logs. Ctrl-C
or SIGTERM saves a checkpoint before stopping.
"""

import os
import shutil
import signal
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

from jax_transformer import machine
from jax_transformer.config import UserError
from jax_transformer.train import sharding
from jax_transformer.train.checkpoint import Checkpointer
from jax_transformer.train.run_log import RunLog
from jax_transformer.train.steps import sum_metrics


class TrainingInterrupted(Exception):
    """Raised by tests to simulate a crash (no final checkpoint) at a given step."""


def say(message: str) -> None:
    """One line on stderr from process 0, above the progress bar."""
    if sharding.is_main_process():
        tqdm.write(message, file=sys.stderr)


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def prepare_run_dir(task) -> list[str] | None:
    """Check that the run already in the run directory, if any, was made by a compatible config.
    Returns None for a new run, else the settings this resume changes (`task.adjustable_settings`)."""
    config = task.config
    path = os.path.join(config.directory, "config.json")
    if not os.path.exists(path):
        return None
    old = type(config).load(path)
    clash = _diff(task.fixed_settings(old), task.fixed_settings(config))
    if clash:
        raise UserError(
            f"{config.directory} holds a run with a different config ({clash[0]}"
            f"{f' and {len(clash) - 1} more' if len(clash) > 1 else ''}); "
            "fix: pick another --config.name (or --config.run_dir), or delete that directory to start over"
        )
    return _diff(task.adjustable_settings(old), task.adjustable_settings(config))


def record_resume(config, changes: list[str], step: int, log: RunLog) -> None:
    """A resume that changes settings keeps the run's history honest: the config it started with is kept as
    config.before_step{step}.json, config.json becomes the one now in force, and metrics.jsonl records the change.
    With train.schedule='cosine' or 'linear' a new train.steps also reshapes the schedule from here on (the others
    do not depend on it), so the result differs from a run started with the new value."""
    path = os.path.join(config.directory, "config.json")
    kept = os.path.join(config.directory, f"config.before_step{step}.json")
    if not os.path.exists(kept):
        shutil.copyfile(path, kept)
    tmp = path + ".tmp"
    config.save(tmp)
    os.replace(tmp, path)
    log.write("resume", step, {"changes": changes})
    schedule = getattr(config.train, "schedule", "")
    reshaped = schedule in ("cosine", "linear") and any(c.startswith("train.steps:") for c in changes)
    note = f" (the {schedule} schedule now ends at the new train.steps)" if reshaped else ""
    say(f"resume changes {', '.join(changes)}{note}; the previous config is kept as {os.path.basename(kept)}")


def data_position(batches) -> dict:
    """Where the training input continues from, for a checkpoint. A streaming input (`process_local`) has one position
    per process (each reads its own share): all of them are gathered, and process 0 writes them with the checkpoint."""
    if getattr(batches, "process_local", False):
        return {"processes": sharding.allgather_json(batches.state())}
    return batches.state()


def restore_data_position(batches, saved: dict) -> None:
    """Continue the training input from `data_position`'s record: each process from its own position."""
    if "processes" in saved:
        positions = saved["processes"]
        if len(positions) != jax.process_count():
            raise UserError(
                f"the checkpoint was written by {len(positions)} training process(es) that each streamed their own "
                f"share of the data, and this run has {jax.process_count()}; fix: resume with {len(positions)} "
                "processes, or start a new run"
            )
        saved = positions[jax.process_index()]
    batches.restore(saved)


class StopRequest:
    """SIGTERM or Ctrl-C while training asks the loop to stop after the update under way; the loop then saves a
    checkpoint and stops, so that a resumed run is bit-identical to an uninterrupted one. (Raising at the signal
    would break into an update half-way: its batch read but not applied, the state's buffers donated to a computation
    whose result is never assigned.) A second Ctrl-C stops at once. Handlers can only be installed from the main
    thread; elsewhere Ctrl-C raises KeyboardInterrupt as usual."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        if main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def agreed(self, at_log_step: bool) -> bool:
        """Whether to stop now. One process: as soon as it was asked. Several: all must stop at the same update (they
        write the checkpoint together), so they agree at log steps, where the loop waits for the devices anyway, and
        stop if any of them was asked."""
        if jax.process_count() == 1:
            return self.requested
        return at_log_step and any(sharding.allgather_json(self.requested))

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def fit(task, *, crash_at_step: int | None = None) -> dict:
    """Train (or resume) `task` in its run directory; returns the final metrics (or the task's report)."""
    config = task.config
    sharding.initialize_distributed(config.mesh)  # several processes: connect them before anything uses a device
    main = sharding.is_main_process()
    os.makedirs(config.directory, exist_ok=True)
    # Process 0 goes first: it prepares the data, trains the tokenizer and writes config.json; the others then read.
    if not main:
        sharding.barrier("run_dir")
    task.prepare()  # reuses the run's tokenizer when there is one: nothing is overwritten
    config = task.config
    changes = prepare_run_dir(task)  # refuses a run directory made by an incompatible config
    if changes is None and main:
        config.save(os.path.join(config.directory, "config.json"))
        task.save_run_files()
    if main:
        sharding.barrier("run_dir")
    tcfg, total_steps = config.train, task.total_steps

    steps, params = task.build()
    state = steps.init_state(params)
    del params
    checkpoints = Checkpointer(os.path.join(config.directory, "checkpoints"), tcfg.keep_checkpoints, tcfg.keep_best)
    start = checkpoints.latest_step()
    if start is not None:  # onto this run's mesh, whatever mesh wrote it
        state, meta = checkpoints.restore(start, state)
        restore_data_position(task.batches, meta["data"])
        say(f"resuming {config.directory} from step {start}")
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
    say(f"{task.describe(num_params)}; run directory {config.directory}")
    fsdp = " with FSDP" if config.mesh.fsdp else ""
    say(f"mesh: {dict(steps.mesh.shape)}{fsdp} over {steps.mesh.size} devices in {jax.process_count()} process(es)")

    log = RunLog(config.directory, enabled=main)
    step = int(state["step"])
    # each training process says where it ran: a run resumed elsewhere, or pinned to fewer cores, is read as such
    log.write("start", step, {"hardware": machine.describe(), "xla_flags": os.environ.get("XLA_FLAGS", "")})
    if main and changes:
        if start is None:  # nothing trained yet: the new settings simply replace the old ones
            config.save(os.path.join(config.directory, "config.json"))
        else:
            record_resume(config, changes, step, log)
    batch_iter = iter(task.batches)
    pending, real_tokens, window_start = [], 0, time.time()

    def next_batch():
        """The next batch on the mesh; counts its real (non-pad) tokens for tokens/s."""
        nonlocal real_tokens
        batch = next(batch_iter)
        if getattr(task.batches, "process_local", False):  # each process made its own rows (streaming input)
            real_tokens += task.real_tokens(batch) * task.batches.data_shards  # (the other blocks: as full, ~)
            return steps.shard_local_batch(batch, task.batches.data_shards)
        real_tokens += task.real_tokens(batch)
        return steps.shard_batch(batch)

    last = {}
    progress = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True, disable=None if main else True)

    def save(evaluated=None):
        ranked = evaluated and tcfg.keep_best and tcfg.best_metric in evaluated  # orbax ranks by this to keep the best
        meta = {"data": data_position(task.batches), "step": step, "metrics": evaluated or {}}
        checkpoints.save(step, state, meta, metrics={tcfg.best_metric: evaluated[tcfg.best_metric]} if ranked else None)

    saved_step, updating = None, False  # updating: a batch has been read and its update not yet applied

    def stopped():
        """Save (unless this step was just saved) and say so; after a completed update only."""
        progress.close()
        if saved_step != step:
            save()
        return UserError(f"interrupted at step {step}: checkpoint saved; run the same command again to resume")

    stop = StopRequest()
    try:
        while step < total_steps:
            updating = True
            if tcfg.grad_accum_steps == 1:
                state, metrics = steps.train_step(state, next_batch())
            else:
                batch = next_batch()
                acc = steps.zero_accumulator(state["params"], batch)
                for micro in range(tcfg.grad_accum_steps):
                    acc = steps.accumulate(acc, state["params"], batch, state["step"], micro)
                    if micro + 1 < tcfg.grad_accum_steps:
                        batch = next_batch()
                state, metrics = steps.apply_accumulated(state, acc)
            step += 1
            updating = False
            pending.append(metrics)
            progress.update(1)
            if crash_at_step is not None and step == crash_at_step:
                raise TrainingInterrupted(step)

            at_log_step = step % tcfg.log_every == 0 or step == total_steps
            if at_log_step:
                bad_step = int(state["nonfinite_step"])
                if bad_step >= 0:
                    raise UserError(
                        f"non-finite loss or gradient at step {bad_step} (that update was skipped, training stopped); "
                        "fix: lower train.learning_rate, set train.clip_grad_norm, or compute in float32"
                    )
                total = sum_metrics(pending)
                elapsed = time.time() - window_start
                last = {
                    **task.train_metrics(total), "lr": float(metrics["lr"]), "grad_norm": float(metrics["grad_norm"]),
                    "tokens_per_s": real_tokens / max(elapsed, 1e-9), "epoch": task.batches.epoch,
                }  # fmt: skip
                if hasattr(task.batches, "padding_efficiency"):  # real tokens per batch slot
                    last["real_token_share"] = float(task.batches.padding_efficiency)
                log.write("train", step, last)
                progress.set_postfix(
                    loss=f"{last['loss']:.3f}", lr=f"{last['lr']:.2e}", tok_s=f"{last['tokens_per_s']:.0f}"
                )
                if progress.disable:  # no terminal: one line per log step instead of a bar
                    say(f"step {step}: loss {last['loss']:.4f} lr {last['lr']:.3e} {last['tokens_per_s']:,.0f} tok/s")
                pending, real_tokens, window_start = [], 0, time.time()

            evaluated, paused_from = None, time.time()  # evaluation and saving do not count as training throughput
            if tcfg.eval_every and (step % tcfg.eval_every == 0 or step == total_steps):
                started = time.time()
                evaluated = task.evaluate(state, step)
                log.write("valid", step, evaluated)
                shown = ", ".join(f"{k} {v:.4f}" for k, v in evaluated.items())
                say(f"step {step} validation: {shown} ({time.time() - started:.1f}s)")
            if evaluated is not None or (tcfg.save_every and step % tcfg.save_every == 0) or step == total_steps:
                save(evaluated)
                saved_step = step
            window_start += time.time() - paused_from
            if step < total_steps and stop.agreed(at_log_step):
                raise stopped()
    except KeyboardInterrupt:  # a second Ctrl-C, or Ctrl-C where no handler could be installed
        if not updating:
            raise stopped() from None
        kept = checkpoints.latest_step()
        resume = f"resumes from step {kept}" if kept is not None else "starts from step 0"
        raise UserError(
            f"interrupted during update {step + 1}, not saved; running the same command again {resume}"
        ) from None
    finally:
        stop.uninstall()
        progress.close()
        log.close()
    result = task.finish({"step": step, **last, "parameters": num_params}, checkpoints)
    checkpoints.close()
    return result


def main_thread() -> bool:
    """Signal handlers can only be set from the main thread (notebook kernels and some test runners use others)."""
    import threading

    return threading.current_thread() is threading.main_thread()
