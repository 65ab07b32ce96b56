"""Which library CTranslate2 multiplies through (interop.ct2.choose_gemm_backend): the rule, with the CPU's flags and
the environment replaced, so that it runs on any machine and imports no CTranslate2."""

import json
import os
import sys

import pytest

from jax_transformer.interop import ct2

AVX2 = frozenset({"avx2", "fma"})
AVX2_VNNI = AVX2 | {"avx512f", "avx512_vnni"}


@pytest.fixture
def fresh(monkeypatch):
    """No CT2_USE_MKL and no CTranslate2 imported yet; returns a function that sets the CPU's flags. The variable
    the rule sets is removed again afterwards (set, then deleted, so that monkeypatch restores its absence too)."""
    monkeypatch.setenv("CT2_USE_MKL", "unset")
    monkeypatch.delenv("CT2_USE_MKL")
    monkeypatch.delitem(sys.modules, "ctranslate2", raising=False)
    return lambda flags: monkeypatch.setattr(ct2, "cpu_flags", lambda: flags)


@pytest.mark.parametrize(
    ("flags", "quantization", "expected"),
    [
        (AVX2, "float32", "0"),  # float32: oneDNN on any x86 CPU
        (AVX2_VNNI, "float32", "0"),
        (AVX2, "int8", "1"),  # int8 without VNNI: MKL (oneDNN's u8s8 products lose accuracy there)
        (AVX2, "int8_float32", "1"),
        (AVX2, None, "1"),  # an export that did not record its weight type: treated as int8
        (AVX2_VNNI, "int8", None),  # int8 with VNNI: CTranslate2's own choice
        (AVX2, "int16", None),  # neither measured: CTranslate2's own choice
        (frozenset({"neon", "asimd"}), "float32", None),  # not x86
        (frozenset({"neon", "asimd"}), "int8", None),
    ],
)
def test_rule(fresh, flags, quantization, expected):
    fresh(flags)
    ct2.choose_gemm_backend(quantization)
    assert os.environ.get("CT2_USE_MKL") == expected


def test_the_users_setting_wins(fresh, monkeypatch):
    fresh(AVX2)
    monkeypatch.setenv("CT2_USE_MKL", "1")
    ct2.choose_gemm_backend("float32")
    assert os.environ["CT2_USE_MKL"] == "1"


def test_nothing_changes_once_ctranslate2_is_imported(fresh, monkeypatch):
    """CTranslate2 reads the variable when it is imported: setting it later would claim a choice that is not made."""
    fresh(AVX2)
    monkeypatch.setitem(sys.modules, "ctranslate2", object())
    ct2.choose_gemm_backend("float32")
    assert "CT2_USE_MKL" not in os.environ


@pytest.mark.parametrize(
    ("compute_type", "expected"),
    [
        ("default", "float32"),
        ("int8", "int8"),
        ("int8_float32", "int8_float32"),
        ("float32", "float32"),
        ("auto", None),
    ],
)
def test_the_rule_reads_the_type_computed_in(tmp_path, compute_type, expected):
    """A float32 export loaded with compute_type="int8" multiplies in int8, and must be treated as int8 weights."""
    (tmp_path / ct2.EXPORT_NAME).write_text(json.dumps({"quantization": "float32"}), encoding="utf-8")
    assert ct2._computed_type(str(tmp_path), compute_type) == expected


def test_an_export_that_did_not_record_its_type(tmp_path):
    assert ct2._computed_type(str(tmp_path), "default") is None
