"""The ``kmeans`` task: federated Lloyd's algorithm on per-cluster sums and counts.

Modules: :mod:`.options` (the table ``[kmeans]``; imports nothing heavy: every process parses
the config), :mod:`.lloyd` (the pure math: assignment, a client's statistics, the centroid
step, the cost), :mod:`.seeding` (federated k-means++ and k-FED's one-shot seeding),
:mod:`.algorithm` (the hooks on typed statistics).
"""
