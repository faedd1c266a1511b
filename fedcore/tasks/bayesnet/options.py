"""Table ``[bayesnet]`` of task ``bayesnet`` (imports no numpy: every process parses the
config)."""

from __future__ import annotations

from dataclasses import dataclass

from fedcore.config import option

STRUCTURES = ("hill-climb", "known")
SCORES = ("bic", "bdeu")
PARAMETERS = ("mle", "bdeu")


@dataclass(frozen=True)
class BayesNetOptions:
    """Table ``[bayesnet]``."""

    records: int = option(5000, ge=1, doc="bayesnet: records forward-sampled from the network")
    test_records: int = option(
        1000, ge=0, doc="bayesnet: records the server samples for its held-out log-likelihood"
    )
    structure: str = option(
        "hill-climb",
        choices=STRUCTURES,
        doc="bayesnet: learn the graph by federated hill climbing from the empty graph, or "
        "take the network's known graph and learn its CPTs only (one round)",
    )
    score: str = option("bic", choices=SCORES, doc="bayesnet: hill climbing's score")
    equivalent_sample_size: float = option(
        10.0, gt=0, doc="bayesnet: BDeu's equivalent sample size (score and parameters)"
    )
    parameters: str = option(
        "mle",
        choices=PARAMETERS,
        doc="bayesnet: CPTs from the summed counts: maximum likelihood, or the BDeu "
        "posterior mean (pseudo-count equivalent-sample-size / (parent states x states))",
    )
    max_parents: int = option(4, ge=0, doc="bayesnet: hill climbing's largest parent set")
    max_client_records: int = option(
        100_000,
        ge=1,
        doc="bayesnet: public bound on a client's records (every count's bound on the wire)",
    )
    skew_variable: str = option(
        "",
        doc="bayesnet: the variable whose value is the label of data.partition = dirichlet "
        "or shards (skewed by that value); empty: the network's first variable",
    )
