"""BERT's WordPiece tokenizer in plain Python, read from a `tokenizers` tokenizer.json, for the processes that only
tokenize (the state_serializer node): `tokenizers` and its vocabulary cost such a process 12 MB, this 5 MB.

It handles exactly one pipeline, the one BERT-family tokenizer.json files hold (`supports` says whether a file
is one): the BertNormalizer (clean text, space around CJK ideographs, strip accents, lowercase), the
BertPreTokenizer (split on whitespace and punctuation), WordPiece with a continuing-subword prefix, and a
[CLS] $A [SEP] template; added tokens in the text are matched first, as `tokenizers` does. Ids and character
offsets are those of `tokenizers` (test/test_tokenizer_wordpiece.py compares the two on many texts).
"""
from __future__ import annotations

import unicodedata

from ..errors import ModelFileError


def supports(spec: dict) -> bool:
    """Whether a parsed tokenizer.json is the pipeline this module implements."""
    model, norm = spec.get("model") or {}, spec.get("normalizer") or {}
    post = spec.get("post_processor") or {}
    template = [next(iter(piece)) for piece in post.get("single", [])] if post.get("type") == "TemplateProcessing" \
        else []
    return (model.get("type") == "WordPiece" and norm.get("type") == "BertNormalizer"
            and (spec.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
            and template == ["SpecialToken", "Sequence", "SpecialToken"])


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or ch.isspace()


def _is_punctuation(ch: str) -> bool:
    return (ch.isascii() and not ch.isalnum() and ch.isprintable() and ch != " ") or \
        unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


class WordPiece:
    def __init__(self, spec: dict, where: str):
        if not supports(spec):
            raise ModelFileError(f"{where}: not a BERT WordPiece tokenizer.json")
        model, norm = spec["model"], spec["normalizer"]
        self.vocab: dict[str, int] = model["vocab"]
        self.unk_id = self.vocab[model["unk_token"]]
        self.prefix = model.get("continuing_subword_prefix", "##")
        self.max_word_chars = int(model.get("max_input_chars_per_word", 100))
        self.clean_text = bool(norm.get("clean_text", True))
        self.chinese_chars = bool(norm.get("handle_chinese_chars", True))
        self.lowercase = bool(norm.get("lowercase", True))
        strip = norm.get("strip_accents")
        self.strip_accents = self.lowercase if strip is None else bool(strip)
        single = spec["post_processor"]["single"]
        special = spec["post_processor"]["special_tokens"]
        self.first_id = special[single[0]["SpecialToken"]["id"]]["ids"][0]
        self.last_id = special[single[2]["SpecialToken"]["id"]]["ids"][0]
        # Added tokens are cut out of the raw text before anything else, longest first.
        self.added = sorted(((t["content"], t["id"]) for t in spec.get("added_tokens", []) if t["content"]),
                            key=lambda t: -len(t[0]))
        self._added_starts = frozenset(c[0] for c, _ in self.added)  # most characters start none of them

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """(ids, character offsets into text) with the template's special tokens ((0, 0) offsets)."""
        ids, offsets = [self.first_id], [(0, 0)]
        for start, end, added_id in self._split_added(text):
            if added_id is not None:
                ids.append(added_id)
                offsets.append((start, end))
                continue
            for word in self._words(text, start, end):
                self._wordpiece(word, ids, offsets)
        ids.append(self.last_id)
        offsets.append((0, 0))
        return ids, offsets

    def _split_added(self, text: str):
        """(start, end, id of the added token there or None) pieces covering text."""
        out, plain, i = [], 0, 0
        while i < len(text):
            hit = None if text[i] not in self._added_starts else \
                next(((c, t) for c, t in self.added if text.startswith(c, i)), None)
            if hit is None:
                i += 1
                continue
            if plain < i:
                out.append((plain, i, None))
            out.append((i, i + len(hit[0]), hit[1]))
            i = plain = i + len(hit[0])
        if plain < len(text):
            out.append((plain, len(text), None))
        return out

    def _normalized(self, text: str, start: int, end: int) -> list[tuple[str, int]]:
        """The normalized characters of text[start:end], each with the index of the character it came from."""
        out = []
        for i in range(start, end):
            ch = text[i]
            if self.clean_text:
                if ch == "\0" or ch == "\ufffd" or _is_control(ch):
                    continue
                if _is_whitespace(ch):
                    ch = " "
            if ch.isascii():  # the serializers' texts: NFD changes nothing, no marks, no CJK
                out.append((ch.lower() if self.lowercase else ch, i))
                continue
            pieces = unicodedata.normalize("NFD", ch) if self.strip_accents else ch
            for piece in pieces:
                if self.strip_accents and unicodedata.category(piece) == "Mn":
                    continue
                for c in (piece.lower() if self.lowercase else piece):
                    if self.chinese_chars and _is_cjk(ord(c)):
                        out += [(" ", i), (c, i), (" ", i)]
                    else:
                        out.append((c, i))
        return out

    def _words(self, text: str, start: int, end: int):
        """Whitespace- and punctuation-split words: lists of (char, source index)."""
        word: list[tuple[str, int]] = []
        for c, i in self._normalized(text, start, end):
            if _is_whitespace(c):
                if word:
                    yield word
                word = []
            elif _is_punctuation(c):
                if word:
                    yield word
                yield [(c, i)]
                word = []
            else:
                word.append((c, i))
        if word:
            yield word

    def _wordpiece(self, word: list[tuple[str, int]], ids: list[int], offsets: list[tuple[int, int]]) -> None:
        chars = "".join(c for c, _ in word)
        span = (word[0][1], word[-1][1] + 1)
        if len(chars) > self.max_word_chars:
            ids.append(self.unk_id)
            offsets.append(span)
            return
        pieces, start = [], 0
        while start < len(chars):
            end = len(chars)
            while end > start:
                piece = chars[start:end] if start == 0 else self.prefix + chars[start:end]
                if piece in self.vocab:
                    pieces.append((self.vocab[piece], start, end))
                    break
                end -= 1
            if end == start:  # no piece matches: the whole word is unknown
                ids.append(self.unk_id)
                offsets.append(span)
                return
            start = end
        for piece_id, s, e in pieces:
            ids.append(piece_id)
            offsets.append((word[s][1], word[e - 1][1] + 1))
