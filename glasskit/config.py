"""Dataclass configs, named profiles (smoke, quick, paper), YAML in/out and stable hashes.

A stage's cache key is the hash of exactly the config sections it depends on
(``cfg.hash("data", "embed")``), so changing a model parameter never invalidates the
data or the tokenizer.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from glasskit.errors import ConfigError

DATASETS = ("ml-100k", "ml-latest-small", "ml-1m", "kuairec", "s3rec", "csv", "synthetic")
PROFILES = ("smoke", "quick", "converge", "s3rec", "paper")
PRESETS = (None, "paper")


@dataclass
class DataConfig:
    dataset: str = "ml-100k"
    data_dir: str | None = None
    short_len: int = 50  # GLASS §5.1.1: the most recent 50 interactions
    long_max: int = 1000  # most recent long-term items kept before the short window
    min_user_interactions: int = 3  # fewer: dropped with a count (valid needs one input)
    train_targets_per_user: int | None = None  # None: every earlier position is a training target
    min_rating: float | None = None  # positive filter for explicit ratings (None keeps all)
    duplicates: str = "drop"  # exact duplicate rows: "drop" (with a warning) or "error"
    kuairec_matrix: str = "big"  # KuaiRec: "big" or "small" matrix
    name: str | None = None  # s3rec: the file stem in data_dir, e.g. Toys_and_Games

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"data.dataset: unknown dataset {self.dataset!r}; choose one of {DATASETS}")
        _positive("data.short_len", self.short_len)
        _positive("data.long_max", self.long_max, allow_zero=True)
        _positive("data.min_user_interactions", self.min_user_interactions)
        if self.min_user_interactions < 3:
            raise ConfigError("data.min_user_interactions must be >= 3 (a test target, a validation "
                              "target and one earlier item as their input; a user needs 4 to also "
                              f"give a training target), got {self.min_user_interactions}")
        if self.min_rating is not None and not _finite_number(self.min_rating):
            raise ConfigError(f"data.min_rating must be a number or null, got {self.min_rating!r}")
        if self.train_targets_per_user is not None:
            _positive("data.train_targets_per_user", self.train_targets_per_user)
        if self.duplicates not in ("drop", "error"):
            raise ConfigError(f"data.duplicates must be 'drop' or 'error', got {self.duplicates!r}")
        if self.kuairec_matrix not in ("big", "small"):
            raise ConfigError(f"data.kuairec_matrix must be 'big' or 'small', got {self.kuairec_matrix!r}")


@dataclass
class SyntheticConfig:
    """Parameters of :func:`glasskit.data.synthetic.generate` (see its docstring)."""

    users: int = 400
    items: int = 2048
    clusters: int = 32  # coarse interests
    fine_per_cluster: int = 8  # fine-grained groups inside each coarse cluster
    min_len: int = 60
    max_len: int = 400
    successors: int = 3  # coarse clusters reachable from each cluster (recent-window signal)
    p_preferred: float = 0.85  # probability that an event uses the user's preferred fine group
    dim: int = 32

    def validate(self) -> None:
        for name in ("users", "items", "clusters", "fine_per_cluster", "successors", "dim"):
            _positive(f"synthetic.{name}", getattr(self, name))
        if not 3 <= self.min_len <= self.max_len <= 100_000:
            raise ConfigError(
                f"synthetic lengths need 3 <= min_len <= max_len <= 100000, got "
                f"{self.min_len}..{self.max_len}"
            )
        if self.items < self.clusters * self.fine_per_cluster:
            raise ConfigError("synthetic.items must be >= clusters * fine_per_cluster")
        if self.successors > self.clusters:
            raise ConfigError("synthetic.successors must be <= synthetic.clusters")
        if not 0.0 <= self.p_preferred <= 1.0:
            raise ConfigError(f"synthetic.p_preferred must lie in [0, 1], got {self.p_preferred}")


@dataclass
class EmbedConfig:
    # "minilm" (sentence-transformers), "tfidf" (TF-IDF + SVD), "interactions" (SVD of the
    # training interactions: no content needed) or "auto" (shipped > minilm > interactions)
    method: str = "auto"
    dim: int = 64  # output dimension of tfidf and interactions
    batch_size: int = 128

    def validate(self) -> None:
        if self.method not in ("auto", "minilm", "tfidf", "interactions"):
            raise ConfigError(f"embed.method must be auto, minilm, tfidf or interactions, "
                              f"got {self.method!r}")
        _positive("embed.dim", self.dim)
        _positive("embed.batch_size", self.batch_size)


@dataclass
class TokenizerConfig:
    method: str = "rqvae"  # "rqvae" (TIGER/GLASS) or "rqkmeans" (residual k-means, DualGR/GEMs)
    codebooks: list[int] = field(default_factory=lambda: [64, 128, 128])  # GLASS Table 2
    collisions: str = "dedup"  # "dedup": append a level numbering items that share a SID; "keep"
    balanced: bool = False  # rqkmeans: cap every cluster at ceil(n / K)
    kmeans_iters: int = 50
    hidden: list[int] = field(default_factory=lambda: [256, 128])  # rqvae encoder (decoder mirrored)
    latent: int = 32
    epochs: int = 300
    lr: float = 1e-3
    batch_size: int = 512
    beta: float = 0.25  # commitment weight
    neighbours: int = 4  # top-k neighbour codes per first-level code (GLASS §4.3.1)
    device: str = "auto"

    def validate(self) -> None:
        if self.method not in ("rqvae", "rqkmeans"):
            raise ConfigError(f"tokenizer.method must be rqvae or rqkmeans, got {self.method!r}")
        if not isinstance(self.codebooks, list | tuple) or not self.codebooks:
            raise ConfigError(f"tokenizer.codebooks must be a list of sizes, got {self.codebooks!r}")
        for level, k in enumerate(self.codebooks):
            if not isinstance(k, int) or isinstance(k, bool) or k < 2:
                raise ConfigError(f"tokenizer.codebooks: size {k!r} at level {level} is below 2")
        if self.collisions not in ("dedup", "keep"):
            raise ConfigError(f"tokenizer.collisions must be dedup or keep, got {self.collisions!r}")
        for name in ("kmeans_iters", "latent", "epochs", "batch_size", "neighbours"):
            _positive(f"tokenizer.{name}", getattr(self, name))
        if not (_finite_number(self.lr) and self.lr > 0):
            raise ConfigError(f"tokenizer.lr must be a finite positive number, got {self.lr!r}")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ConfigError(f"tokenizer.device must be auto, cpu, cuda or mps, got {self.device!r}")


@dataclass
class ModelConfig:
    """What every model shares. The model's own hyperparameters are ``params``: an instance of
    the config dataclass the registry (``glasskit.models.REGISTRY``) pairs with ``name``,
    defined beside the model's module. They are read and written flat: ``model.sid_tier`` is
    ``model.params.sid_tier`` (in YAML, dotted overrides and attribute access alike)."""

    name: str = "tiger"
    variant: str | None = None  # label of an ablation row of the model (its registered variants)
    d_model: int = 96  # GLASS Table 2: embedding 96, 8 heads, key/value width 32
    heads: int = 8
    head_dim: int = 32
    ff: int = 256
    dropout: float = 0.1  # embeddings and every sub-layer output (Vaswani et al. §5.4)
    attn_dropout: float = 0.0  # attention probabilities; > 0 forces unfused attention on CPU
    params: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.params is None:
            self.params = model_entry(self.name).config()

    def __getattr__(self, key: str) -> Any:  # only when ordinary lookup fails: the params
        if key.startswith("__") or key == "params":
            raise AttributeError(key)
        params = self.__dict__.get("params")
        if params is not None and key in {f.name for f in dataclasses.fields(params)}:
            return getattr(params, key)
        raise AttributeError(f"model {self.__dict__.get('name')!r} has no setting {key!r}")

    def set_name(self, name: str, sizes: dict[str, Any] | None = None) -> None:
        """Switch to model ``name`` with its own params: the defaults of its config dataclass,
        then ``sizes`` (a profile's sizes, e.g. smoke's one layer) for the fields it has.
        Nothing is carried over from the previous model."""
        if name == self.name and self.params is not None:
            return
        new = model_entry(name).config()
        for key, value in (sizes or {}).items():
            if hasattr(new, key):
                setattr(new, key, value)
        self.name, self.params = name, new

    def key_owner(self, key: str) -> Any:
        """The object that holds setting ``key``: this config or its params."""
        if key in {f.name for f in dataclasses.fields(self)} and key != "params":
            return self
        if key in {f.name for f in dataclasses.fields(self.params)}:
            return self.params
        return None

    def validate(self) -> None:
        entry = model_entry(self.name)
        if self.variant is not None and self.variant not in entry.variants:
            raise ConfigError(f"model.variant: {self.name} has no variant {self.variant!r}; "
                              f"choose one of {sorted(entry.variants) or 'none'}")
        for name in ("d_model", "heads", "head_dim", "ff"):
            _positive(f"model.{name}", getattr(self, name))
        for name in ("dropout", "attn_dropout"):
            value = getattr(self, name)
            if not (isinstance(value, float | int) and 0.0 <= value < 1.0):
                raise ConfigError(f"model.{name} must lie in [0, 1), got {value!r}")
        if not isinstance(self.params, entry.config):
            raise ConfigError(f"model.params: expected {entry.config.__name__} for {self.name}")
        self.params.validate()


def model_entry(name: str):
    """The registry entry (model class, config class, variants) of model ``name``."""
    from glasskit.models import REGISTRY

    if name not in REGISTRY:
        raise ConfigError(f"model.name: unknown model {name!r}; choose one of {tuple(REGISTRY)}")
    return REGISTRY[name]


def model_names() -> tuple[str, ...]:
    from glasskit.models import REGISTRY

    return tuple(REGISTRY)


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    # the warmup as a share of an epoch's steps instead (replaces warmup_steps when set): every
    # model then warms up over the same training targets, although a SASRec step predicts a whole
    # batch of windows (an epoch of ~10 steps on ml-100k) and a SID model's one target per sample
    warmup_epochs: float | None = None
    grad_clip: float = 1.0
    patience: int = 5  # epochs without a better validation NDCG@10 (GLASS Table 2: 50)
    beam: int = 20  # >= the largest K
    ks: list[int] = field(default_factory=lambda: [1, 3, 5, 10, 20])  # GLASS Table 3
    eval_batch_size: int = 256
    device: str = "auto"  # auto: cuda, then mps, then cpu
    amp: str = "auto"  # training autocast: auto = bf16 on CUDA and bf16-native CPUs; bf16; off
    threads: int = 0  # CPU threads for torch (0: leave torch's default)
    # learning rate after the warmup: "cosine" decays to 0 at train.epochs (so it depends on
    # the cap); "constant" keeps train.lr, for early-stopped runs under a generous cap
    schedule: str = "cosine"
    # the primary ranking (checkpoint selection, early stopping, headline tables): "auto" is
    # history-masked when users never repeat an item, else unmasked; a published protocol
    # names its own (TIGER's Table 1: unmasked)
    ranking: str = "auto"

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "warmup_steps", "patience", "beam", "eval_batch_size"):
            _positive(f"train.{name}", getattr(self, name))
        if not (_finite_number(self.lr) and self.lr > 0):
            raise ConfigError(f"train.lr must be a finite positive number, got {self.lr!r}")
        if not (_finite_number(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"train.weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and not (_finite_number(self.grad_clip) and self.grad_clip >= 0):
            raise ConfigError(f"train.grad_clip must be a finite number >= 0 (0 or null: no clipping), "
                              f"got {self.grad_clip!r}")
        _positive("train.threads", self.threads, allow_zero=True)
        w = self.warmup_epochs
        if w is not None and not (_finite_number(w) and w > 0):
            raise ConfigError(f"train.warmup_epochs must be a finite positive number or null (then "
                              f"train.warmup_steps applies), got {self.warmup_epochs!r}")
        if not self.ks or any(not isinstance(k, int) or k < 1 for k in self.ks):
            raise ConfigError(f"train.ks must be positive integers, got {self.ks!r}")
        if self.beam < max(self.ks):
            raise ConfigError(f"train.beam ({self.beam}) must be >= the largest K ({max(self.ks)})")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ConfigError(f"train.device must be auto, cpu, cuda or mps, got {self.device!r}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ConfigError(f"train.amp must be auto, bf16 or off, got {self.amp!r}")
        if self.ranking not in ("auto", "masked", "unmasked"):
            raise ConfigError(f"train.ranking must be auto, masked or unmasked, got {self.ranking!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"train.schedule must be cosine or constant, got {self.schedule!r}")


@dataclass
class Config:
    profile: str = "quick"
    seed: int = 0
    preset: str | None = None  # "paper": the model's paper's own sizes and tokenizer over the profile
    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> Config:
        if self.profile not in PROFILES:
            raise ConfigError(f"profile: unknown profile {self.profile!r}; choose one of {PROFILES}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.preset not in PRESETS:
            raise ConfigError(f"preset: unknown preset {self.preset!r}; choose one of {PRESETS}")
        for section in self.sections():
            getattr(self, section).validate()
        return self

    @staticmethod
    def sections() -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(Config)
                     if f.default_factory is not dataclasses.MISSING)

    def to_dict(self) -> dict[str, Any]:
        """Every section as plain data; the model's params sit flat in its section."""
        d = dataclasses.asdict(self)
        d["model"].update(d["model"].pop("params"))
        return d

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            from glasskit.io import write_text

            write_text(path, text)
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping, got {type(d).__name__}")
        cfg = cls()
        _apply(cfg, d, prefix="")
        return cfg.validate()

    def hash(self, *sections: str) -> str:
        """Stable 16-hex-digit hash of the named sections (all of them when none are named)."""
        d = self.to_dict()
        for section, fields in HASH_NEUTRAL.items():  # added later: left out at their default
            where = d if section == "" else d[section]
            for name, default in fields.items():
                if name in where and where[name] == default:
                    del where[name]
        keys = sections or tuple(sorted(d))
        for k in keys:
            if k not in d:
                raise ConfigError(f"config has no section {k!r}")
        payload = json.dumps({k: d[k] for k in keys}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def replace(self, **overrides: Any) -> Config:
        """A copy with dotted overrides applied, e.g. ``replace(**{"data.short_len": 20})``;
        ``model.name`` first, so that the other model settings find the new model's params."""
        cfg = copy.deepcopy(self)
        for key, value in sorted(overrides.items(), key=lambda kv: kv[0] != "model.name"):
            _set(cfg, key, value)
        return cfg.validate()


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        need = "a non-negative" if allow_zero else "a positive"
        raise ConfigError(f"{name} must be {need} integer, got {value!r}")


def _apply(obj: Any, d: dict[str, Any], prefix: str) -> None:
    if isinstance(obj, ModelConfig):
        _apply_model(obj, d)
        return
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in d.items():
        if key not in names:
            raise ConfigError(f"unknown config key {prefix + key!r}; known: {sorted(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {prefix + key!r} must be a mapping")
            _apply(current, value, prefix=f"{prefix}{key}.")
        else:
            setattr(obj, key, value)


def _apply_model(m: ModelConfig, d: dict[str, Any]) -> None:
    """A model section: its name first, then shared settings and the model's params. Keys of
    other models' params are dropped: configs written before per-model configs held every
    model's switches in one flat section, and such runs stay readable."""
    if not isinstance(d, dict):
        raise ConfigError("config key 'model' must be a mapping")
    if "name" in d:
        if not isinstance(d["name"], str):
            raise ConfigError(f"model.name must be a model name, got {d['name']!r}")
        m.set_name(d["name"])
    others = {f.name for e in _all_entries() for f in dataclasses.fields(e.config)}
    for key, value in d.items():
        if key in ("name", "params"):
            continue
        owner = m.key_owner(key)
        if owner is None:
            if key in others:
                continue  # another model's setting in a legacy flat model section
            known = sorted({f.name for f in dataclasses.fields(m) if f.name != "params"}
                           | {f.name for f in dataclasses.fields(m.params)})
            raise ConfigError(f"unknown config key 'model.{key}' for model {m.name}; known: {known}")
        setattr(owner, key, value)


def _all_entries():
    from glasskit.models import REGISTRY

    return REGISTRY.values()


def _set(cfg: Config, dotted: str, value: Any) -> None:
    *path, leaf = dotted.split(".")
    obj: Any = cfg
    for part in path:
        if not hasattr(obj, part) or not dataclasses.is_dataclass(getattr(obj, part)):
            raise ConfigError(f"unknown config section {part!r} in {dotted!r}")
        obj = getattr(obj, part)
    if isinstance(obj, ModelConfig):
        if leaf == "name":
            obj.set_name(value, PROFILE_MODEL_SIZES.get(cfg.profile))
            return
        owner = obj.key_owner(leaf)
        if owner is None:
            raise ConfigError(f"unknown config key {dotted!r} for model {obj.name}")
        setattr(owner, leaf, value)
        return
    if leaf not in {f.name for f in dataclasses.fields(obj)}:
        raise ConfigError(f"unknown config key {dotted!r}")
    if dataclasses.is_dataclass(getattr(obj, leaf)):
        keys = [f.name for f in dataclasses.fields(getattr(obj, leaf)) if f.name != "params"]
        raise ConfigError(f"{dotted!r} is a config section, not a value: set one of its keys, e.g. "
                          f"{dotted}.{keys[0]}=... (keys: {', '.join(keys)})")
    setattr(obj, leaf, value)


# A profile's model sizes, for whichever model has the field (smoke: one layer everywhere).
# settings added after runs were stored, left out of the config hash at their default so that
# those runs keep their names
HASH_NEUTRAL: dict[str, dict[str, Any]] = {"": {"preset": None}, "data": {"name": None},
                                           "train": {"schedule": "cosine", "ranking": "auto",
                                                     "warmup_epochs": None},
                                           "model": {"align_items": "catalogue"}}

PROFILE_MODEL_SIZES: dict[str, dict[str, Any]] = {"smoke": {"enc_layers": 1, "dec_layers": 1, "layers": 1}}


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    return Config.from_dict(d or {})
