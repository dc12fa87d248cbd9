"""Every tunable of a project in one dataclass, stored with the project as JSON, and the names and
values a person may change after the project exists (`changeable`, `parse_change`).

>>> parse_change("overlap_share=0.25"), parse_change("head.dropout=0.1")
(('overlap_share', 0.25), ('head.dropout', 0.1))
>>> Settings().with_changes(dict([parse_change("auto_accept_precision=off")])).auto_accept_precision
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from models.backbones import BACKBONES, DEFAULT_BACKBONE


@dataclass(frozen=True)
class HeadSettings:
    hidden_units: int = 0
    dropout: float = 0.0
    learning_rate: float = 1e-3
    weight_decay: float = 10.0
    batch_size: int = 256
    cold_steps: int = 300
    warm_steps: int = 100
    # Learning from the unlabeled pool while labels are few (label spreading; see models.heads,
    # chosen by `python -m loop benchmark-heads`); spread_neighbors 0 turns it off.
    spread_neighbors: int = 15
    spread_alpha: float = 0.5
    spread_until: float = 20.0          # labels per class
    spread_max_unlabeled: int = 3000
    spread_weight: float = 1.0
    spread_power: float = 4.0
    prototype_weight: float = 0.0       # class-mean blend while labels are few (0: off)
    prototype_temperature: float = 10.0

    def __post_init__(self):
        if self.spread_neighbors < 0 or not 0 < self.spread_alpha < 1 or self.spread_max_unlabeled < 1:
            raise ValueError("head.spread_neighbors must be 0 (off) or more, head.spread_alpha lie "
                             "in (0, 1) and head.spread_max_unlabeled be 1 or more")
        if min(self.spread_weight, self.spread_power, self.prototype_weight, self.spread_until) < 0 \
                or self.prototype_temperature <= 0:
            raise ValueError("head.spread_weight, spread_power, spread_until and prototype_weight "
                             "must be 0 or more, head.prototype_temperature more than 0")


SEED_PICKERS = ("random", "cold-start")


@dataclass(frozen=True)
class Settings:
    backbone: str = DEFAULT_BACKBONE
    seeds_per_class: int = 1          # labels per class to start from (1 to 3)
    seed_picker: str = "random"       # labeled folders: seeds drawn at random per class, or
                                      # "cold-start": the cold-start strategy (TypiClust) picks
                                      # seeds_per_class x classes images, as for an unlabeled folder
    holdout_fraction: float = 0.2     # share of images kept out for scoring ...
    holdout_size: int = 500           # ... but never more than this many
    strategy: str = "auto"            # see loop.strategies; auto: learned per project (loop.choice)
    control_share: float = 0.1        # share of queries drawn at random and marked, as a control
    auto_accept_precision: float | None = None   # auto-accept after each retrain at this precision
    audit_share: float = 0.1          # share of an audit round's candidates sent to people (kept
                                      # between 2 and 4 times the audits the promise needs)
    batch_size: int = 10              # labels per batch (one retrain each)
    holdout_every: int = 3            # while hold-out images lack labels, every Nth query is one
    seed: int = 0
    # Files and images bigger than these are refused before they are read whole or decoded; a
    # lead raises them for a project that really holds huge scans.
    overlap_share: float = 0.0        # share of human labels also asked of a second annotator
    lease_minutes: float = 15.0       # an image shown to someone is theirs this long, renewed while open
    draft_max_age_seconds: float = 600.0   # answers pending longer are submitted by the trainer
    max_file_mb: float = 100.0
    max_megapixels: float = 50.0
    augment_views: int = 0            # augmented views (flip, turn, zoom, contrast) of each
                                      # labeled pool image the head also trains on; off: see
                                      # bench/README.md, Fine-tuning and augmentation
    head: HeadSettings = field(default_factory=HeadSettings)

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone '{self.backbone}'; known: {', '.join(BACKBONES)}")
        if not 1 <= self.seeds_per_class <= 3:
            raise ValueError(f"seeds_per_class must be 1, 2 or 3, got {self.seeds_per_class}")
        if self.seed_picker not in SEED_PICKERS:
            raise ValueError(f"seed_picker must be one of {', '.join(SEED_PICKERS)}, got "
                             f"'{self.seed_picker}'")
        if not 0 <= self.control_share < 1:
            raise ValueError(f"control_share must lie in [0, 1), got {self.control_share}")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must lie in (0, 1), got {self.holdout_fraction}")
        if self.holdout_size < 1 or self.batch_size < 1 or self.holdout_every < 1:
            raise ValueError("holdout_size, batch_size and holdout_every must be positive")
        if not 0 <= self.overlap_share <= 1:
            raise ValueError(f"overlap_share must lie in [0, 1], got {self.overlap_share}")
        if self.lease_minutes <= 0 or self.draft_max_age_seconds <= 0:
            raise ValueError("lease_minutes and draft_max_age_seconds must be positive")
        if not 0 <= self.augment_views <= 8:
            raise ValueError(f"augment_views must be 0 (off) to 8, got {self.augment_views}")
        if self.max_file_mb <= 0 or self.max_megapixels <= 0:
            raise ValueError("max_file_mb and max_megapixels must be positive")
        from loop.strategies import get_strategy
        get_strategy(self.strategy)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        values = json.loads(text)
        values["head"] = HeadSettings(**values.get("head", {}))
        return cls(**values)

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)

    def with_changes(self, changes: dict[str, object]) -> Settings:
        """These settings with `changes` ({name: value}, head ones as "head.NAME"), validated."""
        head = {k.removeprefix("head."): v for k, v in changes.items() if k.startswith("head.")}
        rest = {k: v for k, v in changes.items() if not k.startswith("head.")}
        if head:
            rest["head"] = dataclasses.replace(self.head, **head)
        return self.replace(**rest)

    def flat(self) -> dict[str, object]:
        """{name: value}, the head's as "head.NAME", in the dataclasses' order."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "head"}
        values.update({f"head.{f.name}": getattr(self.head, f.name)
                       for f in dataclasses.fields(self.head)})
        return values


# Drawn or computed once, when the project is created: changing them later would mean nothing
# (the hold-out set and the seeds exist) or break the project (embeddings are per backbone).
FIXED_AT_CREATION = {
    "backbone": "the images are embedded with it; create a new project for another backbone",
    "seeds_per_class": "the seed labels were drawn when the project was created",
    "seed_picker": "the seed labels were drawn when the project was created",
    "holdout_fraction": "the hold-out set was drawn when the project was created",
    "holdout_size": "the hold-out set was drawn when the project was created",
}


def changeable() -> dict[str, object]:
    """{name: default} of every setting a person may change on an existing project."""
    return {k: v for k, v in Settings().flat().items() if k not in FIXED_AT_CREATION}


def parse_change(text: str) -> tuple[str, object]:
    """`NAME=VALUE` -> (name, value typed like the setting); ValueError names what is wrong."""
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep or not name:
        raise ValueError(f"'{text}' is not NAME=VALUE (for example overlap_share=0.1)")
    if name in FIXED_AT_CREATION:
        raise ValueError(f"setting '{name}' cannot be changed: {FIXED_AT_CREATION[name]}")
    defaults = changeable()
    if name not in defaults:
        raise ValueError(f"unknown setting '{name}'; known: {', '.join(defaults)}")
    default = defaults[name]
    if name == "auto_accept_precision" and raw.lower() in ("", "none", "off"):
        return name, None
    kind = float if default is None else type(default)
    try:
        return name, kind(raw)
    except ValueError:
        wanted = {int: "a whole number", float: "a number"}.get(kind, "text")
        raise ValueError(f"setting '{name}' takes {wanted}, not '{raw}'") from None
