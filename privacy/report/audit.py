"""The check of a run's ledger against the run, before the report states any guarantee.

A report that sums whatever ``ledger.jsonl`` holds would state a smaller epsilon for a ledger
cut short, and a guarantee for a run that had no DP. So the report first checks the ledger
against two things the run wrote itself:

- the seal in ``summary.json`` (:func:`privacy.ledger.ledger_seal`: count and SHA-256), which
  any change to the file after the run breaks;
- what the configuration and the rounds of ``metrics.jsonl`` imply (:func:`mismatches`): the
  DP mode's events and only those, in the rounds that ran: one server-side release per
  aggregated round under client-level, distributed and record-level DP; one event per client
  that trained under sample-level, local and distributed DP (at least as many clients as the
  round aggregated, at most as many as it sampled); a task setup's events (round 0) only
  after a setup ran.

Events marked ``rerun`` (:attr:`privacy.ledger.DpEvent.rerun`) ran in a round that a resumed
run then ran again: that round's records were cut off and rewritten, so these events match no
record, and are left out of the matching. They still count towards epsilon: their release was
seen.

Any mismatch raises :class:`LedgerMismatch` naming it. All functions here are pure.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from privacy.ledger import DpEvent, PrivacyLedger

SERVER_UNIT = {"client": "client", "distributed": "client", "record": "record"}
"""privacy.dp -> the unit of the server's release each aggregated round (no entry: none)."""

CLIENT_UNIT = {
    "sample": "example",
    "sample-distributed": "example",
    "local": "local",
    "distributed": "client",
}
"""privacy.dp -> the unit each client's own event protects (no entry: clients record none)."""

SETUP_UNIT = "node"
"""The unit of a task setup's release (FedGCN's pre-communication), recorded as round 0."""


class LedgerMismatch(ValueError):
    """The ledger does not match the run it claims to describe: no guarantee can be stated."""


def seal_mismatch(recorded: Any, actual: dict[str, Any]) -> str | None:
    """Why the ledger file (sealed now as ``actual``) is not the one the run sealed as
    ``recorded`` (None: it is)."""
    if not isinstance(recorded, dict) or set(recorded) != {"events", "sha256"}:
        return f"summary.json's ledger seal is missing or malformed ({recorded!r})"
    if recorded == actual:
        return None
    return (
        f"ledger.jsonl differs from the ledger the run sealed in summary.json: "
        f"{recorded['events']} events, sha256 {str(recorded['sha256'])[:16]}... sealed; "
        f"the file holds {actual['events']} events, sha256 {actual['sha256'][:16]}..."
    )


def mismatches(
    dp: str, rounds: list[dict[str, Any]], ledger: PrivacyLedger, num_clients: int | None = None
) -> list[str]:
    """What in ``ledger`` does not fit a run of ``privacy.dp = dp`` whose rounds' records are
    ``rounds`` (``metrics.jsonl``) among ``num_clients`` clients (None: not checked); empty if
    it all fits."""
    by_round = {int(r["round"]): r for r in rounds}
    problems: list[str] = []
    events: dict[int, list[DpEvent]] = {}
    for e in ledger.events:
        if not e.rerun:
            events.setdefault(e.round, []).append(e)
    for r in sorted(events):
        if r == 0:
            problems += _setup_mismatches(events[0], by_round.get(1))
        elif r not in by_round:
            problems.append(f"the ledger holds events of round {r}, which metrics.jsonl does not")
    for r, record in sorted(by_round.items()):
        found = events.get(r, [])
        stray = [e for e in found if e.neighbouring == SETUP_UNIT]
        if stray:
            problems.append(f"round {r}: a setup's {SETUP_UNIT!r} event outside round 0")
        server = [e for e in found if e.client is None and e.neighbouring != SETUP_UNIT]
        clients = [e for e in found if e.client is not None]
        problems += _server_mismatches(dp, r, record, server)
        problems += _client_mismatches(dp, r, record, clients, num_clients)
    return problems


def _setup_mismatches(found: list[DpEvent], first: dict[str, Any] | None) -> list[str]:
    if first is None or "setup" not in first:
        return [f"the ledger holds {len(found)} round-0 (setup) events, but no setup ran"]
    wrong = [e for e in found if e.neighbouring != SETUP_UNIT or e.client is not None]
    if wrong:
        return [f"round 0: {len(wrong)} events are not a setup's server-side {SETUP_UNIT!r} ones"]
    return []


def _server_mismatches(dp: str, r: int, record: dict[str, Any], found: list[DpEvent]) -> list[str]:
    unit = SERVER_UNIT.get(dp)
    if unit is None:
        if found:
            return [
                f"round {r}: the ledger holds {len(found)} server-side release(s), but "
                f"privacy.dp = {dp!r} has the server release nothing noised"
            ]
        return []
    status = record.get("status")
    # a non-finite sum was noised (and recorded) before it was refused
    expected = 1 if status == "aggregated" else 0
    allowed = {expected, 1} if record.get("non-finite") else {expected}
    if len(found) not in allowed:
        if expected and not found:
            return [
                f"round {r} aggregated, but its server-side release (privacy.dp = {dp!r}) is "
                "missing from the ledger"
            ]
        return [
            f"round {r} ({status}): the ledger holds {len(found)} server-side releases, "
            f"{expected} expected"
        ]
    wrong = sorted({e.neighbouring for e in found} - {unit})
    if wrong:
        return [
            f"round {r}: the server's release protects {wrong}, privacy.dp = {dp!r} protects "
            f"{unit!r}"
        ]
    return []


def _client_mismatches(
    dp: str, r: int, record: dict[str, Any], found: list[DpEvent], num_clients: int | None
) -> list[str]:
    unit = CLIENT_UNIT.get(dp)
    if unit is None:
        if found:
            return [
                f"round {r}: the ledger holds {len(found)} client events, but under "
                f"privacy.dp = {dp!r} clients record none"
            ]
        return []
    problems = []
    counts = Counter(e.client for e in found)
    twice = sorted(c for c, n in counts.items() if n > 1)
    if twice:
        problems.append(f"round {r}: clients {twice} have more than one event")
    if num_clients is not None:
        unknown = sorted(c for c in counts if c >= num_clients)
        if unknown:
            problems.append(f"round {r}: clients {unknown} are not among the {num_clients}")
    wrong = sorted({e.neighbouring for e in found} - {unit})
    if wrong:
        problems.append(
            f"round {r}: client events protect {wrong}, privacy.dp = {dp!r} protects {unit!r}"
        )
    sampled = int(record.get("train-clients", 0))
    aggregated = (
        int(record.get("aggregated-clients", 0)) if record.get("status") == "aggregated" else 0
    )
    if len(counts) > sampled:
        problems.append(
            f"round {r}: the ledger holds events of {len(counts)} clients, but {sampled} were "
            "sampled"
        )
    if len(counts) < aggregated:
        problems.append(
            f"round {r} aggregated {aggregated} clients' updates, but the ledger holds the "
            f"events of {len(counts)} (privacy.dp = {dp!r}: every client that trained records "
            "one)"
        )
    return problems


def check_run(
    dp: str,
    rounds: list[dict[str, Any]],
    ledger_text: str,
    recorded_seal: Any,
    actual_seal: dict[str, Any],
    num_clients: int | None = None,
) -> PrivacyLedger:
    """The run's ledger parsed from ``ledger_text``, once it matches the run's seal
    (``recorded_seal``, against the file's ``actual_seal``) and what ``dp`` and ``rounds``
    imply; :class:`LedgerMismatch` naming every mismatch otherwise. A run without DP and
    without a ledger needs no seal: "no differential privacy" claims nothing."""
    problems = []
    unsealed = recorded_seal is None and dp == "off" and actual_seal["events"] == 0
    if not unsealed:
        problem = seal_mismatch(recorded_seal, actual_seal)
        problems += [problem] if problem else []
    try:
        ledger = PrivacyLedger.from_jsonl(ledger_text)
    except ValueError as err:
        raise LedgerMismatch(_message([*problems, str(err)])) from None
    problems += mismatches(dp, rounds, ledger, num_clients)
    if problems:
        raise LedgerMismatch(_message(problems))
    return ledger


def _message(problems: list[str]) -> str:
    return "the privacy ledger does not match the run; no guarantee stated: " + "; ".join(problems)
