"""The privacy ledger: an immutable record of every differentially private mechanism that ran.

Following dp_accounting's event model, each application of a DP mechanism is one frozen
`DpEvent`, and a `PrivacyLedger` is the ordered tuple of them. Epsilon is always computed from
the ledger (see `privacy.accounting`), never kept as a running number, so a budget report says
exactly what ran and can be recomputed, audited or re-accounted with another accountant.

A ledger is stored as JSON Lines, one event per line, so it can be appended to during a run and
read back after a crash.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MECHANISMS = ("dp-sgd", "gaussian")
"""dp-sgd: sample-level DP-SGD steps (Abadi et al. 2016); gaussian: one Gaussian release of a
clipped vector, e.g. client-level DP-FedAvg (McMahan et al. 2018) or local DP on an update."""

SAMPLINGS = ("poisson", "fixed-size", "none")
"""How the protected units entering the mechanism were chosen: Poisson (each independently with
probability `sample_rate`), a fixed-size subset without replacement, or all of them."""

NEIGHBOURING = ("example", "client", "local", "node")
"""What one unit of privacy protects. example: adding or removing one training example;
client: adding or removing one whole client (central DP-FedAvg); local: replacing a client's
whole data by any other (local DP against the server itself, so the L2 sensitivity of a clipped
update is twice the clip norm); node: replacing one graph node's feature vector by any other
(FedGCN's pre-communication; the graph is public; sensitivity twice the feature clip)."""


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"DpEvent.{name} must be one of {allowed}, got {value!r}")


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"DpEvent.{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"DpEvent.{name} must be finite, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"DpEvent.{name} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class DpEvent:
    """One application of a DP mechanism, as it ran.

    Args:
        mechanism: one of `MECHANISMS`.
        noise_multiplier: Gaussian noise standard deviation divided by `clip_norm` (the L2
            sensitivity under add/remove-one neighbouring); > 0 and finite.
        sample_rate: probability (Poisson) or fraction (fixed-size) of units sampled per step;
            1.0 when every unit takes part. In (0, 1].
        steps: how many times the mechanism was applied with these parameters; >= 1.
        clip_norm: the L2 clipping bound; kept for the audit trail, epsilon does not depend on it.
        sampling: one of `SAMPLINGS`.
        neighbouring: one of `NEIGHBOURING`.
        round: the federated round in which the mechanism ran; >= 0.
        client: the partition id of the client that ran it, or None for a server-side mechanism.
        population: how many units the fixed-size sample was drawn from (the cohort size is
            ``round(sample_rate * population)``); required for sampling="fixed-size" only.
    """

    mechanism: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    clip_norm: float
    sampling: str
    neighbouring: str
    round: int
    client: int | None
    population: int | None = None

    def __post_init__(self) -> None:
        _choice("mechanism", self.mechanism, MECHANISMS)
        _choice("sampling", self.sampling, SAMPLINGS)
        _choice("neighbouring", self.neighbouring, NEIGHBOURING)
        # Coerce ints to floats so that an event read back from JSON equals the one written.
        for name in ("noise_multiplier", "sample_rate", "clip_norm"):
            object.__setattr__(self, name, _real(name, getattr(self, name)))
        if self.noise_multiplier <= 0:
            raise ValueError(f"DpEvent.noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"DpEvent.sample_rate must be in (0, 1], got {self.sample_rate}")
        if self.clip_norm <= 0:
            raise ValueError(f"DpEvent.clip_norm must be > 0, got {self.clip_norm}")
        _integer("steps", self.steps, 1)
        _integer("round", self.round, 0)
        if self.client is not None:
            _integer("client", self.client, 0)
        if (self.population is not None) != (self.sampling == "fixed-size"):
            raise ValueError(
                "DpEvent.population is required for, and only for, fixed-size sampling"
            )
        if self.population is not None:
            _integer("population", self.population, 1)
            size = self.sample_rate * self.population
            if abs(size - round(size)) > 1e-6:
                raise ValueError(
                    f"DpEvent.sample_rate * population must be a whole cohort, got {size}"
                )

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dictionary, one key per field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DpEvent:
        """Parse and validate an event; unknown or missing keys raise ValueError."""
        if not isinstance(data, dict):
            raise ValueError(f"a DpEvent must be a JSON object, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        unknown, missing = sorted(data.keys() - fields), sorted(required - data.keys())
        if unknown or missing:
            raise ValueError(f"DpEvent keys: unknown {unknown}, missing {missing}")
        return cls(**data)


@dataclass(frozen=True)
class PrivacyLedger:
    """An ordered, immutable record of `DpEvent`s; every change returns a new ledger."""

    events: tuple[DpEvent, ...] = ()

    def __post_init__(self) -> None:
        events = tuple(self.events)
        for event in events:
            if not isinstance(event, DpEvent):
                raise TypeError(f"a PrivacyLedger holds DpEvents, got {type(event).__name__}")
        object.__setattr__(self, "events", events)

    def __len__(self) -> int:
        return len(self.events)

    def record(self, *events: DpEvent) -> PrivacyLedger:
        """A new ledger with `events` appended (each already validated by `DpEvent`)."""
        return PrivacyLedger(self.events + events)

    def for_client(self, client: int | None) -> PrivacyLedger:
        """The events run by one client (None: the server-side events)."""
        return PrivacyLedger(tuple(e for e in self.events if e.client == client))

    def up_to_round(self, round: int) -> PrivacyLedger:
        """The events of rounds <= `round`, in recorded order."""
        return PrivacyLedger(tuple(e for e in self.events if e.round <= round))

    def clients(self) -> list[int]:
        """The sorted ids of the clients with at least one event (the server excluded)."""
        return sorted({e.client for e in self.events if e.client is not None})

    def to_jsonl(self) -> str:
        """One JSON object per event and per line, in recorded order."""
        return "".join(json.dumps(e.to_dict(), allow_nan=False) + "\n" for e in self.events)

    @classmethod
    def from_jsonl(cls, text: str) -> PrivacyLedger:
        """Parse `to_jsonl` output; blank lines are skipped, a bad line names its number."""
        events = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                events.append(DpEvent.from_dict(json.loads(line)))
            except ValueError as error:  # json.JSONDecodeError is a ValueError
                raise ValueError(f"privacy ledger line {number}: {error}") from error
        return cls(tuple(events))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the ledger as JSON Lines; a temporary file and rename keep it whole on a crash."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_jsonl(), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrivacyLedger:
        """Read a ledger written by `save`."""
        return cls.from_jsonl(Path(path).read_text(encoding="utf-8"))
