"""Stage 2 on the fixtures in the hub formats: exact and near duplicates, keeping the most tests."""

import itertools
from pathlib import Path

import pytest

from nous_ray.data import Problem, TestCase, load_problems
from nous_ray.prepare.dedupe import dedupe, near_duplicate_pairs
from nous_ray.prepare.text import jaccard, ngrams, words

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "prepare"


@pytest.fixture(scope="module")
def pool():
    # taco first: its copies come first and have fewer tests, so "first read" would keep the wrong ones.
    return (load_problems("deepcoder", str(FIX / "deepcoder"), ["taco"], errors="skip")
            + load_problems("deepcoder", str(FIX / "deepcoder"), ["primeintellect"]))


def by_id(problems):
    return {p.id: p for p in problems}


def test_fixture_duplicates_end_where_they_should(pool):
    res = dedupe(pool)
    dropped = {d.problem.id: (d.reason, d.detail) for d in res.dropped}
    assert set(dropped) == {"deepcoder/taco/train/0", "deepcoder/taco/train/1"}
    # The exact pair: the same statement; primeintellect's copy has 7 tests, taco's 5.
    assert dropped["deepcoder/taco/train/0"] == ("exact_duplicate", "of deepcoder/primeintellect/train/0")
    # The renamed, re-flowed copy: a near duplicate of the 6-test original.
    reason, detail = dropped["deepcoder/taco/train/1"]
    ps = by_id(pool)
    sim = jaccard(ngrams(words(ps["deepcoder/taco/train/1"].prompt), 5),
                  ngrams(words(ps["deepcoder/primeintellect/train/1"].prompt), 5))
    assert reason == "near_duplicate" and sim >= 0.7
    assert detail == f"of deepcoder/primeintellect/train/1, jaccard {sim:.3f}"
    assert [p.id for p in res.kept] == [p.id for p in pool if p.id not in dropped]  # input order kept


def test_renamed_copy_differs_as_text(pool):
    ps = by_id(pool)
    a, b = ps["deepcoder/taco/train/1"].prompt, ps["deepcoder/primeintellect/train/1"].prompt
    assert a != b and " ".join(a.split()) != " ".join(b.split())
    assert "Carol" in a and "Alice" not in a and "Alice" in b


def test_lsh_finds_every_pair_a_brute_force_finds(pool):
    shingles = [ngrams(words(p.prompt), 5) for p in pool]
    brute = [(i, j, jaccard(shingles[i], shingles[j])) for i, j in itertools.combinations(range(len(pool)), 2)]
    brute = [t for t in brute if t[2] >= 0.3]
    assert brute  # the threshold below is low enough to see more than the one fixture pair
    assert near_duplicate_pairs(shingles, 0.3) == brute


def _p(pid, prompt, n_tests, n_solutions=0):
    return Problem(pid, "t", prompt, [TestCase(f"{k}\n", f"{k}\n") for k in range(n_tests)],
                   solutions=["print(input())"] * n_solutions)


STORY = ("Alice walks along a row of n houses numbered from 1 to n and counts the houses whose number is "
         "divisible by k. Print how many such houses there are on the street today.")


def test_keep_rule_most_tests_then_most_solutions_then_first():
    ps = [_p("a", STORY, 3, 0), _p("b", STORY, 5, 0), _p("c", STORY, 5, 2), _p("d", STORY, 5, 2)]
    res = dedupe(ps)
    assert [p.id for p in res.kept] == ["c"]
    assert {d.problem.id: d.detail for d in res.dropped} == {"a": "of c", "b": "of c", "d": "of c"}


def test_one_liners_are_compared_exactly_only():
    ps = [_p("max", "Read a list of integers on one line. Print the largest.", 4),
          _p("min", "Read a list of integers on one line. Print the smallest.", 4),
          _p("min2", "read a list of integers on  one line.  print the smallest.", 3)]
    res = dedupe(ps)  # 12 words < dedupe_min_words (20)
    assert [p.id for p in res.kept] == ["max", "min"]
    assert [(d.problem.id, d.reason) for d in res.dropped] == [("min2", "exact_duplicate")]
    # With the guard off the one-liners share 80% of their 5-grams and collapse.
    assert [p.id for p in dedupe(ps, min_words=0).kept] == ["max"]


def test_a_group_of_near_duplicates_keeps_the_one_with_most_tests():
    base = STORY.split()
    b = base.copy()
    b[10] = "painted"  # one-word edits
    c = b.copy()
    c[25] = "yesterday"
    ps = [_p("a", " ".join(base), 2), _p("b", " ".join(b), 4), _p("c", " ".join(c), 3)]
    res = dedupe(ps, threshold=0.7)
    assert [p.id for p in res.kept] == ["b"]
    assert sorted((d.problem.id, d.reason) for d in res.dropped) == [("a", "near_duplicate"), ("c", "near_duplicate")]
