"""A task's setup: one secure sum over every node before round 1, and what it releases.

FedGCN's pre-communication is the first: each node sums its own nodes' features into the
rows of their neighbours, the secure-sum service (:mod:`privacy.secagg.service`) adds these
vectors up over the Grid, the server turns the sum into a public release, broadcasts it, and
each node keeps from it what it trains on. The hooks split that into the part a node runs on
its own data and the part the server runs on the sum, so no process ever holds another
node's data:

```
node:    share(cfg, part, pid) -> vector          (masked by the secure-aggregation mod)
server:  release(cfg, sum) -> arrays              (broadcast to every node)
node:    keep(cfg, part, release) -> arrays       (stored in the node's Context.state)
         view(cfg, part, kept) -> client data     (what each round trains on)
```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedcore.config import RunConfig

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class SumShape:
    """What the nodes' vectors are, as both sides know it before any is sent: their length
    and the public bound on each entry (the encoding's range) with its fraction bits."""

    length: int
    bound: float
    frac_bits: int


@dataclass(frozen=True)
class Setup:
    """The hooks of a task's setup (see the module docstring).

    Attributes:
        name: the query the server sends (what the node's handler runs).
        shape: the vector's :class:`SumShape` for a run.
        share: the node's vector from its own part of the data and its partition id (DP
            noise in it comes from :func:`fedcore.seeding.noise_rng`: the OS CSPRNG).
        release: the server's public release from the decoded sum.
        keep: what the node stores of the release (its own rows, say).
        view: the node's training data from its part and what it kept.
        events: the privacy events of the release (``privacy.ledger.DpEvent``), recorded in
            the run's ledger before round 1.
        needed: whether a run's configuration runs the setup at all.
    """

    name: str
    shape: Callable[[RunConfig], SumShape]
    share: Callable[[RunConfig, object, int], np.ndarray]
    release: Callable[[RunConfig, np.ndarray], Arrays]
    keep: Callable[[RunConfig, object, Arrays], Arrays]
    view: Callable[[RunConfig, object, Arrays], object]
    events: Callable[[RunConfig], tuple] = lambda cfg: ()
    needed: Callable[[RunConfig], bool] = lambda cfg: True
