"""The translation training loop: data -> tokenizer -> batches -> compiled steps -> logs, evaluation, checkpoints.

`train(config)` starts a run in `config.directory` or resumes the one there: same command, same result. A run
directory holds `config.json` (the resolved config), `spm.model`, `checkpoints/STEP/`, `metrics.jsonl` and
TensorBoard events. The same function trains on one device or on a mesh of many devices and hosts (`config.mesh`,
see `sharding.py`): every process runs it; process 0 alone writes config.json, the tokenizer and the logs.
"""

import dataclasses
import math
import os
import shutil
import sys
import time

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from jax_transformer.config import Config, UserError
from jax_transformer.data import pipeline as data_lib
from jax_transformer.decode.translator import Translator
from jax_transformer.metrics import bleu, lc_tok_bleu, rouge
from jax_transformer.model.transformer import Transformer
from jax_transformer.train import sharding
from jax_transformer.train.checkpoint import Checkpointer
from jax_transformer.train.run_log import RunLog
from jax_transformer.train.steps import Steps, sum_metrics


class TrainingInterrupted(Exception):
    """Raised by tests to simulate a crash (no final checkpoint) at a given step."""


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def prepare_run_dir(config: Config) -> list[str] | None:
    """Check that the run already in the run directory, if any, was made by a compatible config.
    Returns None for a new run, else the train/decode settings this resume changes (e.g. a higher train.steps to
    extend a finished run). The model and data sections and the seed must match."""
    path = os.path.join(config.directory, "config.json")
    if not os.path.exists(path):
        return None
    old = Config.load(path)
    clash = _diff({"model": old.model.__dict__, "data": old.data.__dict__, "seed": old.seed},
                  {"model": config.model.__dict__, "data": config.data.__dict__, "seed": config.seed})  # fmt: skip
    if clash:
        raise UserError(
            f"{config.directory} holds a run with a different config ({clash[0]}"
            f"{f' and {len(clash) - 1} more' if len(clash) > 1 else ''}); "
            "fix: pick another --config.name (or --config.run_dir), or delete that directory to start over"
        )
    return _diff({"train": old.train.__dict__, "decode": old.decode.__dict__},
                 {"train": config.train.__dict__, "decode": config.decode.__dict__})  # fmt: skip


def record_resume(config: Config, changes: list[str], step: int, log: RunLog) -> None:
    """A resume that changes settings keeps the run's history honest: the config it started with is kept as
    config.before_step{step}.json, config.json becomes the one now in force, and metrics.jsonl records the change.
    With train.schedule='cosine' a new train.steps also reshapes the schedule from here on (the others do not
    depend on it), so the result differs from a run started with the new value."""
    path = os.path.join(config.directory, "config.json")
    kept = os.path.join(config.directory, f"config.before_step{step}.json")
    if not os.path.exists(kept):
        shutil.copyfile(path, kept)
    tmp = path + ".tmp"
    config.save(tmp)
    os.replace(tmp, path)
    log.write("resume", step, {"changes": changes})
    reshaped = config.train.schedule == "cosine" and any(c.startswith("train.steps:") for c in changes)
    note = " (the cosine schedule now ends at the new train.steps)" if reshaped else ""
    _say(f"resume changes {', '.join(changes)}{note}; the previous config is kept as {os.path.basename(kept)}")


def _say(message: str) -> None:
    if sharding.is_main_process():
        tqdm.write(message, file=sys.stderr)


class TranslationData:
    """The run's tokenizer, training batches and evaluation sets."""

    def __init__(self, config: Config):
        cfg = config.data
        started = time.time()
        train_pairs = data_lib.load_split(cfg, cfg.train_split)
        self.tokenizer = data_lib.get_tokenizer(cfg, config.directory, train_pairs)
        encoded = data_lib.encode_examples(train_pairs, self.tokenizer, cfg.max_len, cfg.max_source_len)
        examples, dropped = encoded.examples, encoded.dropped
        self.batches = data_lib.BatchIterator(
            examples,
            cfg.max_tokens,
            cfg.length_bucket_step,
            seed=config.seed,
            min_bucket_batches=cfg.min_bucket_batches,
        )
        valid_pairs = data_lib.load_split(cfg, cfg.valid_split)
        valid = data_lib.encode_examples(valid_pairs, self.tokenizer, None, cfg.max_source_len)
        self.valid_examples = valid.examples
        self.valid_references = [target for _, target in valid_pairs]
        stats = self.batches.stats()
        truncation = ""
        if cfg.max_source_len:
            truncation = (
                f"; sources cut to data.max_source_len={cfg.max_source_len} tokens: {encoded.truncated:,} training "
                f"({encoded.truncated / max(len(examples), 1):.1%}), {valid.truncated:,} validation"
            )
        _say(
            f"data: {len(train_pairs):,} training pairs ({dropped:,} longer than data.max_len={cfg.max_len} dropped), "
            f"{len(valid_pairs):,} validation pairs{truncation}; vocabulary {self.tokenizer.vocab_size:,}; "
            f"{stats['batches_per_epoch']:,} batches/epoch in {stats['shapes']} shapes, "
            f"{stats['padding_efficiency']:.1%} real tokens; prepared in {time.time() - started:.1f}s"
        )
        self.dropped, self.truncated = dropped, encoded.truncated


def resolve_config(config: Config, tokenizer) -> Config:
    """The model's vocabulary and padding id come from the tokenizer."""
    target_vocab_size = 0 if config.model.share_embeddings else tokenizer.vocab_size
    model = dataclasses.replace(
        config.model, vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, target_vocab_size=target_vocab_size
    )
    return dataclasses.replace(config, model=model)


def _eval_batches(examples, max_tokens: int, config: Config):
    """Evaluation batches in a few shapes (each shape compiles once), with the rows' original indices."""
    cfg = config.data
    return data_lib.eval_batches(examples, max_tokens, cfg.length_bucket_step, cfg.min_bucket_batches)


def evaluate_loss(steps: Steps, params, examples, config: Config) -> dict:
    batches = _eval_batches(examples, config.data.max_tokens, config)
    sums = [steps.eval_step(params, steps.shard_batch(batch)) for batch, _ in batches]
    total = sum_metrics(sums)
    tokens = max(total["tokens"], 1.0)
    return {
        "loss": total["loss"] / tokens,
        "nll": total["nll"] / tokens,
        "ppl": math.exp(min(total["nll"] / tokens, 50)),
    }


def train(config: Config, *, crash_at_step: int | None = None) -> dict:
    """Train (or resume) the run described by `config`; returns the final metrics."""
    sharding.initialize_distributed(config.mesh)  # several processes: connect them before anything uses a device
    main = sharding.is_main_process()
    os.makedirs(config.directory, exist_ok=True)
    # Process 0 goes first: it prepares the data, trains the tokenizer and writes config.json; the others then read.
    if not main:
        sharding.barrier("run_dir")
    data = TranslationData(config)  # reuses the run's spm.model when there is one: nothing is overwritten
    config = resolve_config(config, data.tokenizer)
    changes = prepare_run_dir(config)  # refuses a run directory made by an incompatible config
    if changes is None and main:
        config.save(os.path.join(config.directory, "config.json"))
    if main:
        sharding.barrier("run_dir")
    tcfg = config.train

    model = Transformer(config.model, rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    steps = Steps(config, model)
    state = steps.init_state(nnx.state(model, nnx.Param))
    # greedy validation BLEU with the current parameters, compiled over the training mesh
    translator = Translator(config, model, data.tokenizer, steps.mesh, steps.params_sharding)
    del model
    checkpoints = Checkpointer(os.path.join(config.directory, "checkpoints"), tcfg.keep_checkpoints, tcfg.keep_best)
    start = checkpoints.latest_step()
    if start is not None:  # onto this run's mesh, whatever mesh wrote it
        state, meta = checkpoints.restore(start, state)
        data.batches.restore(meta["data"])
        _say(f"resuming {config.directory} from step {start}")
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
    _say(f"model: {num_params:,} parameters; training to step {tcfg.steps:,}; run directory {config.directory}")
    fsdp = " with FSDP" if config.mesh.fsdp else ""
    _say(f"mesh: {dict(steps.mesh.shape)}{fsdp} over {steps.mesh.size} devices in {jax.process_count()} process(es)")

    log = RunLog(config.directory, enabled=main)
    step = int(state["step"])
    if main and changes:
        if start is None:  # nothing trained yet: the new settings simply replace the old ones
            config.save(os.path.join(config.directory, "config.json"))
        else:
            record_resume(config, changes, step, log)
    batch_iter = iter(data.batches)
    pending, real_tokens, window_start = [], 0, time.time()

    def next_batch():
        """The next batch on the mesh; counts its real (non-pad) source + target tokens for tokens/s."""
        nonlocal real_tokens
        batch = next(batch_iter)
        pad = config.model.pad_id
        real_tokens += int((batch["src"] != pad).sum() + (batch["tgt_out"] != pad).sum())
        return steps.shard_batch(batch)

    last = {}
    progress = tqdm(total=tcfg.steps, initial=step, unit="step", dynamic_ncols=True, disable=None if main else True)

    def save(evaluated=None):
        ranked = evaluated and tcfg.keep_best and tcfg.best_metric in evaluated  # orbax ranks by this to keep the best
        meta = {"data": data.batches.state(), "step": step, "metrics": evaluated or {}}
        checkpoints.save(step, state, meta, metrics={tcfg.best_metric: evaluated[tcfg.best_metric]} if ranked else None)

    try:
        while step < tcfg.steps:
            if tcfg.grad_accum_steps == 1:
                state, metrics = steps.train_step(state, next_batch())
            else:
                acc = steps.zero_accumulator(state["params"])
                for micro in range(tcfg.grad_accum_steps):
                    acc = steps.accumulate(acc, state["params"], next_batch(), state["step"], micro)
                state, metrics = steps.apply_accumulated(state, acc)
            step += 1
            pending.append(metrics)
            progress.update(1)
            if crash_at_step is not None and step == crash_at_step:
                raise TrainingInterrupted(step)

            if step % tcfg.log_every == 0 or step == tcfg.steps:
                bad_step = int(state["nonfinite_step"])
                if bad_step >= 0:
                    raise UserError(
                        f"non-finite loss or gradient at step {bad_step} (that update was skipped, training stopped); "
                        "fix: lower train.learning_rate, set train.clip_grad_norm, or use model.dtype=float32"
                    )
                total = sum_metrics(pending)
                elapsed = time.time() - window_start
                tokens = max(total["tokens"], 1.0)
                last = {
                    "loss": total["loss"] / tokens, "nll": total["nll"] / tokens,
                    "lr": float(metrics["lr"]), "grad_norm": float(metrics["grad_norm"]),
                    "tokens_per_s": real_tokens / max(elapsed, 1e-9), "epoch": data.batches.epoch,
                }  # fmt: skip
                log.write("train", step, last)
                progress.set_postfix(
                    loss=f"{last['loss']:.3f}", lr=f"{last['lr']:.2e}", tok_s=f"{last['tokens_per_s']:.0f}"
                )
                if progress.disable:  # no terminal: one line per log step instead of a bar
                    _say(f"step {step}: loss {last['loss']:.4f} lr {last['lr']:.3e} {last['tokens_per_s']:,.0f} tok/s")
                pending, real_tokens, window_start = [], 0, time.time()

            evaluated = None
            if tcfg.eval_every and (step % tcfg.eval_every == 0 or step == tcfg.steps):
                evaluated = evaluate(config, steps, translator, state["params"], data, step, log)
            if evaluated is not None or step % tcfg.save_every == 0 or step == tcfg.steps:
                save(evaluated)
    except KeyboardInterrupt:
        progress.close()
        save()
        raise UserError(f"interrupted at step {step}: checkpoint saved; run the same command again to resume") from None
    finally:
        progress.close()
        log.close()
    checkpoints.close()
    return {"step": step, **last, "parameters": num_params}


def evaluate(
    config: Config, steps: Steps, translator: Translator, params, data: TranslationData, step: int, log: RunLog
) -> dict:
    """Validation loss (every eval) and greedy BLEU (every `bleu_every` steps; 0: every eval); for summaries
    (decode.metric 'rouge') greedy ROUGE-1/2/L F1 instead of BLEU, logged whatever train.best_metric is."""
    tcfg = config.train
    started = time.time()
    result = evaluate_loss(steps, params, data.valid_examples, config)
    scheduled = tcfg.bleu_every == 0 or step % tcfg.bleu_every == 0 or step == tcfg.steps
    summaries = config.decode.metric == "rouge"
    if (tcfg.best_metric == "bleu" or summaries) and scheduled:
        n = tcfg.bleu_max_sentences or len(data.valid_examples)
        hypotheses = translator.translate_examples(data.valid_examples[:n], beam_size=1, params=params)
    if summaries and scheduled:
        result.update(rouge(hypotheses, data.valid_references[:n]))
    elif tcfg.best_metric == "bleu" and scheduled:
        result["bleu"] = bleu(hypotheses, data.valid_references[:n])[0].score
        # The Multi30k literature's recipe (lowercased, Moses-tokenized) on the same output, for time-to-quality curves.
        result["lc_tok_bleu"] = lc_tok_bleu(hypotheses, data.valid_references[:n], config.data.tgt_lang)[0].score
    log.write("valid", step, result)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in result.items())
    _say(f"step {step} validation: {shown} ({time.time() - started:.1f}s)")
    return result
