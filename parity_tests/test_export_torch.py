"""`export --to torch`: the exported directory loads in torch_ref and translates exactly as the JAX model does.

Two models, each saved with `save_model_dir` (what `export --to torch` writes) and loaded back on both sides
(`load_translator` for JAX, `torch_ref.load_pretrained` for PyTorch):
  * a tiny model trained in-test to copy sentences of a toy language (so searches produce real, varied-length
    outputs that end in EOS), with concatenated sinusoids;
  * a random model with every non-default option (pre-norm, unshared and untied embeddings, learned positions, GELU,
    no attention biases): its degenerate outputs run into the per-sentence length limit, exercising forced EOS.
Checked: teacher-forced and incremental (KV-cache) logits within 1e-5 (fp32), greedy and beam (4, alpha 0.6)
token ids identical on a padded batch, text translations identical, no pickles, and the command line.

The trained model is cached under pytest's session temp dir; parity_tests/test_hf_export.py reuses it.
Run with `-s` to see the measured differences.
"""

import dataclasses
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jax_transformer.cli import export as export_cli
from jax_transformer.config import Config, DataConfig, DecodeConfig, TrainConfig, model_preset
from jax_transformer.data.tokenizer import Tokenizer, train_tokenizer
from jax_transformer.decode import search as jax_decode
from jax_transformer.decode.translator import Translator, load_translator, save_model_dir
from jax_transformer.model.transformer import Transformer
from jax_transformer.tasks.translation import translation_steps
from torch_ref import decode as torch_decode
from torch_ref import load_pretrained, translate
from torch_ref.pretrained import search

LOGITS_ATOL = 1e-5
WORDS = "cat dog sun red big sky run hat the a on in".split()
BOS, EOS, PAD = 2, 3, 0
MAX_EXTRA_LEN = 6  # short, so that untrained models reach their limits quickly
TRAIN_WIDTH = 16  # padded length of the training batches


# ---------------------------------------------------------------------------------------------------------------------
# Models (shared with test_hf_export.py)
# ---------------------------------------------------------------------------------------------------------------------


def toy_sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 7)))) for _ in range(n)]


def toy_tokenizer(path: str) -> Tokenizer:
    """A ~33-piece sentencepiece model of the toy language (trains in ~0.1 s)."""
    return train_tokenizer(toy_sentences(2000, seed=0), path, DataConfig(vocab_size=40))


def copy_batch(tokenizer: Tokenizer, n: int, seed: int) -> dict:
    """Right-padded copy-task batch of width TRAIN_WIDTH: src = ids + EOS, tgt_in = BOS + ids, tgt_out = ids + EOS."""
    batch = {key: np.zeros((n, TRAIN_WIDTH), np.int32) for key in ("src", "tgt_in", "tgt_out")}
    for row, ids in enumerate(tokenizer.encode(toy_sentences(n, seed))):
        ids = ids[: TRAIN_WIDTH - 1]
        batch["src"][row, : len(ids) + 1] = ids + [EOS]
        batch["tgt_in"][row, : len(ids) + 1] = [BOS] + ids
        batch["tgt_out"][row, : len(ids) + 1] = ids + [EOS]
    return batch


def make_config(vocab_size: int, **model_overrides) -> Config:
    model = model_preset("test", vocab_size=vocab_size, max_len=32, **model_overrides)
    return Config(
        model=model,
        train=TrainConfig(
            schedule="constant", learning_rate=3e-3, warmup_steps=20, label_smoothing=0.1, clip_grad_norm=1.0
        ),  # fmt: skip
        decode=DecodeConfig(beam_size=4, alpha=0.6, max_extra_len=MAX_EXTRA_LEN),
    )


def train_copy_model(tokenizer: Tokenizer, steps: int = 250, **model_overrides) -> Translator:
    """A tiny model trained to copy toy sentences (~10 s on 2 CPU cores; >99% token accuracy)."""
    config = make_config(tokenizer.vocab_size, **model_overrides)
    model = Transformer(config.model, rngs=nnx.Rngs(params=0, dropout=1))
    runner = translation_steps(config, model)
    state = runner.init_state(nnx.state(model, nnx.Param))
    for step in range(steps):
        state, _ = runner.train_step(state, copy_batch(tokenizer, 64, seed=1000 + step % 50))
    return Translator(config, runner.eval_model(state["params"]), tokenizer)


def copy_model_dir(base_dir) -> str:
    """The trained copy model as an exported directory, built once per test session."""
    out = os.path.join(str(base_dir), "copy_model")
    if not os.path.exists(os.path.join(out, "model.safetensors")):
        tokenizer = toy_tokenizer(os.path.join(str(base_dir), "toy_spm.model"))
        save_model_dir(train_copy_model(tokenizer, sinusoidal_layout="concatenated"), out)
    return out


def random_model_dir(base_dir, name: str, favour_pad_bos: bool = False, **model_overrides) -> str:
    """An untrained model (seed 0) with the toy tokenizer, as an exported directory. `favour_pad_bos` (tied output
    only) scales the PAD and BOS embeddings so that, unconstrained, the model would generate them."""
    out = os.path.join(str(base_dir), name)
    if not os.path.exists(os.path.join(out, "model.safetensors")):
        tokenizer = toy_tokenizer(os.path.join(str(base_dir), f"{name}_spm.model"))
        config = make_config(tokenizer.vocab_size, **model_overrides)
        model = Transformer(config.model, rngs=nnx.Rngs(0))
        if favour_pad_bos:
            embedding = model.target_token_embedding().embedding
            embedding.set_value(embedding.get_value().at[jnp.array([PAD, BOS])].multiply(4.0))
        save_model_dir(Translator(config, model, tokenizer), out)
    return out


def randomize_every_parameter(model, seed: int, scale: float = 0.15) -> None:
    """Gaussian noise on every parameter, the 1-D ones included (init leaves LayerNorm scales at 1 and biases at 0,
    which would hide a swapped, dropped or mis-mapped vector in an export)."""
    rng = np.random.default_rng(seed)
    for _, param in nnx.state(model, nnx.Param).flat_state():
        value = np.asarray(param.get_value())
        param.set_value(jnp.asarray(value + rng.normal(0.0, scale, value.shape).astype(np.float32)))


RANDOM_VARIANT = dict(
    norm_position="pre", share_embeddings=False, target_vocab_size=37, tie_output=False, positional="learned",
    activation="gelu", use_bias=False, dropout=0.1, attention_dropout=0.1, ffn_dropout=0.1,
)  # fmt: skip


def padded_batch(tokenizer: Tokenizer, sentences: list[str]) -> np.ndarray:
    """Sources (ids + EOS) right-padded to the longest: the layout `Translator.search` takes."""
    rows = [ids + [EOS] for ids in tokenizer.encode(sentences)]
    src = np.full((len(rows), max(map(len, rows))), PAD, np.int32)
    for i, row in enumerate(rows):
        src[i, : len(row)] = row
    return src


def jax_model(translator: Translator):
    return nnx.merge(translator.graphdef, translator.params, translator.rest)


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------------

SENTENCES = toy_sentences(8, seed=123) + ["", "cat dog cat dog cat dog cat dog"]  # + empty and longest-in-batch


class Exported:
    """One exported model loaded on both sides, with the JAX search results on the padded SENTENCES batch (each
    computed once: every search setting is one XLA compile)."""

    def __init__(self, name: str, path: str):
        self.name, self.path = name, path
        self.translator = load_translator(path)
        self.model, self.sp = load_pretrained(path)
        self.src = padded_batch(self.translator.tokenizer, SENTENCES)
        self._searched = {}

    def jax_search(self, beam_size: int, alpha: float) -> np.ndarray:
        if (beam_size, alpha) not in self._searched:
            self._searched[beam_size, alpha] = self.translator.search(self.src, beam_size, alpha)
        return self._searched[beam_size, alpha]


@pytest.fixture(scope="module", params=["copy", "random"])
def exported(request, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    path = copy_model_dir(base) if request.param == "copy" else random_model_dir(base, "random_model", **RANDOM_VARIANT)
    return Exported(request.param, path)


# ---------------------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------------------


def test_directory_is_self_contained_and_pickle_free(exported):
    path = exported.path
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors", "spm.model"]
    for name in os.listdir(path):
        with open(os.path.join(path, name), "rb") as f:
            head = f.read(2)
        assert head[:1] != b"\x80" and head != b"PK", f"{name} looks like a pickle / torch.save zip"


def test_logits_match(exported):
    name, translator, model, src = exported.name, exported.translator, exported.model, exported.src
    tgt = np.concatenate([np.full((len(src), 1), BOS, np.int32), src[:, :-1]], axis=1)  # BOS + shifted source
    tgt[tgt == EOS] = PAD  # padded targets too
    jax_logits = np.asarray(jax_model(translator)(jnp.asarray(src), jnp.asarray(tgt)))
    with torch.no_grad():
        torch_logits = model(torch.as_tensor(src, dtype=torch.long), torch.as_tensor(tgt, dtype=torch.long)).numpy()
    real = tgt != PAD
    diff = max_diff(jax_logits[real], torch_logits[real])
    print(f"\n{name}: teacher-forced logits max |JAX - torch_ref| = {diff:.2e}")
    assert diff < LOGITS_ATOL


def test_incremental_decoding_matches(exported):
    """The KV-cache step of torch_ref.decode equals the JAX model's decode_step, step by step."""
    name, translator, model, src = exported.name, exported.translator, exported.model, exported.src[:4]
    steps, width = 5, 8
    tokens = np.random.default_rng(0).integers(4, 20, size=(len(src), steps)).astype(np.int32)
    tokens[:, 0] = BOS
    jm = jax_model(translator)
    memory, src_mask = jm.encode(jnp.asarray(src))
    j_cross, j_cache = jm.cross_key_values(memory), jm.init_cache(len(src), width)
    with torch.no_grad():
        t_memory, t_mask = model.encode(torch.as_tensor(src, dtype=torch.long))
        t_cross, t_cache = model.cross_key_values(t_memory), model.init_cache(len(src), width)
        worst = 0.0
        for index in range(steps):
            j_logits, j_cache = jm.decode_step(jnp.asarray(tokens[:, index]), index, j_cache, j_cross, src_mask)
            t_logits, t_cache = model.decode_step(
                torch.as_tensor(tokens[:, index]).long(), index, t_cache, t_cross, t_mask
            )
            worst = max(worst, max_diff(j_logits, t_logits.numpy()))
        full = model(torch.as_tensor(src, dtype=torch.long), torch.as_tensor(tokens, dtype=torch.long))[:, -1].numpy()
    print(f"\n{name}: incremental logits max |JAX - torch_ref| = {worst:.2e}")
    assert worst < LOGITS_ATOL
    assert max_diff(t_logits.numpy(), full) < LOGITS_ATOL  # the cache step equals the full forward pass


@pytest.mark.parametrize("beam_size, alpha", [(1, 0.0), (4, 0.6)])
def test_searches_match_token_for_token(exported, beam_size, alpha):
    src = exported.src
    jax_tokens = exported.jax_search(beam_size, alpha)
    torch_tokens = search(exported.model, src, beam_size, alpha, MAX_EXTRA_LEN).numpy()
    assert jax_tokens.shape == torch_tokens.shape
    np.testing.assert_array_equal(jax_tokens, torch_tokens)
    assert (jax_tokens == EOS).any(axis=1).all()  # finished, or forced at the limit
    if exported.name == "copy":  # the trained model copies: outputs are the sources, ending at EOS like them
        copied = [np.array_equal(j[: (s != PAD).sum()], s[s != PAD]) for j, s in zip(jax_tokens, src, strict=True)]
        assert np.mean(copied) >= 0.9


@pytest.mark.parametrize("wait_for_k_finished", [False, True])
def test_hf_finishing_rule_matches_token_for_token(exported, wait_for_k_finished):
    """beam_search(finish_from_top_k=True) in torch_ref equals the JAX one (decode.py mirrors it line for line), with
    either stopping rule; waiting for K finished hypotheses returns the same best ones."""
    src = exported.src
    width = min(src.shape[1] + MAX_EXTRA_LEN, exported.translator.config.model.max_len)
    limits = jax_decode.output_limits(jnp.asarray(src), PAD, MAX_EXTRA_LEN, width)
    jm = nnx.merge(exported.translator.graphdef, exported.translator.params, exported.translator.rest)
    rule = dict(finish_from_top_k=True, wait_for_k_finished=wait_for_k_finished)
    jax_tokens = jax_decode.beam_search(jm, jnp.asarray(src), 4, width, BOS, EOS, 0.0, limits, **rule)
    torch_tokens = torch_decode.beam_search(exported.model, src, 4, width, BOS, EOS, 0.0, np.asarray(limits).tolist(),
                                            **rule)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(jax_tokens[0]), torch_tokens[0].numpy())
    np.testing.assert_allclose(np.asarray(jax_tokens[1]), torch_tokens[1].numpy(), rtol=1e-5, atol=1e-5)
    default = jax_decode.beam_search(jm, jnp.asarray(src), 4, width, BOS, EOS, 0.0, limits, finish_from_top_k=True)
    np.testing.assert_array_equal(np.asarray(jax_tokens[0]), np.asarray(default[0]))


@pytest.mark.parametrize("beam_size, alpha", [(1, 0.0), (4, 0.6)])
def test_text_translations_match(exported, beam_size, alpha):
    """torch_ref.translate (its own batching: 3 sentences a batch, sorted by length) gives the JAX translations."""
    jax_text = exported.translator.tokenizer.decode(exported.jax_search(beam_size, alpha).tolist())
    torch_text = translate(exported.model, exported.sp, SENTENCES, beam_size, alpha, MAX_EXTRA_LEN, batch_size=3)
    assert torch_text == jax_text
    if exported.name == "copy":
        assert sum(a == b for a, b in zip(jax_text, SENTENCES, strict=True)) >= 0.9 * len(SENTENCES), jax_text


def test_an_over_long_source_is_cut_as_the_jax_translator_cuts_it(exported):
    """A source longer than model.max_len is cut to it on both sides (it would not fit the positions)."""
    words = " ".join(SENTENCES).split()
    long = " ".join(words * (1 + 2 * exported.translator.config.model.max_len // len(words)))
    assert len(exported.sp.encode(long)) > exported.translator.config.model.max_len
    jax_text = exported.translator.translate([long, SENTENCES[0]], beam_size=4, alpha=0.6)
    assert translate(exported.model, exported.sp, [long, SENTENCES[0]], 4, 0.6) == jax_text


@pytest.mark.parametrize("beam_size", [1, 4])
def test_summary_options_match_token_for_token(exported, beam_size):
    """decode.min_len and decode.no_repeat_ngram_size ban the same tokens in both frameworks."""
    translator, src, saved = exported.translator, exported.src, exported.translator.config
    plain, changed = exported.jax_search(beam_size, 0.6), 0
    for min_len, n in ((5, 0), (0, 2), (5, 1)):
        decode = dataclasses.replace(saved.decode, min_len=min_len, no_repeat_ngram_size=n)
        translator.config = dataclasses.replace(saved, decode=decode)
        try:
            jax_tokens = translator.search(src, beam_size, 0.6)
        finally:
            translator.config = saved
        torch_tokens = search(exported.model, src, beam_size, 0.6, MAX_EXTRA_LEN, min_len, n).numpy()
        np.testing.assert_array_equal(jax_tokens, torch_tokens)
        changed += not np.array_equal(jax_tokens, plain)
    assert changed  # the options bound somewhere, so the comparison tested them


def test_export_command(tmp_path, tmp_path_factory):
    source = copy_model_dir(tmp_path_factory.getbasetemp())
    out = tmp_path / "exported"
    assert export_cli.main([source, "--to", "torch", "--out", str(out)]) == 0
    model, sp = load_pretrained(str(out))
    assert translate(model, sp, ["cat on the sky"], beam_size=1) == ["cat on the sky"]
    assert export_cli.main([source, "--to", "torch", "--out", str(out)]) == 1  # refuses a non-empty --out


def test_export_command_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        export_cli.main(["--help"])
    help_ = capsys.readouterr().out
    assert exit_.value.code == 0 and "--to" in help_ and "torch" in help_ and "hf" in help_
    assert export_cli.main([str(tmp_path / "nowhere"), "--to", "torch", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    assert not (tmp_path / "out").exists()
