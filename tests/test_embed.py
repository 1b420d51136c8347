"""Embedder: the bundled MiniLM, pooling checked against a manual reference, padding invariance, and the disk cache."""

from __future__ import annotations

import numpy as np
import pytest

from phi1lib import embed
from phi1lib.embed import Embedder
from phi1lib.errors import ConfigError

TEXTS = ["def add(a, b):\n    return a + b\n",
         "class Stack:\n    '''LIFO container.'''\n    def push(self, item):\n        self.items.append(item)\n",
         "import os\nPATH = os.environ.get('HOME')\n" * 8]


@pytest.fixture(scope="module")
def shared():
    return Embedder(cache=False, progress=False, max_length=32)


def test_minilm_folder_is_found():
    path = embed.minilm_path()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert embed.resolve_model("minilm-local") == str(path)
    assert embed.resolve_model("Salesforce/codegen-350M-mono") == "Salesforce/codegen-350M-mono"


def test_mean_pooling_matches_a_manual_reference(shared):
    import torch
    from transformers import AutoModel, AutoTokenizer

    got = shared.embed(TEXTS[:2])
    assert got.shape == (2, 384) and got.dtype == np.float32
    tok = AutoTokenizer.from_pretrained(embed.minilm_path())
    model = AutoModel.from_pretrained(embed.minilm_path()).eval()
    for i, text in enumerate(TEXTS[:2]):
        enc = tok(text, truncation=True, max_length=32, return_tensors="pt")
        with torch.no_grad():
            ref = model(**enc).last_hidden_state[0].mean(0).numpy()  # one text: no padding, plain mean
        np.testing.assert_allclose(got[i], ref, atol=1e-4)


@pytest.mark.parametrize("pooling", ["mean", "last", "cls"])
def test_pooling_ignores_padding(shared, pooling):
    shared.pooling = pooling  # pooling happens after the forward pass: one loaded model serves all three
    try:
        alone = shared.embed([TEXTS[0]])
        together = shared.embed([TEXTS[0], TEXTS[2]])  # TEXTS[0] gets padded to TEXTS[2]'s length
    finally:
        shared.pooling = "mean"
    np.testing.assert_allclose(alone[0], together[0], atol=1e-4)
    assert not np.allclose(together[0], together[1])


def _cached(tmp_path, shared, **kw):
    """An embedder with a disk cache that borrows the already loaded model (loading costs seconds)."""
    e = Embedder(cache=tmp_path, progress=False, **{"max_length": 32, **kw})
    e._model, e._tokenizer = shared._model, shared._tokenizer
    return e


def test_rerun_embeds_nothing(tmp_path, shared):
    shared.load()
    first = _cached(tmp_path, shared)
    a = first.embed(TEXTS + [TEXTS[0]])  # a duplicate is embedded once
    assert first.texts_embedded_ == 3 and first.model_calls_ >= 1
    np.testing.assert_array_equal(a[0], a[3])
    again = Embedder(cache=tmp_path, progress=False, max_length=32)
    b = again.embed(TEXTS)
    assert again.model_calls_ == 0 and again.texts_embedded_ == 0 and again._model is None  # not even loaded
    np.testing.assert_array_equal(a[:3], b)
    c = again.embed(TEXTS + ["x = 42\n"])
    assert again.texts_embedded_ == 1 and c.shape == (4, 384)


def test_plan_predicts_what_embed_runs(tmp_path, monkeypatch):
    """plan() counts the texts and padded tokens embed() then sends through the model, cache hits excluded."""
    texts = TEXTS + [TEXTS[1], "x = 1\n", "def f():\n    pass\n" * 20]
    emb = Embedder(cache=tmp_path, progress=False, max_length=32, batch_size=2)
    emb.embed(texts[:2])  # two of them cached
    planned = emb.plan(texts)
    seen = []
    real = emb._forward
    monkeypatch.setattr(emb, "_forward", lambda batch: seen.append(batch) or real(batch))
    emb.embed(texts)
    tok = emb.tokenizer
    ran = sum(len(b) * max(len(tok(t[: 32 * 16], truncation=True, max_length=32)["input_ids"]) for t in b) for b in seen)
    assert planned == (sum(map(len, seen)), ran) and planned[0] == 3  # 6 texts: 2 cached, 1 duplicate
    assert emb.plan(texts) == (0, 0)  # everything cached now


def test_cache_is_keyed_by_model_settings(tmp_path, shared):
    shared.load()
    _cached(tmp_path, shared).embed(TEXTS[:1])
    other = _cached(tmp_path, shared, max_length=16)
    other.embed(TEXTS[:1])
    assert other.texts_embedded_ == 1  # different max_length: a different vector, so a different cache
    assert len(list(tmp_path.iterdir())) == 2


def test_torn_shard_is_ignored(tmp_path, shared):
    shared.load()
    e = _cached(tmp_path, shared)
    e.embed(TEXTS[:1])
    folder = next(tmp_path.iterdir())
    (folder / "deadbeef.npz").write_bytes(b"PK\x03\x04 torn")
    again = Embedder(cache=tmp_path, progress=False, max_length=32)
    again.embed(TEXTS[:1])
    assert again.texts_embedded_ == 0


def test_bad_settings(tmp_path):
    with pytest.raises(ConfigError, match="pooling"):
        Embedder(pooling="max")
    with pytest.raises(ConfigError, match="max_length"):
        Embedder(max_length=2)
    with pytest.raises(ConfigError, match="cannot load"):
        Embedder(str(tmp_path), cache=False, progress=False).embed(["x = 1"])


def test_plan_calls_predicts_embed_called_batch_by_batch(tmp_path, monkeypatch):
    """plan_calls() plans several embed() calls in turn, each on its own (a text in two calls counts in both, as a
    task embedding batch by batch without a cache runs it twice); the tokenizer is loaded once for all of them."""
    import transformers

    calls = [TEXTS[:2], [TEXTS[1], "x = 1\n"], ["def f():\n    pass\n" * 20]]
    emb = Embedder(cache=None, progress=False, max_length=32, batch_size=2)
    loads = []
    real_load = transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda *a, **k: loads.append(a) or real_load(*a, **k))
    planned = emb.plan_calls(iter(calls))
    assert len(loads) == 1 and planned == tuple(map(sum, zip(*(emb.plan(c) for c in calls))))
    seen = []
    real = emb._forward
    monkeypatch.setattr(emb, "_forward", lambda batch: seen.append(batch) or real(batch))
    for c in calls:
        emb.embed(c)
    assert planned[0] == sum(map(len, seen)) == 5
