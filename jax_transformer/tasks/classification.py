"""Fine-tuning a pretrained BERT-architecture encoder for text classification, evaluating it, and predicting.

`train_classifier(config)`: pretrained weights (`bert.py`) -> `EncoderClassifier` -> AdamW with linear warmup and
linear decay, gradient clipping, optional bf16 -> dev accuracy every `eval_every` updates -> orbax checkpoints (the
latest and the best by dev accuracy) -> a final report of the best checkpoint (accuracy, macro-F1, confusion matrix
as JSON and PNG). The run directory holds config.json (resolved, `task: classification`), labels.json, model.json
(the encoder's `ModelConfig`), tokenizer/ (the pretrained model's own tokenizer files), checkpoints/, metrics.jsonl,
eval.json and confusion_matrix.png. `Classifier.load(run_dir)` predicts labels and probabilities from it.
"""

import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from jax_transformer.config import ModelConfig, UserError
from jax_transformer.data import classification as cdata
from jax_transformer.interop import bert
from jax_transformer.model.transformer import EncoderClassifier
from jax_transformer.tasks.classification_config import ClassifyConfig, ClassifyTrainConfig, load_classify_config
from jax_transformer.train.checkpoint import Checkpointer
from jax_transformer.train.run_log import RunLog
from jax_transformer.train.sharding import path_name
from jax_transformer.train.steps import _per_module_key


def _say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def load_tokenizer(name_or_dir: str):
    """The pretrained model's own fast tokenizer (Hugging Face `transformers`)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_dir, use_fast=True)
    except Exception as e:
        raise UserError(f"could not load the tokenizer of {name_or_dir} ({e})") from None


def make_optimizer(
    cfg: ClassifyTrainConfig, total_steps: int, lr_scales=None
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW (decay on matrices only) with linear warmup to `learning_rate` then linear decay to 0, after clipping.

    `lr_scales` (a tree like the parameters, e.g. from `layer_lr_scales`) multiplies each parameter's update, i.e. its
    learning rate (the decoupled weight decay included, as in ELECTRA's layer-wise decay).
    """
    warmup = int(round(cfg.warmup_ratio * total_steps))
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.learning_rate, max(warmup, 1)),
         optax.linear_schedule(cfg.learning_rate, 0.0, max(total_steps - warmup, 1))],
        [max(warmup, 1)],
    )  # fmt: skip
    decay_matrices = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    chain = [optax.adamw(
        schedule, cfg.adam_b1, cfg.adam_b2, cfg.adam_eps, weight_decay=cfg.weight_decay, mask=decay_matrices
    )]  # fmt: skip
    if cfg.clip_grad_norm > 0:
        chain.insert(0, optax.clip_by_global_norm(cfg.clip_grad_norm))
    if lr_scales is not None:
        chain.append(optax.GradientTransformation(
            lambda params: optax.EmptyState(),
            lambda updates, state, params=None: (jax.tree.map(lambda u, c: u * c, updates, lr_scales), state),
        ))  # fmt: skip
    return optax.chain(*chain), schedule


def layer_lr_scales(params, decay: float, num_layers: int, freeze_token_embeddings: bool = False):
    """Learning-rate multipliers by depth: the head (and anything above the encoder layers) 1, encoder layer i of
    `num_layers` (0 = lowest) decay^(num_layers - i), the embeddings (and their LayerNorm) decay^(num_layers + 1);
    with `freeze_token_embeddings` the token (word) embedding table 0. None when every parameter learns at the full
    rate."""
    if decay >= 1 and not freeze_token_embeddings:
        return None

    def scale(path, _):
        names = path_name(path).split("/")
        if freeze_token_embeddings and names[0] == "token_embedding":
            return 0.0
        if names[:2] == ["encoder", "layers"]:
            depth = int(names[2]) + 1
        elif "embedding" in names[0] or (names[0] == "encoder" and "embedding" in names[1]):
            depth = 0  # token / token-type / position embeddings, embedding LayerNorm
        else:
            depth = num_layers + 1
        return decay ** (num_layers + 1 - depth)

    return jax.tree_util.tree_map_with_path(scale, params)


def build_model(model_config: ModelConfig, num_labels: int, config: ClassifyConfig, seed: int = 0):
    return EncoderClassifier(
        model_config, num_labels, pooling=config.pooling, classifier_dropout=config.classifier_dropout,
        rngs=nnx.Rngs(params=seed, dropout=seed + 1),
    )  # fmt: skip


class ClassifierSteps:
    """Jitted train / predict steps over (params, optimizer state) pytrees; one compile per batch shape."""

    def __init__(self, model: EncoderClassifier, tx=None, schedule=None, seed: int = 0, ema_decay: float = 0.0,
                 rdrop_alpha: float = 0.0):  # fmt: skip
        self.tx, self.schedule, self.ema_decay, self.rdrop_alpha = tx, schedule, ema_decay, rdrop_alpha
        self.base_key = jax.random.key(seed)
        model.train()
        self.train_graphdef, self.params, self.rng_state = nnx.split(model, nnx.Param, ...)
        model.eval()
        self.eval_graphdef, _, _ = nnx.split(model, nnx.Param, ...)
        self.train_step = jax.jit(self._train_step, donate_argnums=0)
        self.predict_step = jax.jit(self._predict)

    def init_state(self) -> dict:
        state = {"params": self.params, "opt_state": self.tx.init(self.params), "step": jnp.zeros((), jnp.int32)}
        if self.ema_decay > 0:
            state["ema"] = jax.tree.map(jnp.copy, self.params)
        return state

    @staticmethod
    def eval_params(state: dict):
        """The weights to evaluate and keep: the moving average when there is one, else the trained weights."""
        return state.get("ema", state["params"])

    def _train_step(self, state, batch):
        key = jax.random.fold_in(self.base_key, state["step"])

        def loss_fn(params):
            model = nnx.merge(self.train_graphdef, params, jax.tree.map(jnp.asarray, self.rng_state))
            nnx.reseed(model, dropout=key, policy=_per_module_key)
            logits = model(batch["ids"])  # (batch, num_labels)
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
            if self.rdrop_alpha > 0:  # R-Drop: a second pass under other dropout masks, pulled towards the first
                nnx.reseed(model, dropout=jax.random.fold_in(key, 1), policy=_per_module_key)
                other = model(batch["ids"])
                losses = 0.5 * (losses + optax.softmax_cross_entropy_with_integer_labels(other, batch["labels"]))
                logp, logq = jax.nn.log_softmax(logits), jax.nn.log_softmax(other)
                kl = optax.losses.kl_divergence_with_log_targets  # (log q, log p) -> KL(p || q)
                losses = losses + self.rdrop_alpha * 0.5 * (kl(logq, logp) + kl(logp, logq))
            weights = batch["weights"]
            loss = jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)
            correct = jnp.sum((jnp.argmax(logits, -1) == batch["labels"]) * weights)
            return loss, correct

        (loss, correct), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        new_state = {
            "params": optax.apply_updates(state["params"], updates),
            "opt_state": opt_state,
            "step": state["step"] + 1,
        }
        if "ema" in state:  # the decay ramps up over the first updates (as tf.train.ExponentialMovingAverage's)
            step = state["step"].astype(jnp.float32)
            decay = jnp.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))
            new_state["ema"] = jax.tree.map(lambda e, p: e + (1.0 - decay) * (p - e), state["ema"], new_state["params"])
        metrics = {"loss": loss, "correct": correct, "examples": jnp.sum(batch["weights"]),
                   "grad_norm": optax.global_norm(grads), "lr": self.schedule(state["step"])}  # fmt: skip
        return new_state, metrics

    def _predict(self, params, ids):  # (batch, len) -> class probabilities (batch, num_labels)
        model = nnx.merge(self.eval_graphdef, params, jax.tree.map(jnp.asarray, self.rng_state))
        return jax.nn.softmax(model(ids), axis=-1)


def predict_probs(steps: ClassifierSteps, params, ids: list[np.ndarray], cfg, pad_id: int, batch_size: int):
    """Class probabilities (n, num_labels) of token-id sequences, batched in the training bucket shapes."""
    n = len(ids)
    out = None
    dummy = np.zeros(n, np.int32)
    for batch in cdata.make_batches(ids, dummy, batch_size, cfg.length_bucket_step, cfg.max_len, pad_id):
        probs = np.asarray(steps.predict_step(params, batch["ids"]))
        if out is None:
            out = np.zeros((n, probs.shape[1]), np.float32)
        real = batch["index"] >= 0
        out[batch["index"][real]] = probs[real]
    return out


def classification_report(true: np.ndarray, pred: np.ndarray, num_labels: int) -> dict:
    """Accuracy, macro-F1, per-class F1 and the confusion matrix (rows: true class, columns: predicted)."""
    matrix = np.zeros((num_labels, num_labels), np.int64)
    np.add.at(matrix, (true, pred), 1)
    tp = np.diag(matrix).astype(np.float64)
    precision = tp / np.maximum(matrix.sum(axis=0), 1)
    recall = tp / np.maximum(matrix.sum(axis=1), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return {
        "accuracy": float(tp.sum() / max(matrix.sum(), 1)),
        "f1_macro": float(f1.mean()),
        "f1_per_class": [float(x) for x in f1],
        "confusion_matrix": matrix.tolist(),
        "examples": int(matrix.sum()),
    }


def _write_json(path: str, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def best_checkpoint_step(checkpoints: Checkpointer) -> int | None:
    """The kept checkpoint with the highest dev accuracy (the latest if none was evaluated)."""
    best = checkpoints.best_step()
    return best if best is not None else checkpoints.latest_step()


def train_classifier(config: ClassifyConfig) -> dict:
    """Fine-tune as `config` says in `config.directory`; returns the best checkpoint's dev report."""
    started = time.time()
    cfg, tcfg = config.data, config.train
    run_dir = config.directory
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
        raise UserError(f"{run_dir} already holds a trained run; fix: pick another --config.name or delete it")
    model_dir = bert.resolve_pretrained(config.pretrained)
    tokenizer = load_tokenizer(model_dir)
    train_path, valid_path = (os.path.join(cfg.path, f) for f in (cfg.train_file, cfg.valid_file))
    labels = cfg.label_list
    if not labels:  # resolved from the training file, then saved with the model
        labels = cdata.infer_labels(cdata.read_rows(train_path, cfg, cfg.max_train_examples))
        if len(labels) < 2:
            raise UserError(f"{train_path}: found {len(labels)} distinct label(s) in {cfg.label_field!r}; need >= 2")
        config = dataclasses.replace(config, data=dataclasses.replace(cfg, labels=",".join(labels)))
        cfg = config.data
    train_set, train_truncated = cdata.load_dataset(train_path, cfg, labels, tokenizer, cfg.max_train_examples)
    valid_set, _ = cdata.load_dataset(valid_path, cfg, labels, tokenizer, cfg.max_valid_examples)
    dtype = "bfloat16" if tcfg.bf16 else "float32"
    model_config = bert.bert_model_config(model_dir, dtype=dtype)
    if cfg.max_len > model_config.max_len:
        raise UserError(f"data.max_len={cfg.max_len} exceeds the pretrained model's {model_config.max_len} positions")
    pad_id = model_config.pad_id

    os.makedirs(run_dir, exist_ok=True)
    config.save(os.path.join(run_dir, "config.json"))
    _write_json(os.path.join(run_dir, "labels.json"), {"labels": labels, "names": cfg.display_names})
    _write_json(os.path.join(run_dir, "model.json"), dataclasses.asdict(model_config))
    tokenizer.save_pretrained(os.path.join(run_dir, "tokenizer"))

    model = build_model(model_config, len(labels), config, config.seed)
    bert.load_bert_weights(model, model_dir)
    rng = np.random.default_rng(config.seed)
    epoch_batches = lambda: cdata.make_batches(
        train_set.ids, train_set.labels, tcfg.batch_size, cfg.length_bucket_step, cfg.max_len, pad_id, rng
    )
    batches = epoch_batches()
    total_steps = tcfg.steps or tcfg.epochs * len(batches)
    stats = cdata.padding_stats(batches, pad_id)
    _say(
        f"data: {len(train_set.ids):,} training examples ({train_truncated:,} truncated to {cfg.max_len} tokens), "
        f"{len(valid_set.ids):,} dev; labels {labels}; {stats['batches']:,} batches/epoch in {stats['shapes']} shapes, "
        f"{stats['real_tokens']:.1%} real tokens"
    )
    lr_scales = layer_lr_scales(nnx.state(model, nnx.Param), tcfg.layer_lr_decay, model_config.num_encoder_layers,
                                tcfg.freeze_token_embeddings)
    tx, schedule = make_optimizer(tcfg, total_steps, lr_scales)
    steps = ClassifierSteps(model, tx, schedule, config.seed, tcfg.ema_decay, tcfg.rdrop_alpha)
    state = steps.init_state()
    del model
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
    _say(f"model: {config.pretrained} + {config.pooling}-pooled head, {num_params:,} parameters, {dtype}; "
         f"{total_steps:,} updates of {tcfg.batch_size}"
         + (f", layer-wise lr decay {tcfg.layer_lr_decay}" if tcfg.layer_lr_decay < 1 else "")
         + (", token embeddings frozen" if tcfg.freeze_token_embeddings else "")
         + (f", evaluating a weight average (EMA {tcfg.ema_decay})" if tcfg.ema_decay else "")
         + (f", R-Drop alpha {tcfg.rdrop_alpha}" if tcfg.rdrop_alpha else "")
         + f"; run directory {run_dir}")  # fmt: skip

    checkpoints = Checkpointer(ckpt_dir, keep=1, keep_best=True)
    log = RunLog(run_dir)
    progress = tqdm(total=total_steps, unit="step", dynamic_ncols=True, file=sys.stderr)
    step, epoch, pending, best = 0, 0, [], None

    def evaluate(params) -> dict:
        probs = predict_probs(steps, params, valid_set.ids, cfg, pad_id, tcfg.batch_size)
        return classification_report(valid_set.labels, probs.argmax(-1), len(labels))

    try:
        while step < total_steps:
            if not batches:
                batches, epoch = epoch_batches(), epoch + 1
            batch = batches.pop()
            state, metrics = steps.train_step(state, {k: batch[k] for k in ("ids", "labels", "weights")})
            step += 1
            pending.append(metrics)
            progress.update(1)
            if step % tcfg.log_every == 0 or step == total_steps:
                sums = jax.device_get(pending)
                examples = max(sum(float(m["examples"]) for m in sums), 1.0)
                last = {
                    "loss": sum(float(m["loss"]) * float(m["examples"]) for m in sums) / examples,
                    "accuracy": sum(float(m["correct"]) for m in sums) / examples,
                    "lr": float(sums[-1]["lr"]), "grad_norm": float(sums[-1]["grad_norm"]), "epoch": epoch,
                }  # fmt: skip
                if not np.isfinite(last["loss"]):
                    raise UserError(f"non-finite loss at step {step}; fix: lower train.learning_rate or turn off bf16")
                log.write("train", step, last)
                progress.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['accuracy']:.3f}", lr=f"{last['lr']:.1e}")
                if progress.disable:
                    _say(f"step {step}: loss {last['loss']:.4f} train acc {last['accuracy']:.3f} lr {last['lr']:.2e}")
                pending = []
            if step % tcfg.eval_every == 0 or step == total_steps:
                kept = {"params": steps.eval_params(state)}
                report = evaluate(kept["params"])
                scores = {"accuracy": report["accuracy"], "f1_macro": report["f1_macro"]}
                if "ema" in state:  # what the weights themselves score, to see what the average adds
                    scores["accuracy_without_ema"] = evaluate(state["params"])["accuracy"]
                log.write("valid", step, scores)
                best = scores["accuracy"] if best is None else max(best, scores["accuracy"])
                _say(f"step {step} dev: accuracy {scores['accuracy']:.4f}, macro-F1 {scores['f1_macro']:.4f} "
                     f"(best {best:.4f}); {time.time() - started:.0f}s")  # fmt: skip
                checkpoints.save(step, kept, {"step": step, "metrics": scores}, metrics=scores)
    finally:
        progress.close()
        log.close()
    train_seconds = time.time() - started
    best_step = best_checkpoint_step(checkpoints)
    checkpoints.close()
    classifier = Classifier.load(run_dir, step=best_step)
    report = classifier.evaluate(valid_set)
    report.update(step=best_step, steps=total_steps, wall_seconds=round(train_seconds, 1), dev_file=valid_path)
    _write_json(os.path.join(run_dir, "eval.json"), report)
    plot_path = os.path.join(run_dir, "confusion_matrix.png")
    try:
        from jax_transformer.viz import plot_confusion_matrix

        plot_confusion_matrix(np.asarray(report["confusion_matrix"]), classifier.names, plot_path,
                              title=f"{config.name} dev (step {best_step})")  # fmt: skip
    except ImportError as e:  # matplotlib missing: the numbers are in eval.json
        _say(f"no confusion-matrix plot ({e})")
    _say(
        f"best checkpoint step {best_step}: dev accuracy {report['accuracy']:.4f}, macro-F1 {report['f1_macro']:.4f}; "
        f"confusion matrix {report['confusion_matrix']} ({plot_path}); training wall time {train_seconds:.0f}s"
    )
    return report


class Classifier:
    """A fine-tuned run loaded for inference: tokenizer, labels, and the model's best (or a given) checkpoint."""

    def __init__(self, config: ClassifyConfig, model: EncoderClassifier, tokenizer, labels, names):
        self.config, self.tokenizer, self.labels, self.names = config, tokenizer, labels, names
        self.pad_id = model.config.pad_id
        self.steps = ClassifierSteps(model)

    @classmethod
    def load(cls, run_dir: str, step: int | None = None) -> "Classifier":
        config = load_classify_config(run_dir)
        with open(os.path.join(run_dir, "labels.json"), encoding="utf-8") as f:
            labels = json.load(f)
        with open(os.path.join(run_dir, "model.json"), encoding="utf-8") as f:
            model_config = ModelConfig(**json.load(f))
        tokenizer = load_tokenizer(os.path.join(run_dir, "tokenizer"))
        model = build_model(model_config, len(labels["labels"]), config)
        checkpoints = Checkpointer(os.path.join(run_dir, "checkpoints"), keep=1, read_only=True)
        step = step if step is not None else best_checkpoint_step(checkpoints)
        if step is None:
            raise UserError(f"{run_dir} has no checkpoint yet")
        params = nnx.state(model, nnx.Param)
        try:
            nnx.replace_by_pure_dict(params, checkpoints.restore_arrays(step)["params"])
        except (KeyError, ValueError, TypeError) as e:
            raise UserError(f"checkpoint {step} of {run_dir} does not fit its model.json ({e})") from None
        checkpoints.close()
        nnx.update(model, params)
        classifier = cls(config, model, tokenizer, labels["labels"], labels["names"])
        classifier.step = step
        return classifier

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """(n, num_labels) class probabilities of raw texts."""
        ids, _ = cdata.encode_texts(self.tokenizer, [t.strip() for t in texts], self.config.data.max_len)
        cfg = self.config.data
        return predict_probs(self.steps, self.steps.params, ids, cfg, self.pad_id, self.config.train.batch_size)

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """(label name, its probability) per text."""
        probs = self.probabilities(texts)
        return [(self.names[i], float(p[i])) for p, i in zip(probs, probs.argmax(-1), strict=True)]

    def evaluate(self, dataset: cdata.Dataset) -> dict:
        probs = predict_probs(self.steps, self.steps.params, dataset.ids, self.config.data, self.pad_id,
                              self.config.train.batch_size)  # fmt: skip
        return {**classification_report(dataset.labels, probs.argmax(-1), len(self.labels)), "labels": self.names}
