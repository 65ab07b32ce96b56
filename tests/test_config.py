"""Configuration: validation with clear messages, dict/JSON loading, command-line overrides, recipe files."""

import dataclasses
import json
import pathlib

import pytest

from jax_transformer.config import (
    PRESETS,
    Config,
    ConfigError,
    DataConfig,
    DecodeConfig,
    ModelConfig,
    TrainConfig,
    UserError,
    apply_overrides,
    load_any_config,
    load_config_file,
    model_preset,
)

# --- ModelConfig validation ------------------------------------------------------------------------------------------


def test_defaults_are_the_paper_base_model():
    config = ModelConfig()
    assert (config.d_model, config.num_heads, config.d_ff, config.num_encoder_layers, config.dropout) == (
        512, 8, 2048, 6, 0.1,
    )  # fmt: skip
    assert config.tgt_vocab_size == config.vocab_size and config.head_dim == 64


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(d_model=512, num_heads=6), "model.d_model=512 must be divisible by model.num_heads=6"),
        (dict(d_model=0), "model.d_model must be positive, got 0"),
        (dict(num_heads=0), "model.num_heads must be positive, got 0"),  # not a ZeroDivisionError
        (dict(num_heads=-2), "model.num_heads must be positive"),
        (dict(d_ff=-1), "model.d_ff must be positive, got -1"),
        (dict(vocab_size=0), "model.vocab_size must be positive"),
        (dict(num_encoder_layers=0), "model.num_encoder_layers must be positive"),
        (dict(num_decoder_layers=-1), "model.num_decoder_layers must be positive"),
        (dict(max_len=0), "model.max_len must be positive"),
        (dict(target_vocab_size=-5, share_embeddings=False), "model.target_vocab_size must be >= 0"),
        (dict(activation="swish"), "model.activation='swish' is not one of 'relu', 'gelu', 'gelu_tanh'"),
        (dict(norm_position="middle"), "model.norm_position='middle'"),
        (dict(positional="rotary"), "model.positional='rotary'"),
        (dict(sinusoidal_layout="shuffled"), "model.sinusoidal_layout='shuffled'"),
        (dict(dtype="float64"), "model.dtype='float64'"),
        (dict(param_dtype="float16"), "model.param_dtype='float16'"),
        (dict(dropout=1.0), r"model.dropout must be in \[0, 1\), got 1.0"),
        (dict(attention_dropout=-0.1), "model.attention_dropout must be in"),
        (dict(layer_norm_eps=0.0), "model.layer_norm_eps must be positive"),
        (dict(vocab_size=100, target_vocab_size=200), "model.share_embeddings needs one vocabulary"),
        (dict(vocab_size=100, pad_id=100), "model.pad_id=100 is outside the vocabulary"),
    ],
)
def test_model_config_validation(overrides, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**overrides)


def test_valid_model_configs():
    config = ModelConfig(vocab_size=100, target_vocab_size=120, share_embeddings=False)
    assert config.tgt_vocab_size == 120
    assert ModelConfig(vocab_size=100, target_vocab_size=100).tgt_vocab_size == 100  # same size is fine when shared
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.d_model = 8  # frozen: a model's config cannot drift after the model is built


def test_config_error_is_a_user_error():
    assert issubclass(ConfigError, UserError)


# Table 3 of the paper (base and big), Wu et al. 2021's Transformer-tiny, and our own small and test sizes:
# (d_model, heads, d_ff, encoder layers, decoder layers, dropout)
PRESET_SIZES = {
    "base": (512, 8, 2048, 6, 6, 0.1), "big": (1024, 16, 4096, 6, 6, 0.3), "tiny": (128, 4, 256, 4, 4, 0.3),
    "small": (256, 4, 1024, 3, 3, 0.1), "test": (32, 4, 64, 2, 2, 0.0),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets(name):
    config = model_preset(name, vocab_size=1000, num_heads=2)
    sizes = (config.d_model, PRESETS[name]["num_heads"], config.d_ff, config.num_encoder_layers,
             config.num_decoder_layers, config.dropout)  # fmt: skip
    assert sizes == PRESET_SIZES[name]
    assert config.vocab_size == 1000 and config.num_heads == 2  # overrides win
    assert config.norm_position == "post" and config.positional == "sinusoidal"  # the paper's defaults


def test_paper_presets_and_bad_preset():
    base, big = model_preset("base"), model_preset("big")
    assert (base.d_model, base.num_heads, base.d_ff, base.dropout) == (512, 8, 2048, 0.1)
    assert (big.d_model, big.num_heads, big.d_ff, big.dropout) == (1024, 16, 4096, 0.3)
    with pytest.raises(ConfigError, match="preset='huge' is not one of"):
        model_preset("huge")
    with pytest.raises(ConfigError, match="divisible"):
        model_preset("test", num_heads=5)  # overrides are validated too


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TrainConfig(label_smoothing=1.0), "train.label_smoothing must be in"),
        (lambda: TrainConfig(schedule="noam", warmup_steps=0), "train.schedule='noam' needs train.warmup_steps > 0"),
        (lambda: TrainConfig(schedule="exponential"), "train.schedule='exponential'"),
        (lambda: TrainConfig(steps=0), "train.steps must be positive"),
        (lambda: DataConfig(max_tokens=64, max_len=128), "data.max_tokens=64 must be >= data.max_len=128"),
        (lambda: DataConfig(format="tfds"), "data.format='tfds' needs data.tfds_name"),
        (lambda: DataConfig(vocab_size=8), "data.vocab_size must be >= 16"),
        (lambda: DecodeConfig(beam_size=0), "decode.beam_size must be positive"),
        (lambda: Config(name=""), "name must not be empty"),
    ],
)
def test_other_sections_validate(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


# --- Config.from_dict ----------------------------------------------------------------------------------------------


def test_from_dict_builds_nested_config():
    config = Config.from_dict({"name": "x", "model": {"d_model": 64, "num_heads": 4}, "train": {"learning_rate": 2}})
    assert config.model.d_model == 64 and config.model.num_heads == 4
    assert config.train.learning_rate == 2.0 and isinstance(config.train.learning_rate, float)  # int accepted


@pytest.mark.parametrize(
    "data, message",
    [
        ({"model": {"d_mdoel": 64}}, "unknown config key model.d_mdoel"),
        ({"modle": {}}, "unknown config key modle"),
        ({"train": {"warmup": 10}}, "unknown config key train.warmup"),
        ({"model": {"d_model": "abc"}}, "model.d_model must be of type int, got str 'abc'"),
        ({"model": {"d_model": 64.0}}, "model.d_model must be of type int, got float"),
        ({"model": {"d_model": True}}, "model.d_model must be of type int, got bool"),  # bool is not an int here
        ({"model": {"share_embeddings": 1}}, "model.share_embeddings must be of type bool, got int"),
        ({"train": {"learning_rate": "fast"}}, "train.learning_rate must be of type float"),
        ({"model": 3}, "model must be a mapping, got int"),
        ({"model": {"d_model": 64, "num_heads": 3}}, "model.d_model=64 must be divisible by model.num_heads=3"),
    ],
)
def test_from_dict_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(data)


def test_unknown_key_error_lists_the_known_keys():
    with pytest.raises(ConfigError) as info:
        Config.from_dict({"model": {"d_mdoel": 64}})
    assert "d_model" in str(info.value)  # the likely intended key is shown


# --- apply_overrides -------------------------------------------------------------------------------------------------


def test_overrides_parse_each_type():
    config = apply_overrides(
        Config(),
        [
            "model.d_model=256",  # int
            "model.num_heads=4",
            "train.label_smoothing=0.2",  # float
            "train.learning_rate=2",  # float written as an int
            "train.adam_eps=1e-8",  # float in scientific notation
            "model.use_bias=false",  # bool
            "train.keep_best=True",
            "model.scale_embeddings=0",
            "model.activation=gelu",  # str
            "name=my run",  # top-level str, spaces kept
            "data.path=/tmp/a=b",  # only the first '=' separates key and value
        ],
    )
    assert config.model.d_model == 256 and config.model.num_heads == 4
    assert config.train.label_smoothing == 0.2 and config.train.learning_rate == 2.0 and config.train.adam_eps == 1e-8
    assert config.model.use_bias is False and config.train.keep_best is True and config.model.scale_embeddings is False
    assert config.model.activation == "gelu" and config.name == "my run" and config.data.path == "/tmp/a=b"


def test_overrides_do_not_mutate_the_input():
    config = Config()
    apply_overrides(config, ["model.d_model=256", "model.num_heads=4"])
    assert config.model.d_model == 512


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.d_mdoel=3", r"unknown config key model.d_mdoel \(model has: .*d_model"),
        ("mdoel.d_model=3", r"unknown config key mdoel.d_model \(config has: "),
        ("model.d_model.x=3", r"unknown config key model.d_model.x \(model.d_model is not a section\)"),
        ("model.d_model=abc", "model.d_model must be of type int, got 'abc'"),
        ("model.d_model=1.5", "model.d_model must be of type int, got '1.5'"),
        ("train.label_smoothing=high", "train.label_smoothing must be of type float, got 'high'"),
        ("model.use_bias=maybe", "model.use_bias must be true or false, got 'maybe'"),
        ("model=3", "model is a section; set one of its fields"),
        ("model.d_model", "override 'model.d_model' must look like key=value"),
        ("model.num_heads=7", "model.d_model=512 must be divisible by model.num_heads=7"),  # re-validated
        ("model.activation=swish", "model.activation='swish' is not one of"),
        ("model.d_model=-4", "model.d_model must be positive"),
    ],
)
def test_override_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), [override])


# --- files ------------------------------------------------------------------------------------------------------------

RECIPE = """
from jax_transformer.config import Config, TrainConfig, model_preset


def get_config():
    return Config(name="recipe", model=model_preset("test", vocab_size=100), train=TrainConfig(steps=7))
"""


def test_load_config_file_recipe(tmp_path):
    path = tmp_path / "recipe.py"
    path.write_text(RECIPE)
    config = load_config_file(str(path))
    assert config.name == "recipe" and config.model.d_model == 32 and config.train.steps == 7
    config = load_config_file(str(path), ["train.steps=9", "model.dropout=0.2"])
    assert config.train.steps == 9 and config.model.dropout == 0.2
    with pytest.raises(ConfigError, match="unknown config key train.stpes"):
        load_config_file(str(path), ["train.stpes=9"])


def test_load_config_file_json(tmp_path):
    path = tmp_path / "config.json"
    Config(name="saved", model=model_preset("test", vocab_size=50)).save(str(path))
    config = load_config_file(str(path), ["decode.beam_size=2"])
    assert config.name == "saved" and config.model.vocab_size == 50 and config.decode.beam_size == 2


def test_load_config_file_errors(tmp_path):
    missing = tmp_path / "nope.py"
    with pytest.raises(ConfigError, match=f"config file {missing} does not exist"):
        load_config_file(str(missing))
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    with pytest.raises(ConfigError, match=f"could not load {broken}: SyntaxError"):
        load_config_file(str(broken))
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="must define get_config"):
        load_config_file(str(empty))
    wrong = tmp_path / "wrong.py"
    wrong.write_text("def get_config():\n    return {'name': 'x'}\n")
    with pytest.raises(ConfigError, match="returned dict, not Config"):
        load_config_file(str(wrong))
    invalid = tmp_path / "invalid.py"  # a recipe whose config is itself invalid: the ConfigError comes through as is
    invalid.write_text(
        "from jax_transformer.config import ModelConfig\n\ndef get_config():\n    return ModelConfig(d_ff=0)\n"
    )
    with pytest.raises(ConfigError, match="model.d_ff must be positive"):
        load_config_file(str(invalid))
    misspelt = tmp_path / "misspelt.py"  # get_config() itself raises: one line from every loader, no traceback
    misspelt.write_text(
        "from jax_transformer.config import DataConfig\n\ndef get_config():\n    return DataConfig(pathh='x')\n"
    )
    for load in (load_config_file, load_any_config):
        with pytest.raises(ConfigError, match=f"could not load {misspelt}: TypeError: .*pathh"):
            load(str(misspelt))
    yaml = tmp_path / "recipe.yaml"  # neither .py nor .json
    yaml.write_text("name: x\n")
    for load in (load_config_file, load_any_config):
        with pytest.raises(ConfigError, match="is neither a recipe"):
            load(str(yaml))
    garbled = tmp_path / "config.json"  # a run's config.json that is not UTF-8 text
    garbled.write_bytes(b"{\"name\": \"\xff\"}")
    for load in (load_config_file, load_any_config):
        with pytest.raises(ConfigError, match="is not valid JSON"):
            load(str(garbled))


def test_json_round_trip(tmp_path):
    config = apply_overrides(
        Config(name="round", model=model_preset("small", vocab_size=123, share_embeddings=False, target_vocab_size=77)),
        ["train.label_smoothing=0.05", "data.src_lang=de", "data.tgt_lang=en", "decode.alpha=1.0"],
    )
    path = tmp_path / "config.json"
    config.save(str(path))
    loaded = Config.load(str(path))
    assert loaded == config
    assert isinstance(loaded.model, ModelConfig) and loaded.model.target_vocab_size == 77
    assert json.loads(path.read_text()) == config.to_dict()


def test_config_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="no config file at"):
        Config.load(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        Config.load(str(bad))
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"model": {"d_mdoel": 3}}))
    with pytest.raises(ConfigError, match="unknown config key model.d_mdoel"):
        Config.load(str(unknown))


CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"
RECIPES = sorted(path.name for path in CONFIGS.glob("*.py"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_loads(recipe):
    """Each file in configs/ builds a valid config (its checks pass) that survives a save/load round trip, and a run
    of it is named after its file, so `runs/NAME` is the recipe's run directory."""
    config = load_any_config(str(CONFIGS / recipe))
    assert config.name == recipe.removesuffix(".py")
    assert type(config).from_dict(config.to_dict()) == config
