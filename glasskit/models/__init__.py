"""The model registry: a name maps to its model class, its config dataclass (the model's own
hyperparameters, read flat in the model section), its ablation rows, the kind of ranking it
does and its paper's own settings (the ``paper`` preset). A new model is one module plus one line here.

Kinds: ``sid`` models rank by constrained beam search over semantic IDs; ``id`` models score
every catalogue item. Both hand the same ranked-item arrays to the same masking, tie-breaking
and metric code (glasskit.ranking).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from glasskit.models.dualgr import DUALGR_PAPER, DUALGR_VARIANTS, DualGR, DualgrConfig
from glasskit.models.gems import GEMS_PAPER, GEMS_VARIANTS, Gems, GemsConfig
from glasskit.models.glass import GLASS_PAPER, GLASS_VARIANTS, Glass, GlassConfig
from glasskit.models.intrr import INTRR_PAPER, INTRR_VARIANTS, IntRR, IntrrConfig
from glasskit.models.sasrec import SASREC_PAPER, SASRec, SasrecConfig
from glasskit.models.tiger import TIGER_PAPER, Tiger, TigerConfig


@dataclass(frozen=True)
class Entry:
    model: type  # has needs(cfg) -> set of inputs and from_config(cfg, sizes, n_items, inputs)
    config: type  # a dataclass with validate()
    variants: dict[str, dict] = field(default_factory=dict)  # ablation row -> dotted switches
    kind: str = "sid"  # "sid" (beam search over SIDs) or "id" (scores the catalogue)
    paper: dict = field(default_factory=dict)  # the paper's own settings (``--preset paper``)


REGISTRY: dict[str, Entry] = {
    "tiger": Entry(Tiger, TigerConfig, paper=TIGER_PAPER),
    "glass": Entry(Glass, GlassConfig, GLASS_VARIANTS, paper=GLASS_PAPER),
    "sasrec": Entry(SASRec, SasrecConfig, kind="id", paper=SASREC_PAPER),
    "dualgr": Entry(DualGR, DualgrConfig, DUALGR_VARIANTS, paper=DUALGR_PAPER),
    "gems": Entry(Gems, GemsConfig, GEMS_VARIANTS, paper=GEMS_PAPER),
    "intrr": Entry(IntRR, IntrrConfig, INTRR_VARIANTS, paper=INTRR_PAPER),
}


def build_model(cfg, sizes: list[int], n_items: int, inputs: dict | None = None):
    return REGISTRY[cfg.model.name].model.from_config(cfg, sizes, n_items, inputs or {})
