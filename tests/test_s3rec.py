"""The S3-Rec layout of the Amazon benchmarks (issue 21): format, checksums, bad files, the
published protocol as a profile."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, write

import glasskit as gk
from glasskit.data import prepare
from glasskit.data.sources import load_s3rec
from glasskit.errors import DataError
from glasskit.evaluation import primary_ranking

AMAZON = ROOT.parent / "shared" / "data" / "amazon-s3rec"


@pytest.fixture
def s3rec_dir(tmp_path):
    d = tmp_path / "s3rec"
    write(d / "Mini.txt", "1 1 2 3 4 5\n2 4 5 6 7 8\n3 9 10 11 12 4 5 2\n")
    attrs = {str(i): [1, 2, 10 + i % 3] for i in range(1, 13)}
    write(d / "Mini_item2attributes.json", json.dumps(attrs))
    return d


def test_lines_become_users_in_order_with_attributes_as_tokens(s3rec_dir):
    raw = load_s3rec(s3rec_dir, "Mini")
    inter = raw.interactions
    assert raw.name == "s3rec/Mini" and raw.content == "tokens"
    assert len(inter) == 5 + 5 + 7
    user3 = inter[inter["user"] == 3]
    assert user3["item"].tolist() == [9, 10, 11, 12, 4, 5, 2]  # file order is time
    assert user3["timestamp"].tolist() == list(range(7))
    items = raw.items.set_index("item")
    assert items.loc[4, "attributes"] == "a1 a2 a11"


def test_prepared_with_tfidf_attribute_embeddings_and_the_published_protocol(s3rec_dir, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))
    cfg = gk.configure("s3rec", data_dir=str(s3rec_dir), model="tiger",
                       **{"data.name": "Mini", "embed.dim": 4})
    ds = prepare(cfg)
    assert ds.seqs.n_users == 3 and ds.seqs.n_items == 12
    assert primary_ranking(ds) == "unmasked"  # TIGER's Table 1: no history masking
    emb = ds.embeddings()
    assert emb.shape == (12, 4)
    # items with the same attributes (1, 2 and 10 + i % 3) get the same vector
    by_item = dict(zip(ds.seqs.item_ids.tolist(), emb))
    np.testing.assert_allclose(by_item[1], by_item[4], atol=1e-6)
    assert not np.allclose(by_item[1], by_item[2])
    # the same data under "auto" elsewhere is history-masked (users never repeat here)
    assert primary_ranking(prepare(cfg.replace(**{"train.ranking": "auto"}))) == "masked"


@pytest.mark.parametrize(("case", "text", "message"), [
    ("non-integer id", "1 1 2 3\n2 4 x5 6\n", r"Mini.txt:2: 'x5' is not an integer id"),
    ("empty line", "1 1 2 3\n\n2 4 5 6\n", r"Mini.txt:2: empty line"),
    ("user without items", "1 1 2 3\n2\n", r"Mini.txt:2: user '2' has no item"),
    ("user on two lines", "1 1 2 3\n1 4 5 6\n", "a user id appears on more than one line"),
])
def test_bad_sequence_files_are_refused_with_the_line(s3rec_dir, case, text, message):
    write(s3rec_dir / "Mini.txt", text)
    with pytest.raises(DataError, match=message):
        load_s3rec(s3rec_dir, "Mini")


def test_missing_or_bad_attributes_and_a_missing_name(s3rec_dir):
    (s3rec_dir / "Mini_item2attributes.json").write_text('{"1": [1, "brand"]}')
    with pytest.raises(DataError, match="expected an integer item id mapped to a list of integer"):
        load_s3rec(s3rec_dir, "Mini")
    (s3rec_dir / "Mini_item2attributes.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_s3rec(s3rec_dir, "Mini")
    (s3rec_dir / "Mini_item2attributes.json").unlink()
    with pytest.raises(DataError, match="Mini_item2attributes.json: file not found"):
        load_s3rec(s3rec_dir, "Mini")
    with pytest.raises(DataError, match="needs data.name.*found: Mini"):
        load_s3rec(s3rec_dir, None)


def test_a_known_file_with_other_content_fails_its_checksum(tmp_path):
    d = tmp_path / "amazon"
    write(d / "Toys_and_Games.txt", "1 1 2 3 4 5\n")
    write(d / "Toys_and_Games_item2attributes.json", "{}")
    with pytest.raises(DataError, match="checksum mismatch"):
        load_s3rec(d, "Toys_and_Games")


@pytest.mark.skipif(not AMAZON.is_dir() and not os.environ.get("CI"),
                    reason=f"{AMAZON} is absent (read in place, never copied)")
@pytest.mark.parametrize(("name", "users", "items", "interactions"), [
    ("Toys_and_Games", 19412, 11924, 167597), ("Sports_and_Outdoors", 35598, 18357, 296337)])
def test_the_published_files_load_with_their_readme_statistics(name, users, items, interactions):
    raw = load_s3rec(AMAZON, name)  # checksums verified
    inter = raw.interactions
    assert (inter["user"].nunique(), inter["item"].nunique(), len(inter)) == (users, items, interactions)
    lengths = inter.groupby("user").size()
    assert lengths.median() == 6
    assert set(inter["item"]) <= set(raw.items["item"])  # every item has attributes


def test_data_and_tokenize_commands_take_the_set_by_name(s3rec_dir, tmp_path):
    """``glasskit data`` and ``tokenize`` pick an S3-Rec set by ``--set data.name=...`` as
    train and sweep do (without it they could show only the profile's default set)."""
    write(s3rec_dir / "Other.txt", (s3rec_dir / "Mini.txt").read_text().splitlines()[0] + "\n")
    shutil.copy(s3rec_dir / "Mini_item2attributes.json", s3rec_dir / "Other_item2attributes.json")
    env = {**os.environ, "GLASSKIT_CACHE": str(tmp_path / "cache")}
    stats = {}
    for name in ("Mini", "Other"):
        res = subprocess.run([sys.executable, "-m", "glasskit", "data", "--profile", "s3rec",
                              "--data-dir", str(s3rec_dir), "--set", f"data.name={name}"],
                             capture_output=True, text=True, cwd=ROOT, env=env)
        assert res.returncode == 0, res.stderr
        stats[name] = json.loads(res.stdout)
    assert stats["Mini"]["dataset"] == "s3rec/Mini" and stats["Other"]["dataset"] == "s3rec/Other"
    assert stats["Other"]["users"] == 1 < stats["Mini"]["users"]
    res = subprocess.run([sys.executable, "-m", "glasskit", "tokenize", "--profile", "s3rec",
                          "--data-dir", str(s3rec_dir), "--set", "data.name=Mini",
                          "--set", "tokenizer.codebooks=[4, 4]", "--method", "rqkmeans"],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["codebooks"] == [4, 4]
