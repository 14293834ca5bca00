"""The model registry: a name maps to its model class, its config dataclass (the model's own
hyperparameters, read flat in the model section), its ablation rows and the kind of ranking
it does. A new model is one module plus one line here.

Kinds: ``sid`` models rank by constrained beam search over semantic IDs; ``id`` models score
every catalogue item. Both hand the same ranked-item arrays to the same masking, tie-breaking
and metric code (glasskit.ranking).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from glasskit.models.dualgr import DUALGR_VARIANTS, DualGR, DualgrConfig
from glasskit.models.gems import GEMS_VARIANTS, Gems, GemsConfig
from glasskit.models.glass import GLASS_VARIANTS, Glass, GlassConfig
from glasskit.models.intrr import INTRR_VARIANTS, IntRR, IntrrConfig
from glasskit.models.sasrec import SASRec, SasrecConfig
from glasskit.models.tiger import Tiger, TigerConfig


@dataclass(frozen=True)
class Entry:
    model: type  # has needs(cfg) -> set of inputs and from_config(cfg, sizes, n_items, inputs)
    config: type  # a dataclass with validate()
    variants: dict[str, dict] = field(default_factory=dict)  # ablation row -> dotted switches
    kind: str = "sid"  # "sid" (beam search over SIDs) or "id" (scores the catalogue)


REGISTRY: dict[str, Entry] = {
    "tiger": Entry(Tiger, TigerConfig),
    "glass": Entry(Glass, GlassConfig, GLASS_VARIANTS),
    "sasrec": Entry(SASRec, SasrecConfig, kind="id"),
    "dualgr": Entry(DualGR, DualgrConfig, DUALGR_VARIANTS),
    "gems": Entry(Gems, GemsConfig, GEMS_VARIANTS),
    "intrr": Entry(IntRR, IntrrConfig, INTRR_VARIANTS),
}


def build_model(cfg, sizes: list[int], n_items: int, inputs: dict | None = None):
    return REGISTRY[cfg.model.name].model.from_config(cfg, sizes, n_items, inputs or {})
