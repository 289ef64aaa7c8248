"""Thin wrapper over a `tokenizers` tokenizer.json: special tokens, budgeted truncation, pad id.

With plain_python=True a BERT WordPiece file is tokenized by backbone/wordpiece.py instead (the same ids and
offsets without importing `tokenizers`: 7 MB less in a process that only tokenizes); other files still use
`tokenizers`.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelFileError

_PAD_CANDIDATES = ("[PAD]", "<pad>", "<|finetune_right_pad_id|>", "<|end_of_text|>")


class Tokenizer:
    def __init__(self, path: str | Path, plain_python: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: tokenizer file not found")
        self._hf_tok = self._wordpiece = None
        if plain_python:
            from ..fileio import read_json_object
            from .wordpiece import supports, WordPiece

            spec = read_json_object(self.path, ModelFileError)
            if supports(spec):
                self._wordpiece = WordPiece(spec, str(self.path))
                vocab, padding = self._wordpiece.vocab, spec.get("padding") or {}
                pad_id = padding.get("pad_id")
                if pad_id is None:
                    pad_id = next((vocab[t] for t in _PAD_CANDIDATES if t in vocab), 0)
                self.pad_id: int = pad_id
        if self._wordpiece is None:
            tok = self._hf
            pad_id = tok.padding["pad_id"] if tok.padding else None
            if pad_id is None:
                pad_id = next((tok.token_to_id(t) for t in _PAD_CANDIDATES if tok.token_to_id(t) is not None), 0)
            self.pad_id = pad_id
        self.truncated_count = 0  # texts cut to the token budget so far

    @property
    def _hf(self):
        """The `tokenizers` tokenizer (built on first use where plain_python tokenizes)."""
        if self._hf_tok is None:
            from tokenizers import Tokenizer as _HFTokenizer

            try:
                tok = _HFTokenizer.from_file(str(self.path))
            except Exception as e:  # the Rust parser raises a bare Exception subclass
                raise ModelFileError(f"{self.path}: not a valid tokenizer.json ({_first_line(e)})") from None
            # We pad and truncate ourselves (batches pad to their own longest sequence).
            tok.no_padding()
            tok.no_truncation()
            self._hf_tok = tok
        return self._hf_tok

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size(with_added_tokens=True)

    def encode_batch(self, texts: list[str], max_tokens: int | None = None) -> list[list[int]]:
        """Token ids with special tokens; sequences over max_tokens are cut, keeping a final special token
        (e.g. [SEP]) as the last id.
        """
        return [ids for ids, _ in self._encode(texts, max_tokens)]

    def encode_aligned(self, texts: list[str], spans, max_tokens: int | None = None):
        """(token ids, token fields) per text: token_fields[j] is the index of the field whose character span
        (spans[i][f] = (start, end), from Serializer.render; or a tuple of such spans, a field in several pieces)
        token j overlaps, or -1 (special tokens, names, punctuation between values). Truncation cuts both lists
        alike.
        """
        ids_out, fields_out = [], []
        for (ids, offsets), text_spans in zip(self._encode(texts, max_tokens), spans):
            # Tokens and spans both run left to right: one sweep, not a search per token (the 40 Hz path).
            order = sorted(_pieces(text_spans))
            fields, k = [], 0
            for start, end in offsets:
                while k < len(order) and order[k][1] <= start:
                    k += 1
                inside = end > start and k < len(order) and order[k][0] < end
                fields.append(order[k][2] if inside else -1)
            ids_out.append(ids)
            fields_out.append(fields)
        return ids_out, fields_out

    def _encode(self, texts: list[str], max_tokens: int | None):
        if max_tokens is not None and max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2, got {max_tokens}")
        out = []
        for ids, offsets, last_special in self._encode_full(texts):
            if max_tokens is not None and len(ids) > max_tokens:
                self.truncated_count += 1
                keep = list(range(max_tokens - 1)) + [len(ids) - 1] if last_special else list(range(max_tokens))
                ids, offsets = [ids[k] for k in keep], [offsets[k] for k in keep]
            out.append((ids, offsets))
        return out

    def _encode_full(self, texts):
        """(ids, offsets, whether the last id is a special token) per text, untruncated."""
        if self._wordpiece is not None:
            return [(*self._wordpiece.encode(text), True) for text in texts]
        return [(list(enc.ids), list(enc.offsets), bool(enc.special_tokens_mask and enc.special_tokens_mask[-1]))
                for enc in self._hf.encode_batch(list(texts), add_special_tokens=True)]

    def count_tokens(self, text: str) -> int:
        """Number of ids for ``text`` with special tokens, before any truncation."""
        return len(self._encode_full([text])[0][0])

    def decode(self, ids: list[int]) -> str:
        return self._hf.decode(ids)

    def to_str(self) -> str:
        return self._hf.to_str()


def _pieces(text_spans) -> list[tuple[int, int, int]]:
    """(start, end, field) of every piece: a field's entry is one (start, end) span or a tuple of them."""
    out = []
    for f, span in enumerate(text_spans):
        for start, end in (span if span and isinstance(span[0], (tuple, list)) else (span,)):
            out.append((start, end, f))
    return out


def special_token_ids(path: str | Path) -> frozenset:
    """Ids of a tokenizer.json's special tokens ([CLS], [SEP], <s>, ...), its unknown token left out (that one
    stands for text), without building the tokenizer (an encoder that only gets token ids needs no vocabulary).
    """
    from ..fileio import read_json_object

    d = read_json_object(path, ModelFileError)
    unk = (d.get("model") or {}).get("unk_token")
    return frozenset(t["id"] for t in d.get("added_tokens", []) if t.get("special") and t.get("content") != unk)


def _first_line(e: Exception) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__
