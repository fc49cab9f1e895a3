"""Hierarchical clustering (scipy, average linkage) of candidates on any of the distances.

Distances: 1 - kappa (prediction space), 1 - task-vector cosine (weight
space), 1 - CKA (function space). The flat clusters come from cutting the tree
in its largest gap between successive merge heights (the cut that separates
the tightest groups from the rest); the linkage is kept for the dendrogram.
"""

from __future__ import annotations

import numpy as np

from ..errors import LafError


def distance_from_similarity(matrix: dict, sim_max: float = 1.0) -> tuple[list[str], np.ndarray] | str:
    """A similarity matrix object ({labels, values}) -> (labels, distance = sim_max - similarity); a reason string if unusable."""
    labels, values = matrix["labels"], matrix["values"]
    n = len(labels)
    D = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            v = values[i][j]
            if v is None:
                return f"the similarity of {labels[i]} and {labels[j]} is undefined"
            D[i, j] = max(0.0, sim_max - float(v))
    return labels, (D + D.T) / 2


def cluster(labels: list[str], D: np.ndarray, distance: str) -> dict:
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
    from scipy.spatial.distance import squareform

    n = len(labels)
    if n < 2:
        raise LafError(f"clustering needs at least two candidates (got {n})", "compare two or more")
    if D.shape != (n, n) or not np.all(np.isfinite(D)):
        raise LafError(f"the {distance} distances are not a finite {n} x {n} matrix", "this is a bug: report it with diversity.json")
    Z = linkage(squareform(D, checks=False), method="average")
    heights = Z[:, 2]
    if n >= 3:
        gaps = np.diff(heights)
        k = int(np.argmax(gaps))
        threshold = float((heights[k] + heights[k + 1]) / 2) if gaps[k] > 0 else float(heights[-1]) + 1.0
        rule = "cut at the largest gap between successive merge heights"
    else:
        threshold = float(heights[-1]) + 1.0
        rule = "two candidates: one cluster (the tree has a single merge)"
    assign = fcluster(Z, t=threshold, criterion="distance") if n >= 3 else np.ones(n, dtype=int)
    order = [int(i) for i in leaves_list(Z)]
    groups: dict[int, list[str]] = {}
    for i in order:  # clusters listed in dendrogram order
        groups.setdefault(int(assign[i]), []).append(labels[i])
    clusters = list(groups.values())
    return {
        "distance": distance,
        "method": "average linkage (scipy.cluster.hierarchy)",
        "labels": list(labels),
        "linkage": [[int(a), int(b), round(float(h), 6), int(c)] for a, b, h, c in Z],
        "order": [labels[i] for i in order],
        "cut": {"rule": rule, "height": round(threshold, 6)},
        "clusters": clusters,
        "assignment": {lab: next(k for k, g in enumerate(clusters) if lab in g) for lab in labels},
    }


def cluster_matrix(matrix: dict | None, distance: str, sim_max: float = 1.0) -> dict:
    """Cluster on a similarity matrix object, or say why not (a {'skipped': reason} object)."""
    if not matrix or "values" not in matrix:
        return {"skipped": (matrix or {}).get("skipped", "the measure was not computed")}
    got = distance_from_similarity(matrix, sim_max)
    if isinstance(got, str):
        return {"skipped": got}
    labels, D = got
    if len(labels) < 2:
        return {"skipped": "fewer than two candidates"}
    return cluster(labels, D, distance)

