import numpy as np
import pytest
from conftest import write

import glasskit as gk
from glasskit.data import prepare, sources
from glasskit.errors import ConfigError, DataError


def _cfg(dataset, data_dir=None, **kw):
    return gk.profile("quick", **{"data.dataset": dataset, "data.data_dir": data_dir, **kw})


def test_ml100k_real_counts():
    ds = prepare(_cfg("ml-100k"))
    s = ds.stats()
    assert (s["users"], s["items"], s["interactions"]) == (943, 1682, 100_000)
    assert ds.raw.items.loc[ds.raw.items["item"] == 1, "title"].item() == "Toy Story"
    assert set(ds.raw.items.columns) >= {"title", "genres", "year"}


def test_ml100k_checksum_mismatch(tmp_path):
    root = sources.fetch_ml100k()
    bad = tmp_path / "ml100k"
    bad.mkdir()
    (bad / "ml-100k.inter").write_bytes((root / "ml-100k.inter").read_bytes()[:-10])
    (bad / "ml-100k.item").write_bytes((root / "ml-100k.item").read_bytes())
    with pytest.raises(DataError, match=r"ml-100k.inter: checksum mismatch"):
        sources.load_ml100k(bad)


def test_ml_latest_small_real_counts(ml_latest_small):
    ds = prepare(_cfg("ml-latest-small", str(ml_latest_small)))
    s = ds.stats()
    assert (s["users"], s["items"], s["interactions"], s["length_max"]) == (610, 9724, 100_836, 2698)
    assert ds.raw.items["title"].iloc[0] == "Toy Story" and ds.raw.items["year"].iloc[0] == "1995"


def test_ml_latest_small_needs_data_dir():
    with pytest.raises(DataError, match="needs data_dir"):
        prepare(_cfg("ml-latest-small"))


def test_ml1m_fixture(ml1m_dir):
    with pytest.warns(UserWarning, match="dropped 1 user"):
        ds = prepare(_cfg("ml-1m", str(ml1m_dir)))
    assert ds.seqs.n_users == 3 and ds.seqs.n_items == 4 and ds.seqs.dropped_users == 1
    assert "Cuckoo" in ds.texts()[list(ds.seqs.item_ids).index(1193)]


def test_kuairec_positives_and_exposure_negatives(kuairec_dir):
    raw = sources.load_kuairec(kuairec_dir, "big")
    assert set(raw.interactions["label"]) == {0, 1}
    assert len(raw.interactions) == 14  # negatives kept as exposures
    ds = prepare(_cfg("kuairec", str(kuairec_dir)))
    # watch_ratio > 1: 183, 3649, 5262, 1963, 8234 per user
    assert ds.seqs.n_items == 5 and len(ds.seqs.items) == 10
    assert set(ds.seqs.item_ids) == {183, 3649, 5262, 1963, 8234}
    assert "caption of 183" in ds.texts()[0] or "caption of 183" in " ".join(ds.texts())
    small = sources.load_kuairec(kuairec_dir, "small")
    assert len(small.interactions) == 7


def test_csv_with_embeddings(csv_dir):
    ds = prepare(_cfg("csv", str(csv_dir)))
    assert ds.seqs.n_users == 3 and ds.seqs.n_items == 4
    emb = ds.embeddings()
    # rows follow item_embeddings_ids.csv (w, x, y, z), catalogue order is sorted ids (w, x, y, z)
    np.testing.assert_allclose(emb, np.eye(4, 3) + 0.1, rtol=1e-6)
    assert ds.texts()[1] == "Ex | one"


def test_csv_embedding_shape_mismatch(csv_dir):
    np.save(csv_dir / "item_embeddings.npy", np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(DataError, match=r"item_embeddings.npy: shape \(3, 2\) does not match the 4"):
        prepare(_cfg("csv", str(csv_dir)))


def test_csv_nan_embeddings(csv_dir):
    m = np.ones((4, 2), dtype=np.float32)
    m[2, 1] = np.nan
    np.save(csv_dir / "item_embeddings.npy", m)
    with pytest.raises(DataError, match="NaN"):
        prepare(_cfg("csv", str(csv_dir))).embeddings()


@pytest.mark.parametrize("text,match", [
    ("user_id,item_id\nu,i\n", r"interactions.csv: missing column\(s\) \['timestamp'\]"),
    ("user_id,item_id,timestamp\nu,i,yesterday\n",
     r"interactions.csv: column 'timestamp' must be numeric; row 0 holds 'yesterday'"),
    ("", "interactions.csv: file is empty"),
    ('user_id,item_id,timestamp\n"u,i,1\n', "interactions.csv: malformed file"),
])
def test_csv_bad_files(tmp_path, text, match):
    write(tmp_path / "interactions.csv", text)
    with pytest.raises(DataError, match=match):
        prepare(_cfg("csv", str(tmp_path)))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"interactions.csv: file not found"):
        prepare(_cfg("csv", str(tmp_path)))
    with pytest.raises(DataError, match="not a directory"):
        prepare(_cfg("csv", str(tmp_path / "nope")))


def test_duplicate_rows_dropped_or_refused(csv_dir):
    path = csv_dir / "interactions.csv"
    path.write_text(path.read_text() + "a,x,100,1\na,x,100,1\n")
    with pytest.warns(UserWarning, match=r"interactions.csv: 2 duplicate row\(s\)"):
        ds = prepare(_cfg("csv", str(csv_dir)))
    assert len(ds.seqs.items) == 12
    with pytest.raises(DataError, match=r"2 duplicate row\(s\).*first at row 12"):
        prepare(_cfg("csv", str(csv_dir), **{"data.duplicates": "error"}))


def test_short_users_dropped_with_count(tmp_path):
    write(tmp_path / "interactions.csv",
          "user_id,item_id,timestamp\n1,a,1\n1,b,2\n1,c,3\n2,a,1\n2,b,2\n3,c,5\n")
    with pytest.warns(UserWarning, match=r"dropped 2 user\(s\) with fewer than 3"):
        ds = prepare(_cfg("csv", str(tmp_path)))
    assert ds.seqs.n_users == 1 and ds.stats()["dropped_users"] == 2


def test_no_user_long_enough(tmp_path):
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\n1,a,1\n2,b,2\n")
    with pytest.raises(DataError, match="no user has at least 3"), pytest.warns(UserWarning):
        prepare(_cfg("csv", str(tmp_path)))


def test_kuairec_missing_column(kuairec_dir):
    p = kuairec_dir / "big_matrix.csv"
    p.write_text(p.read_text().replace("watch_ratio", "ratio"))
    with pytest.raises(DataError, match=r"big_matrix.csv: missing column\(s\) \['watch_ratio'\]"):
        sources.load_kuairec(kuairec_dir)


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown dataset 'movielens'"):
        gk.profile("quick", **{"data.dataset": "movielens"})
