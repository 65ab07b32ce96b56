"""The imported all-MiniLM-L6-v2 (real pretrained weights) against Hugging Face `transformers` BertModel.

The JAX `EncoderClassifier.encode` and its torch_ref mirror must give BertModel's last hidden states within 1e-4
(fp32) on a padded batch, at every position (padding included).
"""

import numpy as np
import pytest
import torch

from jax_transformer.interop import bert

transformers = pytest.importorskip("transformers")
TOL = 1e-4
SENTENCES = [
    "a gripping , beautifully acted film .",
    "the plot is thin and the jokes fall flat , but the soundtrack almost saves it",
    "meh",
]


@pytest.fixture(scope="module")
def setup():
    model_dir = bert.resolve_pretrained("all-MiniLM-L6-v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    hf = transformers.BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    with torch.no_grad():
        expected = hf(
            input_ids=torch.from_numpy(batch["input_ids"]),
            attention_mask=torch.from_numpy(batch["attention_mask"]),
            token_type_ids=torch.from_numpy(batch["token_type_ids"]),
        ).last_hidden_state.numpy()
    return model_dir, batch, expected


def test_hf_bert_config_maps_to_model_config(setup):
    config = bert.bert_model_config(setup[0])
    assert (config.d_model, config.num_heads, config.d_ff, config.num_encoder_layers) == (384, 12, 1536, 6)
    assert (config.activation, config.layer_norm_eps, config.positional) == ("gelu", 1e-12, "learned")
    assert config.type_vocab_size == 2 and config.embedding_norm and not config.scale_embeddings


def test_jax_encoder_matches_hf_bert(setup):
    from flax import nnx

    from jax_transformer.model.transformer import EncoderClassifier

    model_dir, batch, expected = setup
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    model = EncoderClassifier(bert.bert_model_config(model_dir), 2, rngs=nnx.Rngs(0))
    bert.load_bert_weights(model, model_dir)
    model.eval()
    hidden, _ = model.encode(batch["input_ids"], batch["token_type_ids"])
    diff = np.abs(np.asarray(hidden) - expected).max()
    print(f"max |JAX - HF BertModel| = {diff:.2e}")
    assert diff <= TOL


def test_torch_ref_mirror_matches_hf_bert(setup):
    from torch_ref.model import EncoderClassifier

    model_dir, batch, expected = setup
    model = EncoderClassifier(bert.bert_model_config(model_dir), 2).eval()
    weights = bert.hf_to_torch_ref_names(bert.read_hf_weights(model_dir))
    head = {k: v for k, v in model.state_dict().items() if k.startswith("classifier.")}
    model.load_state_dict({**{k: torch.from_numpy(v) for k, v in weights.items()}, **head}, strict=True)
    with torch.no_grad():
        hidden, _ = model.encode(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["token_type_ids"]))
    diff = np.abs(hidden.numpy() - expected).max()
    print(f"max |torch_ref - HF BertModel| = {diff:.2e}")
    assert diff <= TOL


def test_unknown_bert_parameter_is_refused():
    from jax_transformer.interop.torch_convert import ConversionError

    with pytest.raises(ConversionError, match="no counterpart"):
        bert.hf_to_torch_ref_names({"encoder.layer.0.attention.self.rotary.weight": np.zeros(1)})
