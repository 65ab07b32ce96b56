"""sentencepiece tokenization: one joint source+target vocabulary with explicit special ids.

The paper (§5.1) uses a shared source-target vocabulary (byte-pair encoding, about 37000 tokens for WMT14 en-de), which
is what lets the embeddings be shared (§3.4). We train it with sentencepiece on the training split, in memory, and store
the model as `spm.model` in the run directory, so a resumed run and every inference command tokenize exactly alike.

The special ids are fixed (PAD=0, UNK=1, BOS=2, EOS=3) rather than sentencepiece's defaults (UNK=0, BOS=1, EOS=2, no
PAD) because batching pads with 0 and the model masks id 0: a model with other ids would silently mask real tokens.
"""

import io
import os
from collections.abc import Iterable, Sequence

import sentencepiece as spm

from jax_transformer.config import DataConfig, UserError

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3


class Tokenizer:
    """A sentencepiece model: text <-> lists of ids. Adds no BOS/EOS itself; batching decides where those go."""

    def __init__(self, model_proto: bytes, name: str = "<memory>"):
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except RuntimeError as e:
            raise UserError(
                f"{name} is not a valid sentencepiece model ({str(e).splitlines()[0][:120]}); "
                "fix: delete it so a new one is trained, or point data.spm_model at a .model file from spm_train"
            ) from None
        self._proto = model_proto
        self.name = name

    @classmethod
    def load(cls, path: str) -> "Tokenizer":
        """Read a `.model` file; a missing or unreadable file is a UserError that says how to fix it."""
        if not os.path.isfile(path):
            raise UserError(
                f"no sentencepiece model at {path}; fix: train one by running training on this config "
                "(it writes RUN_DIR/spm.model), or set data.spm_model to an existing .model file"
            )
        with open(path, "rb") as f:
            return cls(f.read(), name=path)

    def save(self, path: str) -> None:
        """Write the model atomically (temporary file + rename), so a crash never leaves half a model behind."""
        _write_atomic(path, self._proto)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def pad_id(self) -> int:
        return self._sp.pad_id()

    @property
    def unk_id(self) -> int:
        return self._sp.unk_id()

    @property
    def bos_id(self) -> int:
        return self._sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self._sp.eos_id()

    def check_special_ids(self) -> None:
        """Raise a UserError unless PAD/UNK/BOS/EOS are 0/1/2/3, the ids batching and the model rely on."""
        found = (self.pad_id, self.unk_id, self.bos_id, self.eos_id)
        if found != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise UserError(
                f"{self.name} has pad/unk/bos/eos ids {found}, but this project needs "
                f"{(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}; fix: retrain it with spm_train --pad_id=0 --unk_id=1 "
                "--bos_id=2 --eos_id=3, or leave data.spm_model empty to train one"
            )

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without BOS/EOS."""
        return self._sp.encode(list(texts), out_type=int, num_threads=os.cpu_count() or 1)

    def encode_one(self, text: str) -> list[int]:
        """Token ids of one text, without BOS/EOS (in the calling thread: what a streaming reader's threads call)."""
        return self._sp.encode(text, out_type=int)

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Texts of id sequences (lists or numpy rows): stops at the first EOS, drops PAD and BOS.

        Ids outside the vocabulary (a model whose output layer is larger than the vocabulary) decode as UNK rather
        than crash, so a half-trained model can always be inspected.
        """
        cleaned = []
        for row in ids:
            out = []
            for i in (int(i) for i in row):
                if i == self.eos_id:
                    break
                if i in (self.pad_id, self.bos_id):
                    continue
                out.append(i if 0 <= i < self.vocab_size else self.unk_id)
            cleaned.append(out)
        return self._sp.decode(cleaned)

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))


def train_tokenizer(sentences: Iterable[str], model_path: str, cfg: DataConfig) -> Tokenizer:
    """Train a joint sentencepiece vocabulary on `sentences` (source and target mixed) and save it at `model_path`.

    Training happens in memory (sentence_iterator + model_writer): no temporary corpus file. The vocabulary size is a
    soft limit (hard_vocab_limit=False), so a corpus too small for `cfg.vocab_size` yields a smaller vocabulary instead
    of failing; read the real size from `Tokenizer.vocab_size`.
    """
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=cfg.vocab_size,
            model_type=cfg.spm_model_type,
            character_coverage=cfg.spm_character_coverage,
            input_sentence_size=cfg.spm_max_sentences,
            shuffle_input_sentence=True,
            hard_vocab_limit=False,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,  # sentencepiece's per-step log is thousands of lines
        )
    except RuntimeError as e:
        raise UserError(
            f"sentencepiece training failed ({str(e).splitlines()[0][:160]}); fix: check that the training split "
            "has text, or change data.vocab_size / data.spm_model_type"
        ) from None
    tokenizer = Tokenizer(model.getvalue(), name=model_path)
    tokenizer.save(model_path)
    return tokenizer


def _write_atomic(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
