"""Named profiles (smoke, quick, paper), the models' ablation rows (variants) and the one order
in which a config is built from them: the profile, then the model, then the variant, then
explicit values. Above the config schema (glasskit.config) and the model registry."""

from __future__ import annotations

from typing import Any

from glasskit.config import (
    PROFILE_MODEL_SIZES,
    PROFILES,
    Config,
    DataConfig,
    EmbedConfig,
    ModelConfig,
    SyntheticConfig,
    TokenizerConfig,
    TrainConfig,
    model_entry,
    model_names,
)
from glasskit.errors import ConfigError


def profile(name: str = "quick", **overrides: Any) -> Config:
    """A named profile with dotted overrides.

    - ``smoke``: tiny synthetic data, seconds; what the tests run.
    - ``quick``: the default dataset (ml-100k), minutes on 2 CPU cores; the main job.
    - ``converge``: quick's data and sizes, every model on every training position to
      convergence on validation (patience 10, cap 200, warmup over half an epoch, then a constant
      learning rate): the comparison's budget; hours on 2 CPU cores.
    - ``s3rec``: TIGER Table 1's protocol on the S3-Rec Amazon sets (``--data-dir`` their
      folder, ``data.name`` Toys_and_Games or Sports_and_Outdoors) at a CPU size.
    - ``paper``: GLASS Table 2 settings (short window 50, long history up to 1000); for a GPU.
    """
    if name == "smoke":
        cfg = Config(profile="smoke")
        cfg.data = DataConfig(dataset="synthetic", short_len=10, long_max=200,
                              train_targets_per_user=20)
        cfg.synthetic = SyntheticConfig(users=64, items=256, clusters=8, fine_per_cluster=4,
                                        min_len=20, max_len=160, dim=16)
        cfg.embed = EmbedConfig(method="tfidf", dim=16)
        cfg.tokenizer = TokenizerConfig(codebooks=[8, 8, 8], hidden=[32], latent=8, epochs=150,
                                        batch_size=256, neighbours=2)
        cfg.model = ModelConfig(d_model=32, heads=2, head_dim=16, ff=64)
        per_model = {"gems": {"model.stages": [1, 1]}}  # stage 3, the evaluated one, at epoch 3
        # fp32: bf16 does not pay at this size, and the smoke report should not take another
        # code path on CPUs with bf16
        cfg.train = TrainConfig(epochs=3, batch_size=128, warmup_steps=10, patience=2, amp="off")
    elif name == "quick":
        cfg = Config(profile="quick")
        # ml-100k users have 20..737 ratings (median 65): a 20-item window leaves most of them a
        # long-term history to search.
        cfg.data = DataConfig(dataset="ml-100k", short_len=20, long_max=500,
                              train_targets_per_user=20)
        # sized for 2 CPU cores: ~19k training samples, a few minutes per model
        cfg.model = ModelConfig(d_model=64, heads=4, head_dim=16, ff=128)
        cfg.train = TrainConfig(epochs=8, patience=3, warmup_steps=50)
        # SASRec reads 50 items (an ID model has no long-history stream) with SASRec's dropout;
        # an epoch is a few steps (one window per 50 positions), so it runs to early stopping
        per_model = {"sasrec": {"model.max_len": 50, "model.dropout": 0.2, "train.epochs": 200,
                                "train.patience": 20}}
    elif name == "converge":
        # the shared convergence budget of the comparison (issue 20): quick's data and sizes, but
        # every model predicts every training position (SASRec through its windows, the SID
        # models one sample per position), keeps its best validation NDCG@10 checkpoint and stops
        # after 10 epochs without improvement under a cap of 200; the learning rate warms up over
        # the first half epoch's training targets (the same share for every model, whatever its
        # steps) and is then constant, so a run's schedule does not depend on the cap
        cfg = Config(profile="converge")
        cfg.data = DataConfig(dataset="ml-100k", short_len=20, long_max=500)
        cfg.model = ModelConfig(d_model=64, heads=4, head_dim=16, ff=128)
        cfg.train = TrainConfig(epochs=200, patience=10, warmup_epochs=0.5, schedule="constant")
        # SASRec's step predicts every position of its windows: at quick's 256 windows an epoch
        # is ~8 steps, too few for 10 epochs of patience to outlast validation noise (seed 0
        # stopped at epoch 37 on one CPU, 73 on another). 16 windows (~800 positions, ~120
        # steps an epoch) had the best validation NDCG@10 of 256, 64 and 16 (README)
        per_model = {"sasrec": {"model.max_len": 50, "model.dropout": 0.2, "train.batch_size": 16}}
    elif name == "s3rec":
        # the published protocol of TIGER's Table 1 on the S3-Rec Amazon sets (leave-one-out,
        # full-catalogue ranking, unmasked, Recall = Hit and NDCG at 5 and 10), at a size for 2
        # CPU cores: quick's widths, TIGER's 20-item history, every training position, the
        # converge budget; `--preset paper` gives TIGER's own sizes (a GPU)
        cfg = Config(profile="s3rec")
        cfg.data = DataConfig(dataset="s3rec", name="Toys_and_Games", short_len=20, long_max=500,
                              min_user_interactions=5)
        cfg.model = ModelConfig(d_model=64, heads=4, head_dim=16, ff=128)
        cfg.train = TrainConfig(epochs=200, patience=10, warmup_epochs=0.5, schedule="constant",
                                ranking="unmasked")
        per_model = {"sasrec": {"model.max_len": 50, "model.dropout": 0.5}}  # SASRec on Amazon
    elif name == "paper":
        cfg = Config(profile="paper")
        cfg.data = DataConfig(dataset="ml-100k", short_len=50, long_max=1000)
        cfg.embed = EmbedConfig(method="minilm")
        cfg.train = TrainConfig(epochs=500, lr=1e-4, patience=50, warmup_steps=1000)
        per_model = {}
    else:
        raise ConfigError(f"profile: unknown profile {name!r}; choose one of {PROFILES}")
    overrides = dict(overrides)
    cfg.model.params = None  # the model starts from its own defaults and the profile's sizes
    cfg.model.set_name(overrides.pop("model.name", cfg.model.name), PROFILE_MODEL_SIZES.get(name))
    explicit = overrides
    overrides = {**per_model.get(cfg.model.name, {}), **overrides}  # then the model's own budget
    cfg = cfg.replace(**overrides) if overrides else cfg.validate()
    return _warmup_not_ignored(cfg, explicit, name)


def _warmup_not_ignored(cfg: Config, overrides: dict[str, Any], profile_name: str) -> Config:
    """``cfg``, unless an explicit ``train.warmup_steps`` would be silently replaced by the
    profile's ``train.warmup_epochs``."""
    if "train.warmup_steps" in overrides and cfg.train.warmup_epochs is not None:
        raise ConfigError(f"train.warmup_steps={overrides['train.warmup_steps']} would have no effect: "
                          f"profile {profile_name} counts its warmup in epochs (train.warmup_epochs="
                          f"{cfg.train.warmup_epochs}); set that instead, or add "
                          "train.warmup_epochs=null to count it in steps")
    return cfg


def configure(profile_name: str = "quick", dataset: str | None = None,
              data_dir: str | None = None, seed: int = 0, model: str | None = None,
              variant: str | None = None, optional: dict[str, Any] | None = None,
              explicit: dict[str, Any] | None = None, preset: str | None = None,
              **overrides: Any) -> Config:
    """A profile on a dataset, as the notebooks and the CLI build it: ``dataset`` None keeps
    the profile's own (smoke: synthetic; quick, paper: ml-100k), so ``profile="smoke"`` alone
    is the seconds-long synthetic run. One order of precedence, for the CLI, the notebooks and
    Python alike: the profile, then the model (its own defaults, the profile's sizes and its
    budget), then the ``preset`` (``paper``: the model's paper's own sizes and tokenizer), then
    the ``variant``'s switches, then the explicit dotted ``overrides``, which win;
    a variant's codebook resizing divides the first-level size the config ends with (the one
    asked for). ``optional`` overrides apply only when not None (a notebook parameter left at
    None keeps the profile's value); ``explicit`` holds overrides as a mapping (keys such as
    ``seed`` that would clash with this function's arguments: the CLI's ``--set``)."""
    overrides = {**{k: v for k, v in (optional or {}).items() if v is not None}, **overrides,
                 **(explicit or {})}
    if profile_name not in PROFILES:
        raise ConfigError(f"profile: unknown profile {profile_name!r}; choose one of {PROFILES}")
    extra: dict[str, Any] = {"seed": seed}
    if dataset is not None:
        extra["data.dataset"] = dataset
    if data_dir is not None:
        extra["data.data_dir"] = data_dir
    if variant is not None and model is None:
        model = variant_owner(variant)  # e.g. sidtier+shs is a GLASS row
    if model is not None:
        extra["model.name"] = model
    cfg = profile(profile_name, **extra)
    if preset is not None:
        cfg = apply_preset(cfg, preset)
    if variant is None:
        cfg = cfg.replace(**overrides) if overrides else cfg
    else:
        switches, resize = variant_switches(cfg, variant)
        cfg = _resized(cfg.replace(**{**switches, **overrides}), resize)
    return _warmup_not_ignored(cfg, overrides, profile_name)


def apply_preset(cfg: Config, preset: str) -> Config:
    """``paper``: the settings the model's paper uses where they differ from the shared ones
    (its registry entry's ``paper``: sizes, tokenizer, windows, optimiser), named in the config
    (``preset``) and so in every table row that uses it."""
    if preset != "paper":
        raise ConfigError(f"preset: unknown preset {preset!r}; choose paper (or none)")
    return cfg.replace(**model_entry(cfg.model.name).paper, preset=preset)


def variant_owner(variant: str) -> str:
    """The model whose registered ablation rows include ``variant``."""
    rows = {name: model_entry(name).variants for name in model_names()}
    owners = [name for name, variants in rows.items() if variant in variants]
    if len(owners) != 1:
        known = {name: sorted(v) for name, v in rows.items() if v}
        raise ConfigError(f"variant {variant!r} names {'no' if not owners else 'more than one'} "
                          f"model's ablation row; known: {known}")
    return owners[0]


def apply_variant(cfg: Config, variant: str) -> Config:
    """The model with the switches of one of its ablation rows (the variants its registry entry
    lists, e.g. GLASS §5.3-5.4); a row of another model switches to that model. A ``resize``
    entry divides the first-level codebook (GLASS codebook resizing, §4.3.2)."""
    if cfg.model.variant == variant:
        return cfg
    switches, resize = variant_switches(cfg, variant)
    return _resized(cfg.replace(**switches), resize)


def variant_switches(cfg: Config, variant: str) -> tuple[dict[str, Any], int | None]:
    """The dotted settings of ablation row ``variant`` (with ``model.name`` when the row is
    another model's, and ``model.variant``) and its codebook resizing factor, if any."""
    switches = {"model.variant": variant, **model_entry(variant_owner(variant)).variants[variant]}
    if variant not in model_entry(cfg.model.name).variants:  # another model's row
        switches["model.name"] = variant_owner(variant)
    return switches, switches.pop("resize", None)


def _resized(cfg: Config, resize: int | None) -> Config:
    """GLASS codebook resizing (§4.3.2): the first level divided by ``resize``."""
    if not resize:
        return cfg
    books = list(cfg.tokenizer.codebooks)
    return cfg.replace(**{"tokenizer.codebooks": [max(2, books[0] // resize), *books[1:]]})
