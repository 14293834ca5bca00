"""The model interface: what every registered model provides, and the optional capabilities the
trainer and the ranking path look for. A new model is one module implementing :class:`Model`
and :class:`SidModel` (beam search over semantic IDs; subclassing
``glasskit.models.sid_decoder.SidDecoder`` gives all of it but ``encode``) or :class:`IdModel`
(scores every item), plus one line in ``glasskit.models.REGISTRY``."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Model(Protocol):
    @classmethod
    def needs(cls, cfg: Any) -> set[str]:
        """Inputs beyond the short window the batcher must provide: ``long`` (GLASS's
        retrieval index), ``tier``, ``neighbours``, ``first_codes``, ``item_codes``, ``items``
        (item-id windows), ``history``, ``negatives``."""

    @classmethod
    def from_config(cls, cfg: Any, sizes: list[int], n_items: int, inputs: dict) -> Model:
        """The model for ``cfg`` over SID levels of ``sizes`` and ``n_items`` items."""

    def forward(self, batch: dict[str, torch.Tensor], loss: bool = False) -> Any:
        """Teacher forcing: the training loss with ``loss``, else what evaluation reads."""


@runtime_checkable
class SidModel(Model, Protocol):
    """Ranked by constrained beam search (glasskit.decode)."""

    def encode(self, batch: dict[str, torch.Tensor]) -> dict: ...

    def start_decoding(self, state: dict) -> dict: ...

    def decode_step(self, state: dict, prefix: torch.Tensor) -> torch.Tensor: ...

    def select(self, state: dict, rows: torch.Tensor) -> dict: ...

    def after_step(self, state: dict, prefix: torch.Tensor, batch: dict[str, torch.Tensor],
                   beams: int) -> dict: ...


@runtime_checkable
class IdModel(Model, Protocol):
    """Ranked by a score for every catalogue item."""

    def score_items(self, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...


# -- optional capabilities ---------------------------------------------------------------------
@runtime_checkable
class TrainsOnWindows(Protocol):
    """Trains on windows tiling every training prefix instead of the shared training targets
    (SASRec with ``train_on: all``)."""

    @classmethod
    def training_windows(cls, cfg: Any) -> int | None:
        """The window length, or None for the shared training targets."""


@runtime_checkable
class StagedTraining(Protocol):
    """Changes what it trains with the epoch (GEMs' indexer stages, gems.md §3.4). Only the
    final stage's checkpoints are candidates for evaluation, and early stopping counts from
    that stage on."""

    def set_epoch(self, epoch: int) -> None: ...

    def stage_at(self, epoch: int) -> int: ...

    def final_stage_epoch(self) -> int:
        """The first 0-based epoch whose checkpoint may be evaluated."""


@runtime_checkable
class MultiBranch(Protocol):
    """Decodes several branches whose candidates the ranking merges (DualGR's windows)."""

    branches: tuple[str, ...]


@runtime_checkable
class ChecksData(Protocol):
    """Refuses data on which a row would not be what its name says (DualGR's ``no-entp`` where
    the data has no exposure negatives: it would train exactly as DualGR)."""

    @classmethod
    def check_data(cls, cfg: Any, ds: Any) -> None: ...


@runtime_checkable
class WeighsLoss(Protocol):
    """Says what its loss's normalisation gives each term (DualGR's eq. 10); the trainer
    prints it once per run and records it in metrics.json."""

    def loss_weights(self, batch: dict[str, torch.Tensor]) -> dict[str, float] | None: ...
