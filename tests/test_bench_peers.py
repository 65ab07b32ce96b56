"""bench/peers.py compares like with like: its torch.nn.Transformer peer is our model (same logits from the same
weights, post- and pre-norm) with dropout at the same sites and rates, and the script runs end to end."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from jax_transformer.config import PRESETS, ModelConfig
from torch_ref.model import Transformer as TorchTransformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAD = 0


@pytest.fixture
def peers(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))  # bench scripts import their siblings by name
    import peers

    return peers


def small_config(norm: str, **overrides) -> ModelConfig:
    fields = dict(PRESETS["test"], vocab_size=50, max_len=32, norm_position=norm)
    return ModelConfig(**{**fields, **overrides})


def random_torch_ref(config: ModelConfig, seed: int) -> TorchTransformer:
    """torch_ref with noise on every parameter (1-D ones too: LayerNorm scales of 1 and biases of 0 hide mix-ups)."""
    torch.manual_seed(seed)
    model = TorchTransformer(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.15 * torch.randn_like(parameter))
    return model.eval()


def batch(seed: int, rows: int = 3, src_len: int = 7, tgt_len: int = 6):
    rng = np.random.default_rng(seed)
    src = rng.integers(4, 50, (rows, src_len))
    tgt = rng.integers(4, 50, (rows, tgt_len))
    for row, (n_src, n_tgt) in enumerate([(7, 6), (4, 3), (2, 5)][:rows]):
        src[row, n_src:], tgt[row, n_tgt:] = PAD, PAD
    return torch.as_tensor(src), torch.as_tensor(tgt)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_nn_transformer_peer_is_our_model(peers, norm):
    config = small_config(norm)
    reference = random_torch_ref(config, seed=1)
    peer = peers.build_nn_transformer(config, reference.state_dict()).eval()
    src, tgt = batch(seed=2)
    with torch.no_grad():
        memory, src_mask = reference.encode(src)
        expected = reference.decode(tgt, memory, src_mask)
        got = peer(src, tgt)
    real = tgt != PAD  # padded target positions are not compared (their outputs are never used)
    scale = expected[real].abs().max()
    assert torch.allclose(got[real], expected[real], rtol=0, atol=1e-5 * scale), (
        f"max |diff| {(got[real] - expected[real]).abs().max():.3g} (logits up to {scale:.3g})"
    )
    # A different norm placement gives other logits from the same weights: the comparison can fail.
    other = peers.build_nn_transformer(dataclasses.replace(config, norm_position={"post": "pre", "pre": "post"}[norm]),
                                       _with_final_norms(reference.state_dict(), config))  # fmt: skip
    with torch.no_grad():
        assert not torch.allclose(other.eval()(src, tgt)[real], expected[real], atol=1e-2 * scale)


def _with_final_norms(state_dict: dict, config: ModelConfig) -> dict:
    """The state dict with final LayerNorms (a pre-norm model has them, a post-norm one not): noise-free ones."""
    out = dict(state_dict)
    for stack in ("encoder", "decoder"):
        out.setdefault(f"{stack}.final_norm.weight", torch.ones(config.d_model))
        out.setdefault(f"{stack}.final_norm.bias", torch.zeros(config.d_model))
    return out


def dropout_calls(model: torch.nn.Module, src, tgt, forward) -> list[float]:
    """The rate of every dropout applied in one training-mode forward pass, sorted (nn.Dropout modules, and the
    attention-weight dropout inside each nn.MultiheadAttention call, which is a float attribute, not a module)."""
    rates, hooks = [], []
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            hooks.append(module.register_forward_hook(lambda m, i, o: rates.append(m.p)))
        elif isinstance(module, torch.nn.MultiheadAttention):
            hooks.append(module.register_forward_hook(lambda m, i, o: rates.append(float(m.dropout))))
    model.train()
    forward(src, tgt)
    for hook in hooks:
        hook.remove()
    return sorted(rates)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_nn_transformer_peer_drops_out_where_we_do(peers, norm):
    # Three different rates, so that each site is told apart by its rate.
    config = small_config(norm, dropout=0.3, attention_dropout=0.1, ffn_dropout=0.2)
    reference = random_torch_ref(config, seed=3)
    peer = peers.build_nn_transformer(config, reference.state_dict())
    src, tgt = batch(seed=4)
    ours = dropout_calls(reference, src, tgt, lambda s, t: reference.decode(t, *reference.encode(s)))
    theirs = dropout_calls(peer, src, tgt, peer)
    layers = config.num_encoder_layers + config.num_decoder_layers
    assert ours.count(0.3) == 2 + 2 * config.num_encoder_layers + 3 * config.num_decoder_layers  # embeddings, residuals
    assert ours.count(0.1) == config.num_encoder_layers + 2 * config.num_decoder_layers  # attention weights
    assert ours.count(0.2) == layers  # feed-forward activation
    assert theirs == ours
    # nn.Transformer's own default (one rate everywhere) would not pass.
    default = torch.nn.Transformer(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                                   dim_feedforward=64, dropout=0.3, batch_first=True)  # fmt: skip
    emb = torch.nn.Embedding(50, 32)
    untouched = dropout_calls(default, src, tgt, lambda s, t: default(emb(s), emb(t)))
    assert untouched != ours


def test_peers_bench_runs():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "peers.py"), "--sizes", "test", "--steps", "1", "--warmup", "1",
         "--precisions", "fp32", "--peak-size", "64"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "-norm: d32" in line]
    names = sorted((line.split("|")[1].strip(), "pre-norm" in line) for line in rows)
    expected = [("HF Marian", False), ("HF Pegasus", True), ("jax", False), ("jax", True), ("nn.Transformer", False),
                ("nn.Transformer", True), ("torch_ref", False), ("torch_ref", True)]  # fmt: skip
    assert names == expected
    # Same weights, batch and loss: the three torch implementations end with the same loss (the test preset has no
    # dropout), printed as "loss after 2 steps X".
    for norm in ("post", "pre"):
        losses = {line.split("loss after 2 steps ")[1] for line in out.stdout.splitlines()
                  if f"fp32 test {norm}-norm" in line and not line.startswith("- jax")}  # fmt: skip
        assert len(losses) == 1, losses
