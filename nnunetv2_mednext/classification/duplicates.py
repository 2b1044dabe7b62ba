"""Duplicate groups and the leakage groups used for splitting.

Two images belong to the same *leakage group* when they share a patient (CSV ``group`` column), are pixel-identical
(exact hash) or are near-identical (256-bit dHash within ``near_threshold`` bits and correlated thumbnails). Groups are connected components, so
chains (slice 1 ~ slice 2 ~ slice 3) end up together.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .hashing import near_pairs
from .index import DatasetIndex


def components(n: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes linked by ``pairs``."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if pairs:
        a = np.array(pairs, dtype=np.int64)
        graph = coo_matrix((np.ones(len(a)), (a[:, 0], a[:, 1])), shape=(n, n))
    else:
        graph = coo_matrix((n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def groups_from_labels(labels: np.ndarray) -> list[list[int]]:
    """Members of every component with more than one member (sorted, deterministic order)."""
    members: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(labels.tolist()):
        members[c].append(i)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])


def exact_pairs(hashes: list[str]) -> list[tuple[int, int]]:
    first: dict[str, int] = {}
    pairs = []
    for i, h in enumerate(hashes):
        if h in first:
            pairs.append((first[h], i))
        else:
            first[h] = i
    return pairs


def duplicate_groups(exact: list[str], near: list[int], near_threshold: int,
                     thumbs: list[str] | None = None) -> tuple[list[list[int]], list[list[int]]]:
    """(exact-duplicate groups, near-duplicate groups incl. exact ones) as lists of positions."""
    n = len(exact)
    ex = groups_from_labels(components(n, exact_pairs(exact)))
    nr = (groups_from_labels(components(n, exact_pairs(exact) + near_pairs(near, near_threshold, thumbs)))
          if near_threshold >= 0 else [])
    return ex, nr


def _hashes(index: DatasetIndex, fingerprint: dict) -> tuple[list[str], list[int], list[str]]:
    per = fingerprint["per_image"]
    missing = [s.id for s in index.samples if s.id not in per]
    if missing:
        raise KeyError(f"fingerprint has no record for {missing[0]!r}; recompute it")
    return ([per[s.id]["exact"] for s in index.samples], [int(per[s.id]["near"], 16) for s in index.samples],
            [per[s.id]["thumb"] for s in index.samples])


def leakage_components(index: DatasetIndex, fingerprint: dict | None, use_near: bool = True) -> np.ndarray:
    """Component label per sample: same patient, exact duplicates and (optionally) near duplicates share one."""
    n = len(index)
    pairs: list[tuple[int, int]] = []
    by_group: dict[str, int] = {}
    for i, s in enumerate(index.samples):
        if s.group is not None:
            if s.group in by_group:
                pairs.append((by_group[s.group], i))
            else:
                by_group[s.group] = i
    if fingerprint is not None:
        exact, near, thumbs = _hashes(index, fingerprint)
        pairs += exact_pairs(exact)
        threshold = int(fingerprint.get("duplicates", {}).get("near_threshold", -1))
        if use_near and threshold >= 0:
            pairs += near_pairs(near, threshold, thumbs)
    return components(n, pairs)


def cross_class_groups(index: DatasetIndex, groups: list[list[int]]) -> list[list[int]]:
    """The duplicate groups whose members carry more than one label."""
    return [g for g in groups if len({index.samples[i].label for i in g}) > 1]


def drop_exact_duplicates(index: DatasetIndex, fingerprint: dict) -> tuple[DatasetIndex, list[dict]]:
    """Keep one image of each exact-duplicate group; drop every member of a group whose labels disagree.

    Returns the reduced index and one record per dropped image (``id``, ``label``, ``reason``).
    """
    exact, _, _ = _hashes(index, fingerprint)
    groups = groups_from_labels(components(len(index), exact_pairs(exact)))
    drop: dict[int, str] = {}
    for g in groups:
        labels = {index.samples[i].label for i in g}
        ids = [index.samples[i].id for i in g]
        if len(labels) > 1:
            for i in g:
                drop[i] = f"identical to {', '.join(x for x in ids if x != index.samples[i].id)} with another label"
        else:
            for i in g[1:]:
                drop[i] = f"identical to {index.samples[g[0]].id}"
    keep = [i for i in range(len(index)) if i not in drop]
    dropped = [{"id": index.samples[i].id, "label": index.samples[i].label, "reason": r} for i, r in sorted(drop.items())]
    return index.subset(keep), dropped
