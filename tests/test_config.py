import subprocess
import sys

import pytest
import yaml

import glasskit as gk
from glasskit.config import Config, load_config
from glasskit.errors import ConfigError


def test_profiles_valid_and_distinct():
    cfgs = {p: gk.profile(p) for p in ("smoke", "quick", "paper")}
    assert cfgs["smoke"].data.dataset == "synthetic"
    assert cfgs["quick"].data.dataset == "ml-100k"
    assert cfgs["paper"].data.short_len == 50
    assert len({c.hash() for c in cfgs.values()}) == 3


def test_yaml_round_trip(tmp_path):
    cfg = gk.profile("quick", **{"data.short_len": 7, "seed": 3})
    cfg.to_yaml(tmp_path / "c.yaml")
    back = load_config(tmp_path / "c.yaml")
    assert back == cfg and back.hash() == cfg.hash()


def test_hash_is_stable_across_processes():
    code = "import glasskit as gk; print(gk.profile('quick').hash(), gk.profile('smoke').hash('data'))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": str(s)}).stdout for s in (1, 2)}
    assert len(outs) == 1
    assert outs.pop().split() == [gk.profile("quick").hash(), gk.profile("smoke").hash("data")]


def test_section_hash_ignores_other_sections():
    a = gk.profile("quick")
    b = a.replace(**{"embed.dim": 32})
    assert a.hash("data") == b.hash("data") and a.hash() != b.hash()
    assert a.hash("data") != a.replace(**{"data.short_len": 21}).hash("data")


@pytest.mark.parametrize("overrides,match", [
    ({"data.short_len": 0}, "data.short_len must be a positive integer"),
    ({"data.short_len": "50"}, "data.short_len must be a positive integer"),
    ({"data.dataset": "ml-20m"}, "unknown dataset 'ml-20m'"),
    ({"data.min_user_interactions": 2}, "min_user_interactions must be >= 3"),
    ({"embed.method": "bert"}, "embed.method"),
    ({"data.nope": 1}, "unknown config key 'data.nope'"),
    ({"seed": -1}, "seed must be a non-negative integer"),
])
def test_invalid_values(overrides, match):
    with pytest.raises(ConfigError, match=match):
        gk.profile("quick", **overrides)


def test_invalid_profile_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        gk.profile("fast")
    (tmp_path / "bad.yaml").write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="unknown config key 'modle'"):
        Config.from_dict({"modle": {}})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_model_configs_are_per_model_and_read_flat(tmp_path):
    glass = gk.profile("smoke", **{"model.name": "glass", "model.retrieve_max": 9})
    assert type(glass.model.params).__name__ == "GlassConfig"
    assert glass.model.retrieve_max == 9 and glass.model.enc_layers == 1  # smoke sizes
    tiger = gk.profile("smoke")
    assert type(tiger.model.params).__name__ == "TigerConfig"
    assert "sid_tier" not in tiger.to_dict()["model"]  # no grab-bag: only TIGER's own settings
    with pytest.raises(ConfigError, match="unknown config key 'model.sid_tier' for model tiger"):
        tiger.replace(**{"model.sid_tier": True})
    switched = tiger.replace(**{"model.name": "glass"})
    assert switched.model.dec_layers == 1 and switched.model.sid_tier  # shared kept, own defaults
    text = glass.to_yaml(tmp_path / "c.yaml")
    assert "retrieve_max: 9" in text and "params" not in text  # flat in the model section
    again = load_config(tmp_path / "c.yaml")
    assert again.hash() == glass.hash() and again.model.retrieve_max == 9


def test_configs_written_before_per_model_configs_stay_readable(tmp_path):
    """A model section that held every model's switches (a TIGER run with GLASS's defaults) is
    read: other models' keys are dropped, unknown keys still fail."""
    legacy = gk.profile("quick").to_dict()
    legacy["model"].update({"sid_tier": True, "tiers": 10, "hard_search": True,
                            "retrieve_max": 64, "gate": "learned", "neighbours": False})
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(legacy))
    cfg = load_config(tmp_path / "old.yaml")
    assert cfg.model.name == "tiger" and cfg.hash() == gk.profile("quick").hash()
    legacy["model"]["warp_drive"] = 1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(legacy))
    with pytest.raises(ConfigError, match="unknown config key 'model.warp_drive' for model tiger"):
        load_config(tmp_path / "bad.yaml")


def test_one_order_of_precedence_for_the_cli_notebooks_and_python():
    """Profile, then model, then variant, then explicit values (which win); a variant's codebook
    resizing divides the first level the config ends with."""
    from glasskit.cli import _train_config, build_parser

    explicit = {"tokenizer.codebooks": [16, 8, 8], "model.gate": "fixed", "train.epochs": 2}
    python = gk.configure("smoke", variant="sidtier+shs+cr", **explicit)
    cli = _train_config(build_parser().parse_args(
        ["train", "--profile", "smoke", "--variant", "sidtier+shs+cr", "--codebooks", "16,8,8",
         "--set", "model.gate=fixed", "--epochs", "2"]))
    assert cli.hash() == python.hash()
    assert python.tokenizer.codebooks == [4, 8, 8] and python.model.gate == "fixed"
    off = gk.configure("smoke", variant="tiger", **{"model.hard_search": True})
    assert off.model.hard_search is True and off.model.sid_tier is False  # explicit beats the row
    cli_off = _train_config(build_parser().parse_args(
        ["train", "--profile", "smoke", "--variant", "tiger", "--set", "model.hard_search=true"]))
    assert cli_off.hash() == off.hash()
    assert gk.apply_variant(gk.configure("smoke", model="glass"), "sidtier+shs").hash() == \
        gk.configure("smoke", variant="sidtier+shs").hash()


def test_a_model_config_starts_from_its_own_defaults():
    """GEMs' recent-stream blocks default to 1 (GemsConfig), whatever model the profile started
    from; smoke's one-layer sizes apply to every model that has the field."""
    assert gk.configure("quick", model="gems").model.enc_layers == 1
    assert gk.profile("quick").replace(**{"model.name": "gems"}).model.enc_layers == 1
    assert gk.profile("quick", **{"model.enc_layers": 3}).replace(
        **{"model.name": "gems"}).model.enc_layers == 1  # nothing carried over from TIGER
    smoke = gk.configure("smoke", model="gems")
    assert smoke.model.enc_layers == smoke.model.dec_layers == 1
    assert gk.configure("smoke", variant="sidtier+shs").model.dec_layers == 1


def test_cli_set_reaches_keys_named_like_arguments():
    from glasskit.cli import _train_config, build_parser

    cfg = _train_config(build_parser().parse_args(["train", "--profile", "smoke", "--set", "seed=3"]))
    assert cfg.seed == 3 and cfg.hash() == gk.configure("smoke", seed=3).hash()


@pytest.mark.parametrize("model", ["tiger", "glass", "sasrec", "dualgr", "gems", "intrr"])
def test_paper_preset_sets_the_papers_own_settings_and_names_the_row(model, tmp_path):
    from glasskit.analysis.run_tables import config_diff, row_label
    from glasskit.models import REGISTRY
    from glasskit.runs import create_run

    quick = gk.configure("quick", model=model)
    paper = gk.configure("quick", model=model, preset="paper")
    changed = {k: v for k, v in REGISTRY[model].paper.items()
               if _get(paper, k) != _get(quick, k)}
    assert changed, f"{model}: the paper preset changes nothing"
    for key, value in REGISTRY[model].paper.items():
        assert _get(paper, key) == value, key
    assert paper.preset == "paper" and paper.hash() != quick.hash()
    run = create_run(paper, model, root=tmp_path, data_fingerprint="f" * 16)
    assert row_label(run).endswith("(paper preset)") and config_diff(paper) == []
    # explicit values still win over the preset; a variant applies on top of it
    first = REGISTRY[model].paper.get("model.d_model", 64)
    assert gk.configure("quick", model=model, preset="paper",
                        **{"model.d_model": first + 8}).model.d_model == first + 8


def test_presets_compose_with_variants_and_refuse_unknown_names():
    cfg = gk.configure("quick", variant="sidtier+shs+cr", preset="paper")
    assert cfg.data.short_len == 50 and cfg.tokenizer.codebooks[0] == 16  # GLASS's 64, resized / 4
    cfg = gk.configure("quick", variant="no-s2d", preset="paper")
    assert cfg.model.layers == 4 and cfg.model.s2d is False
    with pytest.raises(ConfigError, match="unknown preset 'industrial'"):
        gk.configure("quick", model="tiger", preset="industrial")


def _get(cfg, dotted):
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)
