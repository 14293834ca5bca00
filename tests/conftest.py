"""Shared fixtures: a persistent test cache and small files in each source's published format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
ML_LATEST_SMALL = ROOT.parent / "shared" / "data" / "ml-latest-small"
# Downloads and embeddings are cached across test runs (the ml-100k wheel is fetched once).
os.environ.setdefault("GLASSKIT_CACHE", str(ROOT / ".cache" / "tests"))
# the committed comparison (results/runs) is real data, not a fixture: no test reads it unasked
os.environ["GLASSKIT_RESULTS"] = ""
# Under pytest-xdist every worker is a torch process: one thread each (notebook kernels and CLI
# subprocesses inherit it), or the workers oversubscribe the cores and run many times slower.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


@pytest.fixture
def ml_latest_small() -> Path:
    """The shared MovieLens latest-small folder. Outside this workplace's layout the test
    skips, naming the path; under CI (``CI`` set, as .ci/run does) a missing folder fails."""
    if not ML_LATEST_SMALL.is_dir():
        why = f"{ML_LATEST_SMALL} is absent (MovieLens latest-small, read in place, never copied)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return ML_LATEST_SMALL


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.lstrip("\n"), encoding=encoding)
    return path


@pytest.fixture
def ml1m_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ml-1m"
    rows = []
    for u in (1, 2, 3):
        for k, m in enumerate((1193, 661, 914, 3408)):
            rows.append(f"{u}::{m}::{(u + k) % 5 + 1}::{978300760 + 10 * k + u}")
    rows.append("4::1193::5::978300000")  # user 4 has a single rating: dropped
    write(d / "ratings.dat", "\n".join(rows) + "\n")
    write(d / "movies.dat", (
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "914::My Fair Lady (1964)::Musical|Romance\n"
        "3408::Erin Brockovich (2000)::Drama\n"), encoding="latin-1")
    return d


KUAIREC_HEADER = "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio\n"


@pytest.fixture
def kuairec_dir(tmp_path: Path) -> Path:
    d = tmp_path / "kuairec"
    rows = []
    ts = 1593878903.438
    for u in (14, 19):
        for k, (v, ratio) in enumerate([(148, 0.72), (183, 1.91), (3649, 2.06), (9598, 0.36),
                                        (5262, 1.28), (1963, 1.12), (8234, 1.5)]):
            t = ts + 100 * k + u
            rows.append(f"{u},{v},{int(ratio * 10000)},10000,2020-07-04 23:57:{k:02d}.438,20200704,"
                        f"{t},{ratio}")
    write(d / "big_matrix.csv", KUAIREC_HEADER + "\n".join(rows) + "\n")
    write(d / "small_matrix.csv", KUAIREC_HEADER + "\n".join(rows[:7]) + "\n")
    write(d / "item_categories.csv", "video_id,feat\n" + "".join(
        f'{v},"[{i % 3}, {i % 5 + 3}]"\n' for i, v in enumerate((148, 183, 3649, 9598, 5262, 1963, 8234))))
    write(d / "kuairec_caption_category.csv", (
        "video_id,manual_cover_text,caption,topic_tag,first_level_category_id,"
        "first_level_category_name,second_level_category_id,second_level_category_name,"
        "third_level_category_id,third_level_category_name\n"
        + "".join(f"{v},UNKNOWN,caption of {v},[],{i},cat{i},-124,UNKNOWN,-124,UNKNOWN\n"
                  for i, v in enumerate((148, 183, 3649, 9598, 5262, 1963, 8234)))))
    return d


@pytest.fixture
def csv_dir(tmp_path: Path) -> Path:
    d = tmp_path / "byo"
    rows = ["user_id,item_id,timestamp,rating"]
    for u in ("a", "b", "c"):
        for k, i in enumerate(("x", "y", "z", "w")):
            rows.append(f"{u},{i},{100 + k},{k + 1}")
    write(d / "interactions.csv", "\n".join(rows) + "\n")
    write(d / "items.csv", "item_id,title,tags\nx,Ex,one\ny,Why,two\nz,Zed,three\nw,Double,four\n")
    np.save(d / "item_embeddings.npy", np.eye(4, 3, dtype=np.float32) + 0.1)
    write(d / "item_embeddings_ids.csv", "item_id\nw\nx\ny\nz\n")
    return d


def decode_steps(model, batch: dict, index, beam: int) -> list[tuple[dict, object, object]]:
    """Run beam search and return every (state, prefix, logits) its ``decode_step`` saw, to
    compare cached decoding with decoding each prefix from scratch."""
    import torch

    from glasskit.decode import beam_search

    steps = []
    real = model.decode_step

    def spy(state, prefix):
        out = real(state, prefix)
        steps.append((state, prefix.clone(), out))
        return out

    model.decode_step = spy
    try:
        with torch.no_grad():
            beam_search(model, batch, index, beam)
    finally:
        del model.decode_step
    return steps
