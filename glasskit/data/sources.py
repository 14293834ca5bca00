"""Data sources. Each returns a :class:`RawData` (interactions + items) or fails clearly.

- ``ml-100k`` (default): read from ``recbole/dataset_example/ml-100k/`` inside the PyPI wheel
  ``recbole==1.2.1``, fetched on first use with ``pip download --no-deps`` into the cache.
- ``ml-latest-small``: the GroupLens files in ``data_dir``
  (https://files.grouplens.org/datasets/movielens/ml-latest-small.zip, unzipped).
- ``ml-1m``: ``ratings.dat`` and ``movies.dat`` as GroupLens publishes them.
- ``kuairec``: ``big_matrix.csv`` or ``small_matrix.csv``, ``item_categories.csv`` and
  ``kuairec_caption_category.csv``; positives are ``watch_ratio > 1`` (GLASS §5.1.1), the other
  rows are kept with ``label = 0`` as exposure negatives.
- ``s3rec``: the S3-Rec layout of the Amazon 5-core benchmarks (Toys_and_Games,
  Sports_and_Outdoors, Beauty, ...): ``<name>.txt`` and ``<name>_item2attributes.json`` in
  ``data_dir`` (see :func:`load_s3rec`).
- ``csv``: bring your own (see :func:`load_csv`).
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from glasskit.data.raw import RawData, clean_interactions, numeric_column, read_table, unique_ids
from glasskit.errors import DataError
from glasskit.io import atomic_write, cache_dir, sha256_file

ML100K_WHEEL = "recbole==1.2.1"
ML100K_MEMBER = "recbole/dataset_example/ml-100k/"
ML100K_SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}
ML_LATEST_SMALL_SHA256 = {
    "ratings.csv": "80da8b3393dae325bbba5a31f291a6ba55d8d4f4396de3c456f2c1635b1b70e8",
    "movies.csv": "c47b783f23eb304413307e1bb05335e427737da20ec8d3c0e96335567dd5f3dc",
}
# the S3-Rec files as RUCAIBox/CIKM2020-S3Rec publishes them (checked when a name matches)
S3REC_SHA256 = {
    "Toys_and_Games.txt": "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f",
    "Toys_and_Games_item2attributes.json":
        "d371acd25101eedac04afc727626464b7acec770c4eda708705d51eb76eb1ad0",
    "Sports_and_Outdoors.txt": "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
    "Sports_and_Outdoors_item2attributes.json":
        "7fb10733ac4f1811384a52144cdefa7fcc7536fa80a7232c5da9bd789155c34b",
}
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


def _verify(path: Path, expected: str) -> None:
    got = sha256_file(path)
    if got != expected:
        raise DataError(f"{path}: checksum mismatch (sha256 {got[:12]}..., expected {expected[:12]}...);"
                        " the file is corrupt or a different release")


def fetch_ml100k(root: Path | None = None) -> Path:
    """Directory holding ml-100k.inter/.item, extracted from the recbole wheel on first use."""
    root = Path(root) if root else cache_dir() / "ml-100k"
    if all((root / f).is_file() for f in ML100K_SHA256):
        return root
    wheels = root / "wheel"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("recbole-1.2.1-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels),
               ML100K_WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(wheels.glob("recbole-1.2.1-*.whl"))
        if proc.returncode != 0 or not found:
            raise DataError(f"could not obtain ml-100k: `{' '.join(cmd)}` failed:\n{proc.stderr[-2000:]}")
    try:
        with zipfile.ZipFile(found[0]) as zf:
            for name in ML100K_SHA256:
                data = zf.read(ML100K_MEMBER + name)
                atomic_write(root / name, lambda p, data=data: p.write_bytes(data))
    except (zipfile.BadZipFile, KeyError) as e:
        found[0].unlink(missing_ok=True)
        raise DataError(f"{found[0]}: not a usable recbole wheel ({e}); removed, try again") from e
    return root


def load_ml100k(data_dir: str | Path | None = None, duplicates: str = "drop") -> RawData:
    root = Path(data_dir) if data_dir else fetch_ml100k()
    for name, digest in ML100K_SHA256.items():
        if not (root / name).is_file():
            raise DataError(f"{root / name}: file not found")
        _verify(root / name, digest)
    inter_path = root / "ml-100k.inter"
    inter = read_table(inter_path, ("user_id:token", "item_id:token", "rating:float",
                                    "timestamp:float"), sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    inter = inter.rename(columns={"user_id": "user", "item_id": "item"})
    items = read_table(root / "ml-100k.item", ("item_id:token", "movie_title:token_seq"), sep="\t")
    items.columns = [c.split(":")[0] for c in items.columns]
    items = pd.DataFrame({
        "item": items["item_id"],
        "title": items["movie_title"].fillna(""),
        "genres": items["class"].fillna("").str.replace(" ", ", "),
        "year": items["release_year"].fillna("").astype(str).str.replace(r"\.0$", "", regex=True),
    })
    inter = clean_interactions(inter[["user", "item", "timestamp", "rating"]], str(inter_path),
                               duplicates)
    return RawData("ml-100k", inter, items)


def load_ml_latest_small(data_dir: str | Path, duplicates: str = "drop") -> RawData:
    root = _need_dir(data_dir, "ml-latest-small")
    for name, digest in ML_LATEST_SMALL_SHA256.items():
        if not (root / name).is_file():
            raise DataError(f"{root / name}: file not found")
        _verify(root / name, digest)
    return _movielens_csv(root, "ml-latest-small", duplicates)


def _movielens_csv(root: Path, name: str, duplicates: str) -> RawData:
    path = root / "ratings.csv"
    inter = read_table(path, ("userId", "movieId", "rating", "timestamp"))
    inter = inter.rename(columns={"userId": "user", "movieId": "item"})
    inter = clean_interactions(inter[["user", "item", "timestamp", "rating"]], str(path), duplicates)
    movies = read_table(root / "movies.csv", ("movieId", "title", "genres"))
    return RawData(name, inter, _movie_items(movies["movieId"], movies["title"], movies["genres"]))


def _movie_items(ids: pd.Series, titles: pd.Series, genres: pd.Series) -> pd.DataFrame:
    titles = titles.fillna("").astype(str)
    year = titles.str.extract(_YEAR, expand=False).fillna("")
    return pd.DataFrame({
        "item": ids.to_numpy(),
        "title": titles.str.replace(_YEAR, "", regex=True).to_numpy(),
        "genres": genres.fillna("").astype(str).str.replace("|", ", ", regex=False).to_numpy(),
        "year": year.to_numpy(),
    })


def load_ml1m(data_dir: str | Path, duplicates: str = "drop") -> RawData:
    root = _need_dir(data_dir, "ml-1m")
    path = root / "ratings.dat"
    inter = read_table(path, ("user", "item", "rating", "timestamp"), sep="::", engine="python",
                       header=None, names=["user", "item", "rating", "timestamp"], encoding="latin-1")
    inter = clean_interactions(inter, str(path), duplicates)
    movies = read_table(root / "movies.dat", ("item", "title", "genres"), sep="::",
                        engine="python", header=None, names=["item", "title", "genres"],
                        encoding="latin-1")
    return RawData("ml-1m", inter, _movie_items(movies["item"], movies["title"], movies["genres"]))


def load_kuairec(data_dir: str | Path, matrix: str = "big", duplicates: str = "drop") -> RawData:
    root = _need_dir(data_dir, "kuairec")
    path = root / f"{matrix}_matrix.csv"
    cols = ("user_id", "video_id", "timestamp", "watch_ratio")
    df = read_table(path, cols)
    ratio = numeric_column(df, "watch_ratio", str(path))
    ts = numeric_column(df, "timestamp", str(path))
    keep = ts.notna() & ratio.notna()
    if not keep.all():
        warnings.warn(f"{path}: dropped {int((~keep).sum())} row(s) without timestamp or watch_ratio",
                      stacklevel=2)
    inter = pd.DataFrame({
        "user": df["user_id"][keep], "item": df["video_id"][keep], "timestamp": ts[keep],
        "label": (ratio[keep] > 1.0).astype(np.int8),  # GLASS §5.1.1: watch ratio above 100%
    })
    inter = clean_interactions(inter, str(path), duplicates)
    cats = read_table(root / "item_categories.csv", ("video_id", "feat"))
    cap = read_table(root / "kuairec_caption_category.csv", ("video_id", "caption"),
                     engine="python", on_bad_lines="warn")
    text_cols = [c for c in ("caption", "manual_cover_text", "topic_tag", "first_level_category_name",
                             "second_level_category_name", "third_level_category_name")
                 if c in cap.columns]
    items = cats.rename(columns={"video_id": "item", "feat": "categories"}).merge(
        cap[["video_id", *text_cols]].rename(columns={"video_id": "item"}), on="item", how="left")
    items[["categories", *text_cols]] = items[["categories", *text_cols]].fillna("").astype(str)
    return RawData("kuairec", inter, items)


def load_s3rec(data_dir: str | Path, name: str | None) -> RawData:
    """The S3-Rec layout (Zhou et al., CIKM 2020), in which the Amazon 5-core benchmarks of
    TIGER's Table 1 circulate: ``<name>.txt`` holds one user per line, ``user_id item_id
    item_id ...`` in chronological order (no timestamps: the position is the time), and
    ``<name>_item2attributes.json`` maps an item id to its attribute ids (categories and brand).
    Ids are integers. Known files are checked against their published checksums. The items'
    content is their attribute ids as tokens (``attributes``: ``"a1 a2 a17"``), which
    ``embed.method: auto`` turns into TF-IDF vectors reduced by a truncated SVD
    (glasskit.data.embeddings)."""
    import json

    root = _need_dir(data_dir, "s3rec")
    if not name:
        known = sorted({p.stem for p in root.glob("*.txt")})
        raise DataError(f"dataset 's3rec' needs data.name, the file stem in {root} (e.g. --set "
                        f"data.name={known[0] if known else 'Toys_and_Games'}; found: "
                        f"{', '.join(known) or 'no .txt file'})")
    seq_path, attr_path = root / f"{name}.txt", root / f"{name}_item2attributes.json"
    for path in (seq_path, attr_path):
        if not path.is_file():
            raise DataError(f"{path}: file not found (the S3-Rec layout has {seq_path.name} and "
                            f"{attr_path.name} side by side)")
        if path.name in S3REC_SHA256:
            _verify(path, S3REC_SHA256[path.name])
    users, items, positions = [], [], []
    with open(seq_path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            raise DataError(f"{seq_path}:{number}: empty line; every line is `user_id item_id ...`")
        if len(fields) < 2:
            raise DataError(f"{seq_path}:{number}: user {fields[0]!r} has no item")
        bad = next((x for x in fields if not x.isdigit()), None)
        if bad is not None:
            raise DataError(f"{seq_path}:{number}: {bad!r} is not an integer id; every line is "
                            "`user_id item_id ...` with integer ids")
        user, seq = int(fields[0]), [int(x) for x in fields[1:]]
        users += [user] * len(seq)
        items += seq
        positions += range(len(seq))
    if not users:
        raise DataError(f"{seq_path}: no user")
    inter = pd.DataFrame({"user": users, "item": items, "timestamp": positions})
    dup_users = inter.drop_duplicates("user")["user"]
    if len(dup_users) != len(lines):
        raise DataError(f"{seq_path}: a user id appears on more than one line; each user is one line")
    inter = clean_interactions(inter, str(seq_path), "error")
    try:
        attrs = json.loads(attr_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{attr_path}: not valid JSON ({e})") from None
    if not isinstance(attrs, dict):
        raise DataError(f"{attr_path}: expected an object {{item_id: [attribute_id, ...]}}")
    rows = []
    for key, values in attrs.items():
        if not key.isdigit() or not isinstance(values, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise DataError(f"{attr_path}: entry {key!r}: expected an integer item id mapped to a "
                            f"list of integer attribute ids, got {values!r}")
        rows.append((int(key), " ".join(f"a{v}" for v in values)))
    items_table = pd.DataFrame(rows, columns=["item", "attributes"])
    known = np.isin(pd.unique(inter["item"].to_numpy()), items_table["item"].to_numpy())
    if not known.all():
        warnings.warn(f"{attr_path}: {int((~known).sum())} of {len(known)} items of {seq_path.name} "
                      "have no attributes", stacklevel=2)
    return RawData(f"s3rec/{name}", inter, items_table, content="tokens")


def load_csv(data_dir: str | Path, duplicates: str = "drop") -> RawData:
    """Bring-your-own data in ``data_dir``.

    - ``interactions.csv``: ``user_id,item_id,timestamp`` and optionally ``rating`` or ``label``;
    - ``items.csv`` (optional): ``item_id`` plus any text columns;
    - ``item_embeddings.npy`` (optional) with ``item_embeddings_ids.csv`` (column ``item_id``)
      giving the item of each row.

    User and item ids are read as text in every file and matched exactly (``7`` and ``007``
    are different items), so one non-numeric id never detaches the other files. Without item
    text or embeddings the tokenizer embeds items from the training interactions.
    """
    root = _need_dir(data_dir, "csv")
    path = root / "interactions.csv"
    ids = {"user_id": str, "item_id": str}
    inter = read_table(path, ("user_id", "item_id", "timestamp"), dtype=ids)
    keep = ["user_id", "item_id", "timestamp"] + [c for c in ("rating", "label") if c in inter]
    inter = inter[keep].rename(columns={"user_id": "user", "item_id": "item"})
    inter = clean_interactions(inter, str(path), duplicates)
    if (root / "items.csv").exists():
        items = read_table(root / "items.csv", ("item_id",), dtype={"item_id": str})
        unique_ids(items["item_id"], str(root / "items.csv"))
        items = items.rename(columns={"item_id": "item"})
        text = [c for c in items.columns if c != "item"]
        items[text] = items[text].fillna("").astype(str)
        known = np.isin(pd.unique(inter["item"].to_numpy()), items["item"].to_numpy())
        if not known.any():
            raise DataError(f"{root / 'items.csv'}: no item_id matches an item of {path} (ids are "
                            f"matched as text), e.g. {items['item'].iloc[:3].tolist()} vs "
                            f"{inter['item'].iloc[:3].tolist()}")
        if not known.all():
            warnings.warn(f"{root / 'items.csv'}: {int((~known).sum())} of {len(known)} items of "
                          f"{path.name} have no row here", stacklevel=2)
    else:
        items = pd.DataFrame({"item": np.sort(pd.unique(inter["item"].to_numpy()))})
    embeddings = None
    emb_path = root / "item_embeddings.npy"
    if emb_path.exists():
        ids_path = root / "item_embeddings_ids.csv"
        ids = read_table(ids_path, ("item_id",), dtype={"item_id": str})["item_id"]
        unique_ids(ids, str(ids_path))
        ids = ids.to_numpy()
        try:
            matrix = np.load(emb_path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{emb_path}: not a readable .npy array ({e})") from e
        if matrix.ndim != 2 or len(matrix) != len(ids):
            raise DataError(f"{emb_path}: shape {matrix.shape} does not match the {len(ids)} ids "
                            f"in {ids_path}")
        embeddings = (ids, matrix.astype(np.float32))
    return RawData("csv", inter, items, embeddings)


def _need_dir(data_dir: str | Path | None, name: str) -> Path:
    if data_dir is None:
        raise DataError(f"dataset {name!r} needs data_dir (the folder holding its files)")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data_dir for {name!r} is not a directory: {root}")
    return root
