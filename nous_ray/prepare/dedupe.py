"""Stage 2: exact and near-duplicate removal inside the training set, keeping the copy with the most tests.

Exact: the same normalized statement (:func:`~nous_ray.prepare.text.normalize_statement`).
Near: Jaccard similarity of the statements' word ``n``-gram shingle sets at or above a threshold
(defaults: 5-grams, 0.7, as BigCode's near-deduplication). Candidate pairs come from MinHash LSH
(``datasketch``), tuned to 0.8 x the threshold so that pairs at the threshold are rarely missed; every
candidate pair is then checked with the exact Jaccard similarity, so the threshold is the one applied.
Near-duplicate pairs are joined into groups (a chain A~B~C is one group); each group keeps one member.
Statements shorter than ``min_words`` words take part in the exact check only: the similarity of
one-liners says little (``Print the largest.`` / ``Print the smallest.`` share 80% of their 5-grams).

Which copy stays: the most tests, then the most reference solutions, then the first read.
"""

from __future__ import annotations

from typing import Callable

from nous_ray.data.problem import Problem
from nous_ray.prepare.stage import Dropped, StageResult
from nous_ray.prepare.text import jaccard, ngrams, normalize_statement, words


def keep_rank(problems: list[Problem]) -> Callable[[int], tuple]:
    """Sort key over indices: the copy to keep sorts first."""
    return lambda i: (-len(problems[i].tests), -len(problems[i].solutions), i)


class _Groups:
    """Union-find over indices."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def near_duplicate_pairs(shingles: list[set[str]], threshold: float, num_perm: int = 128,
                         progress: bool = False) -> list[tuple[int, int, float]]:
    """``(i, j, jaccard)`` with i < j for every pair at or above ``threshold`` that LSH proposes."""
    from datasketch import MinHash, MinHashLSH

    idx = [i for i, s in enumerate(shingles) if s]
    if len(idx) < 2:
        return []
    hashes = MinHash.bulk([[g.encode("utf-8") for g in shingles[i]] for i in idx], num_perm=num_perm, seed=1)
    lsh = MinHashLSH(threshold=max(0.05, 0.8 * threshold), num_perm=num_perm)
    for i, mh in zip(idx, hashes):
        lsh.insert(i, mh)
    pairs = []
    it = zip(idx, hashes)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=len(idx), desc="near-duplicates", unit="problem", dynamic_ncols=True)
    for i, mh in it:
        for j in lsh.query(mh):
            if j > i:
                sim = jaccard(shingles[i], shingles[j])
                if sim >= threshold:
                    pairs.append((i, j, sim))
    return sorted(pairs)


def dedupe(problems: list[Problem], *, ngram: int = 5, threshold: float = 0.7, min_words: int = 20,
           num_perm: int = 128, progress: bool = False) -> StageResult:
    """Drop exact, then near duplicates; the kept problems stay in input order."""
    rank = keep_rank(problems)
    dropped: dict[int, Dropped] = {}

    by_text: dict[str, list[int]] = {}
    for i, p in enumerate(problems):
        by_text.setdefault(normalize_statement(p.prompt), []).append(i)
    for members in by_text.values():
        best, *rest = sorted(members, key=rank)
        for i in rest:
            dropped[i] = Dropped(problems[i], "exact_duplicate", f"of {problems[best].id}")

    left = [i for i in range(len(problems)) if i not in dropped]
    tokens = [words(problems[i].prompt) for i in left]
    shingles = [ngrams(t, ngram) if len(t) >= min_words else set() for t in tokens]
    groups = _Groups(len(left))
    best_sim: dict[tuple[int, int], float] = {}
    for a, b, sim in near_duplicate_pairs(shingles, threshold, num_perm, progress):
        groups.union(a, b)
        best_sim[(a, b)] = sim
    members: dict[int, list[int]] = {}
    for k in range(len(left)):
        members.setdefault(groups.find(k), []).append(left[k])
    pos = {i: k for k, i in enumerate(left)}
    for group in members.values():
        if len(group) < 2:
            continue
        best, *rest = sorted(group, key=rank)
        for i in rest:
            a, b = sorted((pos[i], pos[best]))
            sim = best_sim.get((a, b), jaccard(shingles[a], shingles[b]))
            dropped[i] = Dropped(problems[i], "near_duplicate", f"of {problems[best].id}, jaccard {sim:.3f}")

    kept = [p for i, p in enumerate(problems) if i not in dropped]
    return StageResult(kept, [dropped[i] for i in sorted(dropped)],
                       info={"ngram": ngram, "threshold": threshold, "min_words": min_words, "num_perm": num_perm,
                             "similarity": "jaccard of word n-gram shingles (MinHash LSH candidates, exact check)"})
