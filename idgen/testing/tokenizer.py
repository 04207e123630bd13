"""A tiny byte-level CLIP BPE tokenizer built in memory: no download, deterministic."""

from __future__ import annotations

from functools import lru_cache
from transformers import CLIPTokenizer

#: Words that become single tokens. Arc2Face's identity prompt "photo of a id person" must
#: tokenize with "id" as one token.
WORDS = (
    "photo", "of", "a", "id", "person", "portrait", "face", "man", "woman", "smiling", "the", "in",
    "high", "quality", "low", "monochrome", "best", "detailed", "realistic", "light", "blurry",
    "and", "with", "sks", "style", "painting", "garden", "city", "night",
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible byte → printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_vocab_and_merges(words=WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP-style vocab (256 byte symbols, the same with `</w>`, one token per merge, then the two
    special tokens) and merges that build each word left to right."""
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    merges: list[tuple[str, str]] = []
    known = set(vocab_list)
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        current = parts[0]
        for part in parts[1:]:
            merged = current + part
            if merged not in known:
                merges.append((current, part))
                vocab_list.append(merged)
                known.add(merged)
            current = merged
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab_list)}, merges


@lru_cache(maxsize=1)
def _vocab_and_merges():
    return build_vocab_and_merges()


def tiny_clip_tokenizer(model_max_length: int = 77):
    """A `transformers.CLIPTokenizer` over the tiny vocabulary (about 560 tokens)."""

    vocab, merges = _vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length)


def tiny_vocab_size() -> int:
    return len(_vocab_and_merges()[0])
