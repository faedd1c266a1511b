"""The privacy ledger: an immutable record of every differentially private mechanism that ran.

Each application of a DP mechanism is one frozen `DpEvent`: a dp_accounting event tree
(``dp_accounting.dp_event``: a Gaussian, Laplace or zCDP release, possibly subsampled and
self-composed) stated under a neighbouring relation, plus the audit trail dp_accounting has no
place for (which round, which client, what unit of privacy, the clip norm). A new mechanism is
a new tree, not a new enum here. A `PrivacyLedger` is the ordered tuple of events; epsilon is
always computed from it (see `privacy.accounting`), never kept as a running number, so a budget
report says exactly what ran and can be recomputed, audited or re-accounted with another
accountant.

A ledger is stored as JSON Lines, one event per line (its tree as nested ``{"type": ...}``
objects), so it can be appended to during a run and read back after a crash. Lines of the flat
format of fedcore <= 0.1 (one Gaussian per line) still read, so a node's ledger survives an
upgrade.

A finished run seals its ledger (`ledger_seal`: the count of events and the SHA-256 of the
file's bytes, recorded in ``summary.json``), so a ledger truncated, emptied, deleted or edited
after the run no longer matches its run, and the report refuses it.

dp_accounting is imported where it is used: importing it costs about a second, and a deployed
SuperNode starts a fresh ClientApp process for every message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dp_accounting import dp_event

SAMPLINGS = ("poisson", "fixed-size", "none")
"""How the units entering a Gaussian release were chosen (see `DpEvent.gaussian`): Poisson
(each independently with probability `sample_rate`), a fixed-size subset without replacement,
or all of them."""

NEIGHBOURING = ("example", "client", "local", "node", "record")
"""What one unit of privacy protects. example: adding or removing one training example;
client: adding or removing one whole client (central DP-FedAvg); local: replacing a client's
whole data by any other (local DP against the server itself, so the L2 sensitivity of a clipped
update is twice the clip norm); node: replacing one graph node's feature vector by any other
(FedGCN's pre-communication; the graph is public; sensitivity twice the feature clip);
record: adding or removing one record of a count (a histogram or count-table release)."""

RELATIONS = ("add-or-remove-one", "replace-one")
"""dp_accounting's neighbouring relations, by the names of its ``NeighboringRelation``."""

_LEAVES = ("GaussianDpEvent", "LaplaceDpEvent", "ZCDpEvent")
_WRAPPERS = (
    "PoissonSampledDpEvent",
    "SampledWithoutReplacementDpEvent",
    "SelfComposedDpEvent",
    "ComposedDpEvent",
)
MAX_COUNT = 10**12
"""The most repetitions one self-composition may state (beyond it the accountant's sums
overflow; no run takes a trillion steps)."""
TREES = _LEAVES + _WRAPPERS
"""The dp_accounting event types a ledger holds: every one fedcore's accountants compose."""


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"DpEvent.{name} must be one of {allowed}, got {value!r}")


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"DpEvent.{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"DpEvent.{name} must be finite, got {value!r}")
    return float(value)


def _positive(name: str, value: Any) -> float:
    value = _real(name, value)
    if value <= 0:
        raise ValueError(f"DpEvent.{name} must be > 0, got {value}")
    return value


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"DpEvent.{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_tree(node: Any) -> None:
    """Raise ValueError unless ``node`` is a dp_accounting tree of `TREES` with valid numbers."""
    from dp_accounting import dp_event

    name = type(node).__name__
    if not isinstance(node, dp_event.DpEvent) or name not in TREES:
        raise ValueError(f"DpEvent.dp_event: {name} is not one of {TREES}")
    if isinstance(node, dp_event.GaussianDpEvent | dp_event.LaplaceDpEvent):
        _positive(f"dp_event {name}.noise_multiplier", node.noise_multiplier)
    elif isinstance(node, dp_event.ZCDpEvent):
        _positive(f"dp_event {name}.rho", node.rho)
        if _real(f"dp_event {name}.xi", node.xi) < 0:
            raise ValueError(f"DpEvent.dp_event {name}.xi must be >= 0, got {node.xi}")
    elif isinstance(node, dp_event.PoissonSampledDpEvent):
        if not 0 < _real(f"dp_event {name}.sampling_probability", node.sampling_probability) <= 1:
            raise ValueError(f"DpEvent.dp_event {name}.sampling_probability must be in (0, 1]")
        _check_tree(node.event)
    elif isinstance(node, dp_event.SampledWithoutReplacementDpEvent):
        size = _integer(f"dp_event {name}.source_dataset_size", node.source_dataset_size, 1)
        _integer(f"dp_event {name}.sample_size", node.sample_size, 1)
        if node.sample_size > size:
            raise ValueError(f"DpEvent.dp_event {name}: sample_size > source_dataset_size")
        _check_tree(node.event)
    elif isinstance(node, dp_event.SelfComposedDpEvent):
        _integer(f"dp_event {name}.count", node.count, 1)
        if node.count > MAX_COUNT:
            raise ValueError(f"DpEvent.dp_event {name}.count must be <= {MAX_COUNT:.0e}")
        _check_tree(node.event)
    else:  # ComposedDpEvent
        if not node.events:
            raise ValueError("DpEvent.dp_event: a ComposedDpEvent needs at least one event")
        for child in node.events:
            _check_tree(child)


def _repeated(tree: dp_event.DpEvent, steps: int) -> dp_event.DpEvent:
    """``tree`` run ``steps`` times: itself once, a ``SelfComposedDpEvent`` otherwise."""
    from dp_accounting import dp_event

    _integer("steps", steps, 1)
    return dp_event.SelfComposedDpEvent(tree, steps) if steps > 1 else tree


def tree_to_dict(node: dp_event.DpEvent) -> dict[str, Any]:
    """A dp_accounting tree as JSON-ready nested dicts: ``{"type": class name, field: ...}``."""
    import attr

    out: dict[str, Any] = {"type": type(node).__name__}
    for field in attr.fields(type(node)):
        value = getattr(node, field.name)
        if field.name == "events":
            value = [tree_to_dict(child) for child in value]
        elif field.name == "event":
            value = tree_to_dict(value)
        out[field.name] = value
    return out


def tree_from_dict(data: Any) -> dp_event.DpEvent:
    """Parse `tree_to_dict` output; a type outside `TREES`, or an unknown or missing field,
    raises ValueError naming it."""
    import attr
    from dp_accounting import dp_event

    if not isinstance(data, dict) or data.get("type") not in TREES:
        got = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"DpEvent.dp_event: type must be one of {TREES}, got {got!r}")
    cls = getattr(dp_event, data["type"])
    fields = attr.fields(cls)
    names = {f.name for f in fields}
    required = {f.name for f in fields if f.default is attr.NOTHING}
    given = data.keys() - {"type"}
    unknown, missing = sorted(given - names), sorted(required - given)
    if unknown or missing:
        raise ValueError(f"DpEvent.dp_event {data['type']}: unknown {unknown}, missing {missing}")
    values = {k: data[k] for k in given}
    if "event" in values:
        values["event"] = tree_from_dict(values["event"])
    if "events" in values:
        if not isinstance(values["events"], list):
            raise ValueError(f"DpEvent.dp_event {data['type']}.events must be a list")
        values["events"] = [tree_from_dict(child) for child in values["events"]]
    return cls(**values)


@dataclass(frozen=True)
class DpEvent:
    """One application of a DP mechanism, as it ran.

    Build one with `gaussian`, `laplace` or `discrete_gaussian`, or directly from any
    dp_accounting tree of `TREES`.

    Args:
        mechanism: a label for the audit trail ("dp-sgd", "gaussian", "laplace", ...); free.
        dp_event: the dp_accounting event tree, noise stated relative to the sensitivity under
            `relation` (a clipped vector that may be replaced by any other moves by twice its
            clip norm, so a replace-one Gaussian's tree holds half the configured multiplier).
        relation: one of `RELATIONS`.
        neighbouring: one of `NEIGHBOURING`.
        round: the federated round in which the mechanism ran; >= 0.
        client: the partition id of the client that ran it, or None for a server-side mechanism.
        clip_norm: the bound on each unit's contribution (L2 for Gaussian noise, L1 for
            Laplace); kept for the audit trail, epsilon does not depend on it.
        noise_multiplier: the configured noise scale divided by `clip_norm`, as the mechanism
            drew it (policy checks and reports read it; accounting reads the tree).
        rerun: the mechanism ran in a round that a resumed run then ran again (its records
            were cut off, its release was not: it was seen, so it still counts). Written to
            JSON only when true.
    """

    mechanism: str
    dp_event: dp_event.DpEvent
    relation: str
    neighbouring: str
    round: int
    client: int | None
    clip_norm: float
    noise_multiplier: float
    rerun: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.mechanism, str) or not self.mechanism:
            raise ValueError(
                f"DpEvent.mechanism must be a non-empty string, got {self.mechanism!r}"
            )
        _check_tree(self.dp_event)
        _choice("relation", self.relation, RELATIONS)
        _choice("neighbouring", self.neighbouring, NEIGHBOURING)
        # Coerce ints to floats so that an event read back from JSON equals the one written.
        for name in ("clip_norm", "noise_multiplier"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        _integer("round", self.round, 0)
        if self.client is not None:
            _integer("client", self.client, 0)
        if not isinstance(self.rerun, bool):
            raise ValueError(f"DpEvent.rerun must be a bool, got {self.rerun!r}")
        _check_relation(self)

    @classmethod
    def gaussian(
        cls,
        mechanism: str,
        noise_multiplier: float,
        sample_rate: float,
        steps: int,
        clip_norm: float,
        sampling: str,
        neighbouring: str,
        round: int,
        client: int | None,
        population: int | None = None,
    ) -> DpEvent:
        """`steps` subsampled Gaussian releases of vectors clipped to `clip_norm` in L2, noise
        std ``noise_multiplier * clip_norm``: DP-SGD steps (Abadi et al. 2016), a client-level
        DP-FedAvg release (McMahan et al. 2018), local DP on an update.

        `sampling` is one of `SAMPLINGS`; `sample_rate` the Poisson probability or the cohort
        fraction (1.0 without sampling); `population` how many units a fixed-size cohort of
        ``round(sample_rate * population)`` is drawn from (fixed-size only). Fixed-size
        sampling, local DP and a node's features are replace-one: the tree holds
        ``noise_multiplier / 2``.
        """
        from dp_accounting import dp_event

        _choice("sampling", sampling, SAMPLINGS)
        _choice("neighbouring", neighbouring, NEIGHBOURING)
        noise_multiplier = _positive("noise_multiplier", noise_multiplier)
        sample_rate = _real("sample_rate", sample_rate)
        if not 0 < sample_rate <= 1:
            raise ValueError(f"DpEvent.sample_rate must be in (0, 1], got {sample_rate}")
        if sampling == "none" and sample_rate != 1.0:
            raise ValueError(f"DpEvent.sample_rate must be 1.0 without sampling, got {sample_rate}")
        if (population is not None) != (sampling == "fixed-size"):
            raise ValueError(
                "DpEvent.population is required for, and only for, fixed-size sampling"
            )
        replace_one = sampling == "fixed-size" or neighbouring in ("local", "node")
        tree = dp_event.GaussianDpEvent(noise_multiplier / 2 if replace_one else noise_multiplier)
        if sampling == "poisson":
            tree = dp_event.PoissonSampledDpEvent(sample_rate, tree)
        elif sampling == "fixed-size":
            _integer("population", population, 1)
            size = sample_rate * population
            cohort = int(size + 0.5)  # the argument `round` shadows the builtin
            if abs(size - cohort) > 1e-6:
                raise ValueError(
                    f"DpEvent.sample_rate * population must be a whole cohort, got {size}"
                )
            tree = dp_event.SampledWithoutReplacementDpEvent(population, cohort, tree)
        tree = _repeated(tree, steps)
        relation = "replace-one" if replace_one else "add-or-remove-one"
        return cls(
            mechanism, tree, relation, neighbouring, round, client, clip_norm, noise_multiplier
        )

    @classmethod
    def laplace(
        cls,
        mechanism: str,
        noise_multiplier: float,
        steps: int,
        clip_norm: float,
        neighbouring: str,
        round: int,
        client: int | None,
    ) -> DpEvent:
        """`steps` Laplace releases of vectors bounded by `clip_norm` in L1 (add/remove-one),
        scale ``noise_multiplier * clip_norm``: each is (1 / noise_multiplier)-DP (Dwork et
        al. 2006)."""
        from dp_accounting import dp_event

        z = _positive("noise_multiplier", noise_multiplier)
        tree = _repeated(dp_event.LaplaceDpEvent(z), steps)
        return cls(mechanism, tree, "add-or-remove-one", neighbouring, round, client, clip_norm, z)

    @classmethod
    def discrete_gaussian(
        cls,
        mechanism: str,
        noise_multiplier: float,
        steps: int,
        clip_norm: float,
        neighbouring: str,
        round: int,
        client: int | None,
    ) -> DpEvent:
        """`steps` releases of integer vectors (counts) with L2 sensitivity `clip_norm` under
        add/remove-one, plus discrete Gaussian noise of scale ``sigma = noise_multiplier *
        clip_norm`` per entry: each is ``1 / (2 noise_multiplier^2)``-zCDP (Canonne, Kamath
        and Steinke 2020, Theorem 14), recorded as a ``ZCDpEvent``."""
        from dp_accounting import dp_event

        z = _positive("noise_multiplier", noise_multiplier)
        tree = _repeated(dp_event.ZCDpEvent(1 / (2 * z * z)), steps)
        return cls(mechanism, tree, "add-or-remove-one", neighbouring, round, client, clip_norm, z)

    @property
    def release(self) -> dp_event.DpEvent:
        """The release that an outer ``SelfComposedDpEvent`` repeats (the tree otherwise)."""
        return (
            self.dp_event.event
            if type(self.dp_event).__name__ == "SelfComposedDpEvent"
            else self.dp_event
        )

    @property
    def steps(self) -> int:
        """How many times the release ran: the count of an outer ``SelfComposedDpEvent``."""
        return self.dp_event.count if self.release is not self.dp_event else 1

    @property
    def sampling(self) -> str | None:
        """One of `SAMPLINGS` for a (self-composed) release of one leaf; None for other trees."""
        node = self.release
        name = type(node).__name__
        if name == "PoissonSampledDpEvent":
            return "poisson"
        if name == "SampledWithoutReplacementDpEvent":
            return "fixed-size"
        return "none" if name in _LEAVES else None

    @property
    def sample_rate(self) -> float | None:
        """The Poisson probability or the cohort fraction; 1.0 unsampled; None for other trees."""
        node = self.release
        sampling = self.sampling
        if sampling == "poisson":
            return node.sampling_probability
        if sampling == "fixed-size":
            return node.sample_size / node.source_dataset_size
        return 1.0 if sampling == "none" else None

    @property
    def population(self) -> int | None:
        """How many units a fixed-size cohort was drawn from (None for other samplings)."""
        return getattr(self.release, "source_dataset_size", None)

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dictionary, the tree as nested dicts (`tree_to_dict`)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["dp_event"] = tree_to_dict(self.dp_event)
        if not self.rerun:  # ledgers without resumes read as they always did
            del out["rerun"]
        return out

    def to_json(self) -> str:
        """The event as one line of JSON (`to_dict`; no NaN or infinity)."""
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> DpEvent:
        """Parse `to_json` output; bad JSON or a bad event raises ValueError."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DpEvent:
        """Parse and validate an event; unknown or missing keys raise ValueError. The flat
        format of fedcore <= 0.1 (``sampling``, ``sample_rate``, ``steps``, ... and no tree)
        reads as `gaussian`."""
        if not isinstance(data, dict):
            raise ValueError(f"a DpEvent must be a JSON object, got {type(data).__name__}")
        if "dp_event" not in data and "sampling" in data:
            return _from_flat(data)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(data.keys() - fields)
        missing = sorted(fields - {"rerun"} - data.keys())
        if unknown or missing:
            raise ValueError(f"DpEvent keys: unknown {unknown}, missing {missing}")
        return cls(**(data | {"dp_event": tree_from_dict(data["dp_event"])}))


def _nodes(tree: Any):
    yield tree
    for child in [getattr(tree, "event", None), *getattr(tree, "events", ())]:
        if child is not None:
            yield from _nodes(child)


def _check_relation(event: DpEvent) -> None:
    """ValueError unless the tree, its relation and its unit agree: the accountant trusts the
    tree, so a tree stated under the wrong relation, or holding another noise than the
    event's ``noise_multiplier``, would under-report epsilon."""
    names = {type(node).__name__ for node in _nodes(event.dp_event)}
    replace_one = event.relation == "replace-one"
    if event.neighbouring in ("local", "node") and not replace_one:
        raise ValueError(
            f"DpEvent.relation: neighbouring {event.neighbouring!r} replaces a unit's data by "
            "any other, so it is stated under 'replace-one'"
        )
    if "SampledWithoutReplacementDpEvent" in names and not replace_one:
        raise ValueError("DpEvent.relation: sampling without replacement is 'replace-one'")
    if "PoissonSampledDpEvent" in names and replace_one:
        raise ValueError("DpEvent.relation: Poisson sampling is accounted 'add-or-remove-one'")
    leaf = event.release
    for _ in range(2):  # a sampled release: its mechanism
        if type(leaf).__name__ in _LEAVES:
            break
        leaf = getattr(leaf, "event", leaf)
    z, name = event.noise_multiplier, type(leaf).__name__
    expected = {
        "GaussianDpEvent": ("noise_multiplier", z / 2 if replace_one else z),
        "LaplaceDpEvent": ("noise_multiplier", z),
        "ZCDpEvent": ("rho", 1 / (2 * z * z)),
    }.get(name)
    if event.sampling is not None and expected is not None:
        field_name, value = expected
        if not math.isclose(getattr(leaf, field_name), value, rel_tol=1e-9):
            raise ValueError(
                f"DpEvent.noise_multiplier {z:g} does not match the tree's {name}."
                f"{field_name} = {getattr(leaf, field_name):g} (expected {value:g})"
            )


_FLAT = (
    "mechanism",
    "noise_multiplier",
    "sample_rate",
    "steps",
    "clip_norm",
    "sampling",
    "neighbouring",
    "round",
    "client",
)


def _from_flat(data: dict[str, Any]) -> DpEvent:
    fields = set(_FLAT) | {"population"}
    unknown, missing = sorted(data.keys() - fields), sorted(set(_FLAT) - data.keys())
    if unknown or missing:
        raise ValueError(f"DpEvent keys: unknown {unknown}, missing {missing}")
    if data["mechanism"] not in ("dp-sgd", "gaussian"):
        raise ValueError(
            f"DpEvent.mechanism of a flat event must be a Gaussian, got {data['mechanism']!r}"
        )
    return DpEvent.gaussian(**data)


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
        return "".join(e.to_json() + "\n" for e in self.events)

    @classmethod
    def from_jsonl(cls, text: str) -> PrivacyLedger:
        """Parse `to_jsonl` output; blank lines are skipped, a bad line names its number."""
        events = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                events.append(DpEvent.from_json(line))
            except (ValueError, TypeError) as error:  # json.JSONDecodeError is a ValueError
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


def ledger_seal(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The seal of the ledger file at ``path``: its number of events and the SHA-256 of its
    bytes (a missing file is an empty ledger). A run records it where it finishes; the report
    checks the file against it."""
    path = Path(path)
    data = path.read_bytes() if path.exists() else b""
    events = sum(1 for line in data.splitlines() if line.strip())
    return {"events": events, "sha256": hashlib.sha256(data).hexdigest()}
