"""A node's own privacy policy: limits its operator sets that no run config can loosen.

Every privacy parameter of a run arrives in the run config, from whoever starts ``flwr run``.
A SuperNode's operator states in its node config (``flower-supernode --node-config``) what
this node accepts; the node checks every training and evaluation message against it and
replies with an error naming the violated limit instead of touching its data:

- ``policy-min-noise-multiplier``: the DP noise this node's update must carry, added on the
  node or in the secure sum it enters (``sample``, ``sample-distributed``, ``local``,
  ``distributed``); a run without DP, or with server-side noise (``client``), is refused,
  since the node cannot check noise it does not add.
- ``policy-max-epsilon``: the most epsilon this node's data may spend, across runs (its ledger
  is kept per data file under ``state-dir``, which this limit requires).
- ``policy-max-delta``: the largest delta a run may account at.
- ``policy-min-secagg-threshold``: secure aggregation at least this threshold, required.

A node with its own data file (node config ``data-path``) is a deployed node: it refuses
seeded (removable) noise and clear evaluation under DP, which exist for simulations only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from flwr.app import Context

from fedcore.config import RunConfig
from fedcore.keys import DATA_PATH, STATE_DIR

NODE_NOISE_DP = frozenset({"sample", "sample-distributed", "local", "distributed"})


class PolicyViolation(ValueError):
    """The run asks for less privacy than this node's policy allows; the reply says which."""


@dataclass(frozen=True)
class NodePolicy:
    """Attributes: see the module docstring (node config keys ``policy-<name>``);
    0 means no limit."""

    min_noise_multiplier: float = 0.0
    max_epsilon: float = 0.0
    max_delta: float = 0.0
    min_secagg_threshold: float = 0.0
    deployed: bool = False

    def enforce(self, cfg: RunConfig) -> None:
        """Raise :class:`PolicyViolation` if ``cfg`` asks for what this node refuses."""
        p, problems = cfg.privacy, []
        if self.deployed and p.seeded_noise:
            problems.append(
                "privacy.seeded-noise = true: noise drawn from the run seed can be removed by "
                "anyone who knows the seed; it exists for simulations only"
            )
        if self.deployed and p.clear_evaluation:
            problems.append(
                "privacy.clear-evaluation = true sends un-noised test metrics; it exists for "
                "simulations only"
            )
        if self.min_noise_multiplier > 0 and p.dp not in NODE_NOISE_DP:
            problems.append(
                f"privacy.dp = {p.dp!r}: this node requires noise of at least "
                f"{self.min_noise_multiplier:g} that it adds itself (sample, "
                f"sample-distributed, local or distributed)"
            )
        if self.max_delta > 0 and p.dp != "off" and p.delta > self.max_delta:
            problems.append(f"privacy.delta = {p.delta:g} > this node's {self.max_delta:g}")
        if self.min_secagg_threshold > 0 and (
            cfg.secagg.mode == "off" or cfg.secagg.threshold < self.min_secagg_threshold
        ):
            problems.append(
                f"secagg.mode = {cfg.secagg.mode!r}, threshold {cfg.secagg.threshold:g}: this "
                f"node requires secure aggregation with a threshold of at least "
                f"{self.min_secagg_threshold:g}"
            )
        if problems:
            raise PolicyViolation("refused by this node's privacy policy: " + "; ".join(problems))

    def check_noise(self, noise_multiplier: float) -> None:
        """Raise :class:`PolicyViolation` if this round's noise is below the node's floor."""
        if noise_multiplier < self.min_noise_multiplier:
            raise PolicyViolation(
                f"refused by this node's privacy policy: the run's noise multiplier "
                f"{noise_multiplier:.4g} is below this node's policy-min-noise-multiplier "
                f"{self.min_noise_multiplier:g}"
            )


def node_policy(context: Context) -> NodePolicy:
    """The policy in ``context.node_config``; a malformed value is an error naming its key."""
    return parse_policy(context.node_config)


def parse_policy(node_config: Mapping[str, object]) -> NodePolicy:
    values = {}
    for f in fields(NodePolicy):
        if f.name == "deployed":
            continue
        key = "policy-" + f.name.replace("_", "-")
        if key not in node_config:
            continue
        value = node_config[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise PolicyViolation(f"node config {key}={value!r} must be a number >= 0")
        values[f.name] = float(value)
    unknown = sorted(k for k in node_config if str(k).startswith("policy-") and k not in _KEYS)
    if unknown:
        raise PolicyViolation(
            f"unknown node config key {unknown[0]!r}; this node's policy keys are "
            f"{', '.join(sorted(_KEYS))}"
        )
    policy = NodePolicy(**values, deployed=DATA_PATH in node_config)
    if policy.max_epsilon > 0 and STATE_DIR not in node_config:
        raise PolicyViolation(
            f"node config policy-max-epsilon needs {STATE_DIR}: without it the node cannot "
            f"remember what earlier runs spent"
        )
    return policy


_KEYS = frozenset(
    "policy-" + f.name.replace("_", "-") for f in fields(NodePolicy) if f.name != "deployed"
)
