"""sentencepiece tokenizer: explicit special ids, round trips, decode rules, loading errors."""

import io
import os

import numpy as np
import pytest
import sentencepiece as spm

from jax_transformer.config import DataConfig, UserError
from jax_transformer.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, train_tokenizer

WORDS = "the a small big dog cat runs sits on under red blue house tree man woman child ball".split()


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Tokenizer:
    path = tmp_path_factory.mktemp("spm") / "spm.model"
    return train_tokenizer(corpus(), str(path), DataConfig(vocab_size=60))


def test_special_ids_are_explicit(tokenizer):
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    assert [tokenizer.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    tokenizer.check_special_ids()


def test_round_trip_without_bos_eos(tokenizer):
    texts = ["the small dog runs under the tree", "a red ball"]
    ids = tokenizer.encode(texts)
    assert all(BOS_ID not in row and EOS_ID not in row and PAD_ID not in row for row in ids)
    assert tokenizer.decode(ids) == texts


def test_decode_stops_at_eos_and_drops_pad_and_bos(tokenizer):
    (ids,) = tokenizer.encode(["the cat sits"])
    row = [BOS_ID, *ids, EOS_ID, *tokenizer.encode(["dog"])[0], PAD_ID]
    assert tokenizer.decode([row, np.array([BOS_ID, *ids, PAD_ID, PAD_ID])]) == ["the cat sits", "the cat sits"]
    assert tokenizer.decode([[tokenizer.vocab_size + 5]]) == tokenizer.decode([[UNK_ID]])  # out of range: UNK


def test_vocab_size_and_model_type_come_from_config(tmp_path):
    bpe = train_tokenizer(corpus(), str(tmp_path / "bpe.model"), DataConfig(vocab_size=40, spm_model_type="bpe"))
    assert bpe.vocab_size == 40
    assert bpe.decode(bpe.encode(["the blue house"])) == ["the blue house"]
    # a corpus too small for the requested size gives a smaller vocabulary instead of failing
    small = train_tokenizer(corpus(50), str(tmp_path / "small.model"), DataConfig(vocab_size=5000))
    assert 4 < small.vocab_size < 5000


def test_saved_atomically_and_loads_identically(tokenizer, tmp_path):
    path = tmp_path / "sub" / "spm.model"
    tokenizer.save(str(path))
    assert os.listdir(path.parent) == ["spm.model"]  # no temporary file left behind
    loaded = Tokenizer.load(str(path))
    texts = corpus(20, seed=1)
    assert loaded.encode(texts) == tokenizer.encode(texts) and loaded.vocab_size == tokenizer.vocab_size


def test_load_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"no sentencepiece model at .*missing\.model.*fix:"):
        Tokenizer.load(str(tmp_path / "missing.model"))
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"this is not a model")
    with pytest.raises(UserError, match=r"bad\.model is not a valid sentencepiece model.*fix:"):
        Tokenizer.load(str(bad))


def test_models_with_default_sentencepiece_ids_are_rejected(tmp_path):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()), model_writer=model, vocab_size=40, minloglevel=2, hard_vocab_limit=False
    )
    path = tmp_path / "default_ids.model"
    path.write_bytes(model.getvalue())
    with pytest.raises(UserError, match=r"pad/unk/bos/eos ids \(-1, 0, 1, 2\).*--pad_id=0"):
        Tokenizer.load(str(path)).check_special_ids()
