"""The ``bayesnet`` task: Bayesian-network learning on securely summed count tables."""
