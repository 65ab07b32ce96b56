"""Fine-tuning a pretrained BERT-architecture encoder for text classification, evaluating it, and predicting.

`train_classifier(config)`: pretrained weights (`interop/bert.py`) -> `EncoderClassifier` -> the engine's loop
(`train.loop.fit`: AdamW with linear warmup and linear decay, gradient clipping, optional bf16, the device mesh,
gradient accumulation, exact resume) -> dev accuracy every `eval_every` updates -> orbax checkpoints (the latest and
the best by dev accuracy) -> a final report of the best checkpoint (accuracy, macro-F1, confusion matrix
as JSON and PNG). The run directory holds config.json (resolved, `task: classification`), labels.json, model.json
(the encoder's `ModelConfig`), tokenizer/ (the pretrained model's own tokenizer files), checkpoints/, metrics.jsonl,
eval.json and confusion_matrix.png. `Classifier.load(run_dir)` predicts labels and probabilities from it.
"""

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jax_transformer.config import (
    ClassifyConfig,
    ClassifyTrainConfig,
    ModelConfig,
    TrainConfig,
    UserError,
    load_classify_config,
)
from jax_transformer.data import classification as cdata
from jax_transformer.interop import bert
from jax_transformer.model.transformer import EncoderClassifier
from jax_transformer.train import sharding
from jax_transformer.train.checkpoint import Checkpointer
from jax_transformer.train.loop import fit, say
from jax_transformer.train.optimizer import layer_lr_scales, learning_rate_schedule, make_optimizer
from jax_transformer.train.run_log import earlier_sessions_seconds, read_metrics
from jax_transformer.train.steps import Steps, reseed_dropout, symmetric_kl


def load_tokenizer(name_or_dir: str):
    """The pretrained model's own fast tokenizer (Hugging Face `transformers`)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_dir, use_fast=True)
    except Exception as e:
        raise UserError(f"could not load the tokenizer of {name_or_dir} ({e})") from None


def build_model(model_config: ModelConfig, num_labels: int, config: ClassifyConfig, seed: int = 0):
    return EncoderClassifier(
        model_config, num_labels, pooling=config.pooling, classifier_dropout=config.classifier_dropout,
        rngs=nnx.Rngs(params=seed, dropout=seed + 1),
    )  # fmt: skip


def optimizer_config(tcfg: ClassifyTrainConfig, total_steps: int) -> TrainConfig:
    """The engine's optimizer settings of a fine-tuning run: AdamW (decay on matrices only) with linear warmup over
    `warmup_ratio` of the updates to `learning_rate`, then linear decay to 0, after global-norm clipping."""
    return TrainConfig(
        steps=total_steps, schedule="linear", learning_rate=tcfg.learning_rate,
        warmup_steps=int(round(tcfg.warmup_ratio * total_steps)), adam_b1=tcfg.adam_b1, adam_b2=tcfg.adam_b2,
        adam_eps=tcfg.adam_eps, weight_decay=tcfg.weight_decay, clip_grad_norm=tcfg.clip_grad_norm,
    )  # fmt: skip


def class_probabilities(model: EncoderClassifier, batch: dict) -> jax.Array:
    """(batch, len) token ids -> (batch, num_labels) class probabilities."""
    return jax.nn.softmax(model(batch["ids"]), axis=-1)


def make_predict(model: EncoderClassifier):
    """(predict, params): a jitted `predict(params, batch)` -> class probabilities of the model in eval mode, and
    the model's parameters, for inference outside training."""
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return jax.jit(lambda params, batch: class_probabilities(nnx.merge(graphdef, params, rest), batch)), params


def classification_steps(config: ClassifyConfig, model: EncoderClassifier, total_steps: int, mesh=None) -> Steps:
    """The engine's steps for a classifier: cross-entropy (optionally R-Drop), the gradient averaged over examples,
    layer-wise learning rates / frozen token embeddings and the weight average (EMA) as options."""
    tcfg = config.train
    rdrop_alpha = tcfg.rdrop_alpha

    def loss_fn(model, batch, key):
        logits = model(batch["ids"])  # (batch, num_labels)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
        if rdrop_alpha > 0:  # R-Drop: a second pass under other dropout masks, pulled towards the first
            reseed_dropout(model, jax.random.fold_in(key, 1))
            other = model(batch["ids"])
            losses = 0.5 * (losses + optax.softmax_cross_entropy_with_integer_labels(other, batch["labels"]))
            losses = losses + rdrop_alpha * symmetric_kl(logits, other)
        weights = batch["weights"]  # 0 for padding rows
        loss = jnp.sum(losses * weights)
        correct = jnp.sum((jnp.argmax(logits, -1) == batch["labels"]) * weights)
        return loss, {"loss": loss, "correct": correct, "examples": jnp.sum(weights)}

    opt = optimizer_config(tcfg, total_steps)
    lr_scales = layer_lr_scales(nnx.state(model, nnx.Param), tcfg.layer_lr_decay, model.config.num_encoder_layers,
                                tcfg.freeze_token_embeddings)  # fmt: skip
    tx = make_optimizer(opt, model.config.d_model, lr_scales)
    return Steps(model, loss_fn, tx, learning_rate_schedule(opt, model.config.d_model), seed=config.seed,
                 denominator="examples", eval_fn=class_probabilities, mesh_config=config.mesh, mesh=mesh,
                 ema_decay=tcfg.ema_decay)  # fmt: skip


def predict_probs(predict, params, ids: list[np.ndarray], cfg, pad_id: int, batch_size: int, shard=None):
    """Class probabilities (n, num_labels) of token-id sequences, batched in the training bucket shapes.
    `predict(params, batch)` is a jitted `class_probabilities`; `shard` puts a batch on its mesh."""
    n = len(ids)
    out = None
    dummy = np.zeros(n, np.int32)
    for batch in cdata.make_batches(ids, dummy, batch_size, cfg.length_bucket_step, cfg.max_len, pad_id):
        inputs = {"ids": batch["ids"]}
        probs = np.asarray(predict(params, shard(inputs) if shard else inputs))[: len(batch["ids"])]
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


def checkpoint_weights(arrays: dict):
    """The weights a classification checkpoint keeps for use: the moving average when the run kept one."""
    return arrays.get("ema", arrays["params"])


class ClassificationTask:
    """What the engine's loop (`train.loop.fit`) needs of text classification: the pretrained encoder + head, the
    labelled batches, the loss, dev evaluation and the final report of the best checkpoint."""

    def __init__(self, config: ClassifyConfig):
        self.config = config
        self.started = time.time()

    def prepare(self) -> None:
        config = self.config
        cfg, tcfg = config.data, config.train
        self.model_dir = bert.resolve_pretrained(config.pretrained)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.train_path, self.valid_path = (os.path.join(cfg.path, f) for f in (cfg.train_file, cfg.valid_file))
        labels = cfg.label_list
        if not labels:  # resolved from the training file (read as a stream), then saved with the model
            labels = cdata.infer_labels(cdata.iter_rows(self.train_path, cfg, cfg.max_train_examples))
            if len(labels) < 2:
                raise UserError(
                    f"{self.train_path}: found {len(labels)} distinct label(s) in {cfg.label_field!r}; need >= 2"
                )
            config = dataclasses.replace(config, data=dataclasses.replace(cfg, labels=",".join(labels)))
            cfg = config.data
        self.config, self.labels = config, labels
        train_rows = cdata.open_rows(self.train_path, cfg, labels, cfg.max_train_examples)  # prepared once, streamed
        self.valid_set, _ = cdata.load_dataset(self.valid_path, cfg, labels, self.tokenizer, cfg.max_valid_examples)
        self.dtype = "bfloat16" if tcfg.bf16 else "float32"
        self.model_config = bert.bert_model_config(self.model_dir, dtype=self.dtype)
        if cfg.max_len > self.model_config.max_len:
            raise UserError(
                f"data.max_len={cfg.max_len} exceeds the pretrained model's {self.model_config.max_len} positions"
            )
        pad_id = self.model_config.pad_id
        layout = (tcfg.batch_size, cfg.length_bucket_step, cfg.max_len, pad_id)
        self.batches = cdata.ClassificationStream(train_rows, self.tokenizer, *layout, config.seed,
                                                  identity=train_rows.identity)  # fmt: skip
        updates_per_epoch = -(-len(self.batches) // tcfg.grad_accum_steps)
        self.total_steps = tcfg.steps or tcfg.epochs * updates_per_epoch
        stats = self.batches.stats()
        first = "" if stats["window"] == len(train_rows) else f" (the first window of {stats['window']:,} rows)"
        say(
            f"data: {len(train_rows):,} training examples streamed (tokenized as they come, truncated to "
            f"{cfg.max_len} tokens), {len(self.valid_set.ids):,} dev; labels {labels}; {len(self.batches):,} "
            f"batches/epoch, {stats['shapes']} shapes, {stats['padding_efficiency']:.1%} real tokens{first}"
        )

    def fixed_settings(self, config: ClassifyConfig) -> dict:
        """What a resumed run may not change."""
        return {"pretrained": config.pretrained, "pooling": config.pooling, "seed": config.seed,
                "classifier_dropout": config.classifier_dropout, "data": config.data.__dict__}  # fmt: skip

    def adjustable_settings(self, config: ClassifyConfig) -> dict:
        return {"train": config.train.__dict__}

    def save_run_files(self) -> None:
        run_dir, cfg = self.config.directory, self.config.data
        _write_json(os.path.join(run_dir, "labels.json"), {"labels": self.labels, "names": cfg.display_names})
        _write_json(os.path.join(run_dir, "model.json"), dataclasses.asdict(self.model_config))
        self.tokenizer.save_pretrained(os.path.join(run_dir, "tokenizer"))

    def build(self):
        config = self.config
        model = build_model(self.model_config, len(self.labels), config, config.seed)
        bert.load_bert_weights(model, self.model_dir)
        self.steps = classification_steps(config, model, self.total_steps)
        return self.steps, nnx.state(model, nnx.Param)

    def describe(self, num_params: int) -> str:
        tcfg = self.config.train
        return (f"model: {self.config.pretrained} + {self.config.pooling}-pooled head, {num_params:,} parameters, "
                f"{self.dtype}; {self.total_steps:,} updates of {tcfg.batch_size * tcfg.grad_accum_steps}"
                + (f", layer-wise lr decay {tcfg.layer_lr_decay}" if tcfg.layer_lr_decay < 1 else "")
                + (", token embeddings frozen" if tcfg.freeze_token_embeddings else "")
                + (f", evaluating a weight average (EMA {tcfg.ema_decay})" if tcfg.ema_decay else "")
                + (f", R-Drop alpha {tcfg.rdrop_alpha}" if tcfg.rdrop_alpha else ""))  # fmt: skip

    def real_tokens(self, batch) -> int:
        return int((batch["ids"] != self.model_config.pad_id).sum())

    def train_metrics(self, total: dict) -> dict:
        examples = max(total["examples"], 1.0)
        return {"loss": total["loss"] / examples, "accuracy": total["correct"] / examples}

    def _report(self, params) -> dict:
        cfg, tcfg = self.config.data, self.config.train
        probs = predict_probs(self.steps.eval_step, params, self.valid_set.ids, cfg, self.model_config.pad_id,
                              tcfg.batch_size, self.steps.shard_batch)  # fmt: skip
        return classification_report(self.valid_set.labels, probs.argmax(-1), len(self.labels))

    def evaluate(self, state: dict, step: int) -> dict:
        report = self._report(self.steps.eval_params(state))
        scores = {"accuracy": report["accuracy"], "f1_macro": report["f1_macro"]}
        if "ema" in state:  # what the weights themselves score, to see what the average adds
            scores["accuracy_without_ema"] = self._report(state["params"])["accuracy"]
        return scores

    def finish(self, result: dict, checkpoints: Checkpointer) -> dict:
        """The best checkpoint's dev report, as eval.json and a confusion-matrix plot."""
        config, run_dir = self.config, self.config.directory
        # this process's time, and that of the sessions before it when the run was resumed (from metrics.jsonl)
        train_seconds = earlier_sessions_seconds(read_metrics(run_dir)) + time.time() - self.started
        best_step = checkpoints.select("best", best_or_latest=True)  # the highest dev accuracy
        classifier = Classifier.load(run_dir, step=best_step)
        report = classifier.evaluate(self.valid_set)
        report.update(step=best_step, steps=self.total_steps, wall_seconds=round(train_seconds, 1),
                      dev_file=self.valid_path)  # fmt: skip
        if not sharding.is_main_process():
            return report
        _write_json(os.path.join(run_dir, "eval.json"), report)
        plot_path = os.path.join(run_dir, "confusion_matrix.png")
        try:
            from jax_transformer.viz import plot_confusion_matrix

            plot_confusion_matrix(np.asarray(report["confusion_matrix"]), classifier.names, plot_path,
                                  title=f"{config.name} dev (step {best_step})")  # fmt: skip
        except ImportError as e:  # matplotlib missing: the numbers are in eval.json
            say(f"no confusion-matrix plot ({e})")
        say(
            f"best checkpoint step {best_step}: dev accuracy {report['accuracy']:.4f}, macro-F1 "
            f"{report['f1_macro']:.4f}; confusion matrix {report['confusion_matrix']} ({plot_path}); "
            f"training wall time {train_seconds:.0f}s"
        )
        return report


def train_classifier(config: ClassifyConfig, *, crash_at_step: int | None = None) -> dict:
    """Fine-tune as `config` says in `config.directory` (or resume the run there); returns the best checkpoint's
    dev report."""
    return fit(ClassificationTask(config), crash_at_step=crash_at_step)

class Classifier:
    """A fine-tuned run loaded for inference: tokenizer, labels, and the model's best (or a given) checkpoint."""

    def __init__(self, config: ClassifyConfig, model: EncoderClassifier, tokenizer, labels, names):
        self.config, self.tokenizer, self.labels, self.names = config, tokenizer, labels, names
        self.pad_id = model.config.pad_id
        self.predict_batch, self.params = make_predict(model)

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
        step = checkpoints.select("best" if step is None else step, best_or_latest=True)
        params = nnx.state(model, nnx.Param)
        try:
            nnx.replace_by_pure_dict(params, checkpoint_weights(checkpoints.restore_arrays(step)))
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
        return predict_probs(self.predict_batch, self.params, ids, cfg, self.pad_id, self.config.train.batch_size)

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """(label name, its probability) per text."""
        probs = self.probabilities(texts)
        return [(self.names[i], float(p[i])) for p, i in zip(probs, probs.argmax(-1), strict=True)]

    def evaluate(self, dataset: cdata.Dataset) -> dict:
        probs = predict_probs(self.predict_batch, self.params, dataset.ids, self.config.data, self.pad_id,
                              self.config.train.batch_size)  # fmt: skip
        return {**classification_report(dataset.labels, probs.argmax(-1), len(self.labels)), "labels": self.names}
