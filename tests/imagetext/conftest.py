"""Fixtures of the image-text model tests: a CLIP tokenizer built offline."""

from __future__ import annotations

import gzip
import json

import pytest


@pytest.fixture(scope="session")
def clip_tokenizer_dir(tmp_path_factory):
    """A folder with vocab.json and merges.txt of the OpenAI CLIP BPE, made from open_clip's bundled file."""
    tokenizer_mod = pytest.importorskip("open_clip.tokenizer")
    merges = gzip.open(tokenizer_mod.default_bpe()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(tokenizer_mod.bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    d = tmp_path_factory.mktemp("clip_tokenizer")
    (d / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}))
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return d


@pytest.fixture(scope="session")
def clip_tokenizer(clip_tokenizer_dir):
    """transformers' CLIPTokenizer over the same BPE (the ids of open_clip's tokenizer)."""
    transformers = pytest.importorskip("transformers")
    return transformers.CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir))
