"""The ``linear`` task: federated ridge regression and PCA on securely summed matrix products."""
