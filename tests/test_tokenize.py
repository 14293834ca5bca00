import itertools

import numpy as np
import pytest
import torch

import glasskit as gk
from glasskit.config import TokenizerConfig
from glasskit.errors import ConfigError, DataError
from glasskit.pipeline import load, retrieval_lengths
from glasskit.tokenize import (
    PrefixIndex,
    SidTable,
    build_sid_table,
    collision_stats,
    cosine_table,
    neighbour_codes,
    prototypes,
    same_first_code_counts,
    sid_stats,
)
from glasskit.tokenize.kmeans import balanced_assign, kmeans
from glasskit.tokenize.semantic_ids import resolve_collisions


def _blobs(n=300, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, d)) * 3
    return (centres[rng.integers(0, 6, n)] + rng.normal(size=(n, d)) * 0.3).astype(np.float32)


@pytest.mark.parametrize("method", ["rqvae", "rqkmeans"])
def test_seeded_determinism_and_unique_sids(method):
    x = _blobs()
    cfg = TokenizerConfig(method=method, codebooks=[6, 4, 4], hidden=[16], latent=4, epochs=20,
                          batch_size=128, device="cpu")
    a, _ = build_sid_table(x, cfg, seed=3)
    b, _ = build_sid_table(x, cfg, seed=3)
    np.testing.assert_array_equal(a.codes, b.codes)
    assert len(np.unique(a.codes, axis=0)) == len(x)  # dedup: every item has its own SID
    assert a.levels == 4 and a.sizes[:3] == [6, 4, 4]
    kept, _ = build_sid_table(x, TokenizerConfig(**{**cfg.__dict__, "collisions": "keep"}), seed=3)
    assert kept.levels == 3
    np.testing.assert_array_equal(kept.codes, a.codes[:, :3])


def test_rqkmeans_recovers_blobs_and_reconstructs():
    x = _blobs()
    table, _ = build_sid_table(x, TokenizerConfig(method="rqkmeans", codebooks=[6, 8]), seed=0)
    # one first code per blob: items of a code are close together
    for code in range(6):
        members = x[table.first == code]
        assert len(members) > 0 and members.std(0).mean() < 0.5
    assert table.recon_error < 0.3 * ((x - x.mean(0)) ** 2).sum(1).mean()


def test_balanced_kmeans_caps_clusters():
    x = torch.as_tensor(_blobs(n=100))
    _, codes = kmeans(x, 8, seed=0, balanced=True)
    assert torch.bincount(codes, minlength=8).max() <= 13
    d = torch.rand(50, 5, generator=torch.Generator().manual_seed(0))
    assert torch.bincount(balanced_assign(d), minlength=5).tolist() == [10] * 5


def test_collision_resolution_by_hand():
    codes = np.array([[0, 1], [2, 3], [0, 1], [0, 1], [2, 2]])
    out, extra = resolve_collisions(codes, "dedup")
    assert extra == 3 and out[:, 2].tolist() == [0, 0, 1, 2, 0]
    s = collision_stats(codes)
    assert s["unique_sids"] == 3 and s["collision_rate"] == pytest.approx(0.4)
    assert s["items_sharing_sid"] == pytest.approx(0.6) and s["max_items_per_sid"] == 3


def _table(codes, sizes):
    return SidTable(np.asarray(codes), sizes, len(sizes), [np.eye(sizes[0])], "rqkmeans", "keep", 0.0)


def test_prefix_index_admits_exactly_the_valid_prefixes():
    rng = np.random.default_rng(0)
    sizes = [3, 4, 2]
    codes = np.unique(rng.integers(0, 4, size=(14, 3)) % np.array(sizes), axis=0)
    idx = PrefixIndex(codes, sizes)
    valid = {tuple(c[:level]) for c in codes.tolist() for level in range(4)}
    for level in range(3):
        prefixes = list(itertools.product(*[range(k) for k in sizes[:level]]))
        batch = torch.tensor(prefixes, dtype=torch.long).reshape(len(prefixes), level)
        mask = idx.next_mask(batch)
        for p, m in zip(prefixes, mask.tolist()):
            for c in range(sizes[level]):
                assert m[c] == ((*p, c) in valid), (p, c)
    full = torch.tensor(list(itertools.product(*[range(k) for k in sizes])))
    items = idx.items(full).tolist()
    lookup = {tuple(c): i for i, c in enumerate(codes.tolist())}
    assert items == [lookup.get(tuple(f), -1) for f in full.tolist()]


def test_prototypes_are_per_code_means_and_cosines_match():
    emb = np.array([[1, 0], [3, 0], [0, 2], [0, 4], [1, 1]], dtype=np.float32)
    first = np.array([0, 0, 1, 1, 2])
    protos = prototypes(emb, first, 4)
    np.testing.assert_allclose(protos, [[2, 0], [0, 3], [1, 1], [0, 0]])
    cos = cosine_table(emb, protos)
    expected = np.array([[1, 0, 2**-0.5, 0], [1, 0, 2**-0.5, 0], [0, 1, 2**-0.5, 0],
                         [0, 1, 2**-0.5, 0], [2**-0.5, 2**-0.5, 1, 0]])
    np.testing.assert_allclose(cos, expected, atol=1e-6)


def test_neighbours_exclude_self_and_are_sorted():
    rng = np.random.default_rng(1)
    book = rng.normal(size=(10, 4))
    nb = neighbour_codes(book, 3)
    v = book / np.linalg.norm(book, axis=1, keepdims=True)
    sim = v @ v.T
    for a in range(10):
        assert a not in nb[a]
        assert np.all(np.diff(sim[a, nb[a]]) <= 1e-12)
        others = np.delete(sim[a], [a])
        assert sim[a, nb[a][0]] == pytest.approx(others.max())
    with pytest.raises(gk.GlasskitError, match="neighbour k"):
        neighbour_codes(book, 10)


def test_same_first_code_counts_by_hand():
    first = np.array([0, 1, 0, 2])
    items = np.array([0, 1, 2, 3, 0, 2])
    counts = same_first_code_counts(first, items, np.array([0, 3, 5]), np.array([3, 5, 5]),
                                    np.array([2, 1, 0]))
    assert counts.tolist() == [2, 0, 0]


@pytest.mark.parametrize("bad,match", [
    (np.full((50, 4), np.nan, dtype=np.float32), "NaN or infinite values .first in row 0"),
    (np.vstack([np.ones((49, 4)), [[np.inf, 0, 0, 0]]]).astype(np.float32), "row 49"),
    (np.arange(20, dtype=np.float32).reshape(5, 4), "5 items are fewer than the 8 codes of level 0"),
    (np.ones(5, dtype=np.float32), "2-D"),
])
def test_bad_embeddings(bad, match):
    with pytest.raises(DataError, match=match):
        build_sid_table(bad, TokenizerConfig(method="rqkmeans", codebooks=[8, 4]))


def test_bad_codebooks_and_counts():
    with pytest.raises(ConfigError, match="size 1 at level 1 is below 2"):
        TokenizerConfig(codebooks=[8, 1]).validate()
    with pytest.raises(DataError, match="50 rows but the catalogue has 60"):
        build_sid_table(_blobs(50), TokenizerConfig(method="rqkmeans", codebooks=[4]), n_items=60)


def test_smoke_pipeline_is_cached_and_used(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path))
    cfg = gk.profile("smoke")
    ds, table = load(cfg)
    stats = sid_stats(table, ds.embeddings())
    assert stats["unique_full_sids"] == ds.seqs.n_items
    assert all(u["utilization"] >= 0.75 for u in stats["usage"])
    assert len(list((tmp_path / "tokenizers").glob("*.npz"))) == 1
    _, again = load(cfg)
    np.testing.assert_array_equal(again.codes, table.codes)
    lengths = retrieval_lengths(ds, table.first)
    assert len(lengths) == ds.seqs.n_users and lengths.mean() > 1
