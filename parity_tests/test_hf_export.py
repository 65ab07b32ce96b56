"""`export --to hf`: Hugging Face transformers' own `MarianMTModel` (post-norm models) or
`PegasusForConditionalGeneration` (pre-norm models) and `MarianTokenizer` load the exported directory and compute what
the JAX model computes.

  * logits of `AutoModelForSeq2SeqLM.from_pretrained(dir)` within 1e-5 of the JAX model (decoder input starting with
    BOS) on models whose every parameter is random (LayerNorm scales and biases included, so that a swapped or
    dropped vector shows), for the paper's model with either sinusoid layout (interleaved is exported by permuting
    features), for unshared, untied, GELU, bias-free, unscaled variants, and for pre-norm models (Pegasus);
  * the tokenizer (`MarianTokenizer` and `AutoTokenizer`) gives our ids + EOS and decodes back to our text;
  * `generate(num_beams=1)` reproduces our greedy search token for token (per sentence, max_new_tokens = our limit);
  * `generate(num_beams=4, length_penalty=0, early_stopping='never')` reproduces our beam search with alpha=0 on the
    trained model. The one algorithmic difference shows on the untrained one: of the 2K candidates expanded per step,
    HF finalizes only the EOS-ending ones ranked in the top K, we finalize all; where outputs differ, ours is the
    more probable; with `finish_from_top_k` (HF's rule) ours equals generate() on every sentence of every model.
    With alpha > 0 the scores differ by design: HF divides log P by length^length_penalty, we by GNMT's
    ((5 + length) / 6)^alpha, each rule checked exactly on its own output
    (`test_hf_length_penalty_is_log_p_over_length_to_the_power`);
  * the same greedy and beam equalities for an untrained pre-norm model exported as Pegasus;
  * options neither can express are refused with a one-line message; the directory holds no pickles.

The copy-task model is trained by (and shared with) test_export_torch.py. Run with `-s` to see the measurements.
"""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from test_export_torch import (  # (the shared model builders; pytest puts this folder on sys.path)
    BOS,
    EOS,
    MAX_EXTRA_LEN,
    PAD,
    RANDOM_VARIANT,
    SENTENCES,
    copy_model_dir,
    make_config,
    max_diff,
    padded_batch,
    random_model_dir,
    randomize_every_parameter,
    toy_tokenizer,
)
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    MarianMTModel,
    MarianTokenizer,
    PegasusForConditionalGeneration,
)

from jax_transformer.cli import export as export_cli
from jax_transformer.config import UserError
from jax_transformer.decode.search import beam_search, output_limits
from jax_transformer.decode.translator import load_translator
from jax_transformer.interop.hf_export import check_exportable, save_hf
from jax_transformer.model.transformer import Transformer, sinusoidal_positions

HF_LOGITS_ATOL = 1e-5
HF_VARIANTS = {
    "paper-concatenated": dict(sinusoidal_layout="concatenated"),
    "paper-interleaved": dict(sinusoidal_layout="interleaved"),
    "unshared-untied-gelu-nobias-noscale": dict(
        share_embeddings=False, target_vocab_size=37, tie_output=False, activation="gelu", use_bias=False,
        scale_embeddings=False, dropout=0.1, attention_dropout=0.1, ffn_dropout=0.1,
    ),
    "unshared-tied-gelu_tanh": dict(share_embeddings=False, target_vocab_size=37, activation="gelu_tanh"),
    "shared-untied": dict(tie_output=False),
    "pre-norm-interleaved": dict(norm_position="pre", sinusoidal_layout="interleaved"),
    "pre-norm-untied-gelu-nobias-noscale": dict(
        norm_position="pre", tie_output=False, activation="gelu", use_bias=False, scale_embeddings=False,
    ),
}  # fmt: skip


def assert_no_pickles(path: str) -> None:
    for name in os.listdir(path):
        assert not name.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")), name
        with open(os.path.join(path, name), "rb") as f:
            head = f.read(2)
        assert head[:1] != b"\x80" and head != b"PK", f"{name} looks like a pickle / torch.save zip"


def exported(source: str, out: str, hf_class) -> tuple:
    """(JAX translator, HF model, HF directory) of the model directory `source`, exported with the command into
    `out` once per session; the directory must load as `hf_class` through AutoModelForSeq2SeqLM."""
    if not os.path.exists(out):
        assert export_cli.main([source, "--to", "hf", "--out", out]) == 0
    hf_model = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    assert isinstance(hf_model, hf_class)
    return load_translator(source), hf_model, out


@pytest.fixture(scope="module")
def copy_export(tmp_path_factory):
    """The trained copy model (post-norm), exported as Marian."""
    base = tmp_path_factory.getbasetemp()
    return exported(copy_model_dir(base), os.path.join(str(base), "copy_model_hf"), MarianMTModel)


@pytest.fixture(scope="module")
def random_export(tmp_path_factory):
    """An untrained paper model with interleaved sinusoids (its outputs run into the limits), which would generate
    PAD and BOS if the searches let it: exported as Marian."""
    base = tmp_path_factory.getbasetemp()
    source = random_model_dir(base, "random_paper_model", favour_pad_bos=True)
    return exported(source, os.path.join(str(base), "random_paper_model_hf"), MarianMTModel)


@pytest.fixture(scope="module")
def pre_norm_export(tmp_path_factory):
    """The same for an untrained pre-norm model (shared embeddings, interleaved sinusoids): exported as Pegasus."""
    base = tmp_path_factory.getbasetemp()
    source = random_model_dir(base, "random_pre_norm_model", favour_pad_bos=True, norm_position="pre")
    return exported(source, os.path.join(str(base), "random_pre_norm_model_hf"), PegasusForConditionalGeneration)


def pick(which, copy_export, random_export, pre_norm_export):
    return {"copy": copy_export, "random": random_export, "random-pre-norm": pre_norm_export}[which]


# ---------------------------------------------------------------------------------------------------------------------
# The exported directory, the model and the tokenizer
# ---------------------------------------------------------------------------------------------------------------------


def test_directory_contents(copy_export):
    translator, hf_model, out = copy_export
    assert_no_pickles(out)
    assert {"config.json", "generation_config.json", "model.safetensors", "source.spm", "target.spm", "vocab.json",
            "tokenizer_config.json"} <= set(os.listdir(out))  # fmt: skip
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    m = translator.config.model
    expected = {
        "model_type": "marian", "activation_function": "relu", "scale_embedding": True,
        "share_encoder_decoder_embeddings": True, "tie_word_embeddings": True, "d_model": m.d_model,
        "encoder_layers": m.num_encoder_layers, "decoder_layers": m.num_decoder_layers, "encoder_ffn_dim": m.d_ff,
        "encoder_attention_heads": m.num_heads, "max_position_embeddings": m.max_len, "vocab_size": m.vocab_size,
        "pad_token_id": PAD, "eos_token_id": EOS, "decoder_start_token_id": BOS,
    }  # fmt: skip
    assert {key: config.get(key) for key in expected} == expected
    with open(os.path.join(out, "generation_config.json")) as f:
        generation = json.load(f)
    assert generation["decoder_start_token_id"] == BOS and generation["forced_eos_token_id"] == EOS
    assert generation["suppress_tokens"] == [PAD, BOS] and generation["num_beams"] == 4
    assert torch.count_nonzero(hf_model.final_logits_bias) == 0
    assert hf_model.lm_head.weight.data_ptr() == hf_model.model.shared.weight.data_ptr()  # tied after loading
    table = sinusoidal_positions(m.max_len, m.d_model, "concatenated")
    assert max_diff(hf_model.model.encoder.embed_positions.weight.detach(), table) < 1e-6


@pytest.mark.parametrize("variant", list(HF_VARIANTS))
def test_logits_match_jax(variant, tmp_path):
    tokenizer = toy_tokenizer(str(tmp_path / "spm.model"))
    config = make_config(tokenizer.vocab_size, **HF_VARIANTS[variant])
    model = Transformer(config.model, rngs=nnx.Rngs(1))
    randomize_every_parameter(model, seed=2)  # LayerNorm scales and every bias too: a mis-mapped vector shows
    model.eval()
    save_hf(model, config, tokenizer, str(tmp_path / "hf"))
    hf_model = AutoModelForSeq2SeqLM.from_pretrained(str(tmp_path / "hf")).eval()
    expected = PegasusForConditionalGeneration if config.model.norm_position == "pre" else MarianMTModel
    assert type(hf_model) is expected and not hf_model.training

    src = padded_batch(tokenizer, SENTENCES)
    tgt = np.concatenate([np.full((len(src), 1), BOS, np.int32), src[:, :-1]], axis=1)
    tgt[tgt == EOS] = PAD  # padded decoder inputs, masked on both sides
    ours = np.asarray(model(jnp.asarray(src), jnp.asarray(tgt)))
    with torch.no_grad():
        theirs = hf_model(
            input_ids=torch.as_tensor(src, dtype=torch.long), attention_mask=torch.as_tensor(src != PAD),
            decoder_input_ids=torch.as_tensor(tgt, dtype=torch.long),
            decoder_attention_mask=torch.as_tensor(tgt != PAD),
        ).logits.numpy()  # fmt: skip
    diff = max_diff(ours[tgt != PAD], theirs[tgt != PAD])
    print(f"\n{variant}: logits max |JAX - HF {type(hf_model).__name__}| = {diff:.2e}")
    assert diff < HF_LOGITS_ATOL


@pytest.mark.parametrize("loader", [MarianTokenizer, AutoTokenizer])
def test_tokenizer_matches_ours(copy_export, loader):
    translator, _, out = copy_export
    ours = translator.tokenizer
    hf_tokenizer = loader.from_pretrained(out)
    sentences = [s for s in SENTENCES if s] + ["unknown: ü!", "the  cat\ton a  hat"]
    assert hf_tokenizer(sentences)["input_ids"] == [ids + [EOS] for ids in ours.encode(sentences)]
    ids = [[BOS] + row + [EOS, PAD, PAD] for row in ours.encode(sentences[:-2])]
    assert hf_tokenizer.batch_decode(ids, skip_special_tokens=True) == ours.decode(ids)


# ---------------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------------


def hf_generate(hf_model, translator, **kwargs) -> list[list[int]]:
    """HF `generate` one sentence at a time (HF has one length limit per batch; ours is per sentence): at most our
    limit of new tokens (source length + max_extra_len, capped; max_length counts the start token too), EOS forced
    at the limit (generation_config.json: forced_eos_token_id). Returns the generated ids without the start token."""
    src = padded_batch(translator.tokenizer, SENTENCES)
    max_len = min(src.shape[1] + MAX_EXTRA_LEN, translator.config.model.max_len)
    outputs = []
    for row in src:
        length = int((row != PAD).sum())
        with torch.no_grad():
            out = hf_model.generate(
                input_ids=torch.as_tensor(row[None, :length], dtype=torch.long),
                attention_mask=torch.ones((1, length), dtype=torch.long),
                max_length=1 + min(length + MAX_EXTRA_LEN, max_len), do_sample=False, **kwargs,
            )[0].tolist()  # fmt: skip
        assert out[0] == BOS
        outputs.append(out[1:])
    return outputs


def ours_as_lists(tokens: np.ndarray) -> list[list[int]]:
    """Our search output rows up to and including EOS (everything after it is padding)."""
    rows = []
    for row in tokens.tolist():
        end = row.index(EOS) + 1
        assert all(t == PAD for t in row[end:])
        rows.append(row[:end])
    return rows


def hf_as_lists(outputs: list[list[int]]) -> list[list[int]]:
    return [row[: row.index(EOS) + 1] if EOS in row else row for row in outputs]


@pytest.mark.parametrize("which", ["copy", "random", "random-pre-norm"])
def test_greedy_generate_reproduces_our_greedy(which, copy_export, random_export, pre_norm_export):
    translator, hf_model, _ = pick(which, copy_export, random_export, pre_norm_export)
    ours = ours_as_lists(translator.search(padded_batch(translator.tokenizer, SENTENCES), 1, 0.0))
    theirs = hf_generate(hf_model, translator, num_beams=1)
    assert hf_as_lists(theirs) == ours
    if which != "copy":  # untrained: every output runs to its limit, where EOS is forced on both sides
        assert [len(row) for row in ours] == [min(len(ids) + 1 + MAX_EXTRA_LEN, 32) for ids in
                                              translator.tokenizer.encode(SENTENCES)]  # fmt: skip
        # and PAD / BOS, which it favours, are banned on both sides (generation_config.json: suppress_tokens)
        unconstrained = hf_generate(hf_model, translator, num_beams=1, suppress_tokens=None)
        assert any(token in (PAD, BOS) for row in hf_as_lists(unconstrained) for token in row[:-1])


@pytest.mark.parametrize("which", ["copy", "random"])
def test_generate_with_the_summary_options_reproduces_ours(which, copy_export, random_export, pre_norm_export):
    """decode.min_len (no EOS before that many tokens) and decode.no_repeat_ngram_size mean what HF's min_new_tokens
    and no_repeat_ngram_size mean, and the exported generation_config.json carries them: greedy outputs agree."""
    import dataclasses

    from jax_transformer.interop.hf_export import generation_config

    translator, hf_model, _ = pick(which, copy_export, random_export, pre_norm_export)
    decode = dataclasses.replace(translator.config.decode, min_len=6, no_repeat_ngram_size=2)
    config = dataclasses.replace(translator.config, decode=decode)
    generation = generation_config(config, PAD, BOS, EOS)
    assert generation.min_new_tokens == 6 and generation.no_repeat_ngram_size == 2
    plain = ours_as_lists(translator.search(padded_batch(translator.tokenizer, SENTENCES), 1, 0.0))
    original, translator.config = translator.config, config  # the fixture is shared: put its config back after
    try:
        ours = ours_as_lists(translator.search(padded_batch(translator.tokenizer, SENTENCES), 1, 0.0))
    finally:
        translator.config = original
    assert ours != plain  # the options change these outputs, so the comparison below tests them
    theirs = hf_generate(hf_model, translator, num_beams=1, min_new_tokens=6, no_repeat_ngram_size=2)
    assert hf_as_lists(theirs) == ours


def log_probs(hf_model, src: np.ndarray, outputs: list[list[int]]) -> np.ndarray:
    """log P(output | source) (the beam score when alpha = 0), teacher-forced through the exported model (whose
    logits equal ours within 1e-5, test_logits_match_jax)."""
    tgt_in = np.full((len(outputs), max(map(len, outputs))), PAD, np.int64)
    for row, output in enumerate(outputs):
        tgt_in[row, : len(output)] = [BOS] + output[:-1]
    with torch.no_grad():
        logits = hf_model(
            input_ids=torch.as_tensor(src, dtype=torch.long), attention_mask=torch.as_tensor(src != PAD),
            decoder_input_ids=torch.as_tensor(tgt_in), decoder_attention_mask=torch.as_tensor(tgt_in != PAD),
        ).logits  # fmt: skip
    logp = torch.log_softmax(logits, dim=-1).numpy()
    return np.array([sum(logp[row, i, token] for i, token in enumerate(out)) for row, out in enumerate(outputs)])


@pytest.mark.parametrize("which", ["copy", "random", "random-pre-norm"])
def test_beam_generate_without_length_penalty_reproduces_ours(which, copy_export, random_export, pre_norm_export):
    """alpha = 0 and length_penalty = 0 score hypotheses alike (log P), early_stopping='never' stops alike. On the
    trained model HF's beam search returns exactly ours. The untrained model shows the one algorithmic difference:
    there a bare EOS is a top-2K but not a top-K candidate at the first step, which we keep as a finished hypothesis
    (and, without length penalty, it is the best one) while HF drops it; wherever the outputs differ, ours must be the
    more probable one."""
    translator, hf_model, _ = pick(which, copy_export, random_export, pre_norm_export)
    ours = ours_as_lists(translator.search(padded_batch(translator.tokenizer, SENTENCES), 4, 0.0))
    theirs = hf_as_lists(hf_generate(hf_model, translator, num_beams=4, length_penalty=0.0, early_stopping="never"))
    if which == "copy":
        assert theirs == ours
        return
    differ = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    print(f"\nuntrained model, beam 4, alpha 0: {len(ours) - len(differ)}/{len(ours)} identical")
    assert len(differ) < len(ours)
    src = padded_batch(translator.tokenizer, [SENTENCES[i] for i in differ])
    ours_logp = log_probs(hf_model, src, [ours[i] for i in differ])
    theirs_logp = log_probs(hf_model, src, [theirs[i] for i in differ])
    assert np.all(ours_logp > theirs_logp), (ours_logp, theirs_logp)


@pytest.mark.parametrize("which", ["copy", "random", "random-pre-norm"])
def test_beam_with_the_hf_finishing_rule_equals_generate(which, copy_export, random_export, pre_norm_export):
    """With `finish_from_top_k` (only top-K candidates may finish, HF's and fairseq's rule) our beam search returns
    exactly what generate() returns, also on the untrained models where the default rule differs."""
    translator, hf_model, _ = pick(which, copy_export, random_export, pre_norm_export)
    src = jnp.asarray(padded_batch(translator.tokenizer, SENTENCES))
    max_len = min(src.shape[1] + MAX_EXTRA_LEN, translator.config.model.max_len)
    limits = output_limits(src, PAD, MAX_EXTRA_LEN, max_len)
    model = nnx.merge(translator.graphdef, translator.params, translator.rest)
    tokens, _ = beam_search(model, src, 4, max_len, BOS, EOS, 0.0, limits, finish_from_top_k=True)
    theirs = hf_generate(hf_model, translator, num_beams=4, length_penalty=0.0, early_stopping="never")
    assert ours_as_lists(np.asarray(tokens)) == theirs
    # generate()'s stopping rule too (wait for 4 finished, stop when none alive can beat the 4th): the same output
    waited, _ = beam_search(model, src, 4, max_len, BOS, EOS, 0.0, limits, finish_from_top_k=True,
                            wait_for_k_finished=True)  # fmt: skip
    assert ours_as_lists(np.asarray(waited)) == theirs


def test_hf_length_penalty_is_log_p_over_length_to_the_power(copy_export):
    """The one scoring rule that differs with a length penalty, checked exactly: HF's beam score of what it returns
    (`sequences_scores`, length_penalty 0.6) is log P / length^0.6 with log P from the model and length counting
    EOS; ours is log P / ((5 + length) / 6)^0.6 (GNMT), checked on our own output the same way."""
    translator, hf_model, _ = copy_export
    model = nnx.merge(translator.graphdef, translator.params, translator.rest)
    src = padded_batch(translator.tokenizer, SENTENCES)
    max_len = min(src.shape[1] + MAX_EXTRA_LEN, translator.config.model.max_len)
    limits = output_limits(jnp.asarray(src), PAD, MAX_EXTRA_LEN, max_len)
    tokens, our_scores = beam_search(model, jnp.asarray(src), 4, max_len, BOS, EOS, 0.6, limits)
    ours_all = ours_as_lists(np.asarray(tokens))
    for row, (ours, our_score) in enumerate(zip(ours_all, np.asarray(our_scores).tolist(), strict=True)):
        length = int((src[row] != PAD).sum())
        with torch.no_grad():
            out = hf_model.generate(
                input_ids=torch.as_tensor(src[row : row + 1, :length], dtype=torch.long), num_beams=4,
                length_penalty=0.6, max_length=1 + min(length + MAX_EXTRA_LEN, max_len), do_sample=False,
                output_scores=True, return_dict_in_generate=True,
            )  # fmt: skip
        theirs = hf_as_lists([out.sequences[0, 1:].tolist()])[0]
        for hyp, score, penalty in ((theirs, float(out.sequences_scores[0]), len(theirs) ** 0.6),
                                    (ours, our_score, ((5 + len(ours)) / 6) ** 0.6)):  # fmt: skip
            log_p = float(log_probs(hf_model, src[row : row + 1], [hyp])[0])
            assert abs(score - log_p / penalty) < 1e-4, (row, hyp, score, log_p / penalty)


# ---------------------------------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(norm_position="pre", share_embeddings=False, target_vocab_size=37), "model.share_embeddings=False"),
        (dict(positional="learned"), "model.positional='learned'"),
        (dict(layer_norm_eps=1e-6), "model.layer_norm_eps=1e-06"),
        (dict(embedding_norm=True), "model.embedding_norm=True"),
    ],
)
def test_inexpressible_options_are_refused(overrides, message):
    config = make_config(40, **overrides)
    with pytest.raises(UserError, match="cannot export to Hugging Face") as error:
        check_exportable(config.model)
    assert message in str(error.value) and "--to torch" in str(error.value)


def test_export_command_refuses_what_hf_cannot_express(tmp_path_factory, tmp_path, capsys):
    # pre-norm with separate vocabularies and learned positions
    source = random_model_dir(tmp_path_factory.getbasetemp(), "random_model", **RANDOM_VARIANT)
    assert export_cli.main([source, "--to", "hf", "--out", str(tmp_path / "hf")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot export to Hugging Face") and err.strip().count("\n") == 0, err
    assert "share_embeddings=False" in err and "positional='learned'" in err
    assert not (tmp_path / "hf").exists()


def test_export_without_transformers_installed_is_one_line(tmp_path_factory, tmp_path, capsys, monkeypatch):
    import sys

    source = random_model_dir(tmp_path_factory.getbasetemp(), "random_model", **RANDOM_VARIANT)
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed: importing it raises ImportError
    assert export_cli.main([source, "--to", "hf", "--out", str(tmp_path / "hf")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Hugging Face transformers is not installed; fix: pip install"), err
    assert err.count("\n") == 1
    assert not (tmp_path / "hf").exists()
