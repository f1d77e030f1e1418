"""Stage 3: decontamination by contest date and by statement 13-gram overlap."""

import datetime as dt
from pathlib import Path

import pytest

from nous_ray.data import Problem, TestCase, load_problems
from nous_ray.prepare.decontaminate import EvalIndex, date_cutoff, decontaminate

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "prepare"
# 20 distinct ordinary words: 8 word 13-grams.
VOCAB = ("apple banana cherry dates elder figs grape honey icing jelly kiwi lemon mango nectar olive "
         "peach quince raisin salt thyme").split()
MORE = ("umber violet walnut xylem yarrow zest acorn basil clove dill endive fennel garlic hazel "
        "indigo juniper kale leek mint nutmeg").split()


def _p(pid, prompt, date=None):
    return Problem(pid, "t", prompt, [TestCase("1\n", "1\n")], contest_date=date)


@pytest.fixture(scope="module")
def eval_set():
    return load_problems("lcb", str(FIX / "lcb_eval.jsonl"), start_date="2024-08-01", end_date="2025-05-01")


def test_fixture_paste_with_another_date_and_a_problem_inside_the_window(eval_set):
    assert [p.id for p in eval_set] == ["abc375_c", "abc388_a"]  # abc360_b is before the window
    train = load_problems("lcb", str(FIX / "lcb_train.jsonl"))
    res = decontaminate(train, eval_set, cutoff=dt.datetime(2024, 8, 1))
    dropped = {d.problem.id: (d.reason, d.detail) for d in res.dropped}
    assert dropped["abc372_b"] == ("after_eval_start", "contest_date 2024-09-14T00:00:00 >= 2024-08-01")
    reason, detail = dropped["abc320_x"]  # dated 2023-09-09: only its text gives it away
    assert reason == "ngram_overlap" and detail.startswith("with abc375_c:") and detail.endswith("overlap 1.000")
    assert [p.id for p in res.kept] == ["abc340_a", "2999"]
    assert res.info["date_cutoff"] == "2024-08-01" and res.info["ngram"] == 13


def test_overlap_is_shared_grams_over_the_smaller_set():
    index = EvalIndex([_p("e", " ".join(VOCAB))], 13)
    assert index.sizes == [8]
    # The evaluation statement inside a longer training statement: all 8 of its grams are shared.
    assert index.best_overlap(" ".join(MORE[:10] + VOCAB + MORE[10:])) == (1.0, "e", 8)
    # Sharing its first 14 words: 2 grams of 8.
    assert index.best_overlap(" ".join(VOCAB[:14] + MORE)) == (0.25, "e", 2)
    assert index.best_overlap(" ".join(MORE)) == (0.0, None, 0)


def test_threshold_and_by_date_switch():
    ev = [_p("e", " ".join(VOCAB), "2024-08-05T00:00:00")]
    half = _p("half", " ".join(VOCAB[:16] + MORE))  # 4 of 8 grams shared: 0.5
    quarter = _p("quarter", " ".join(VOCAB[:14] + MORE))
    late = _p("late", "A different statement entirely.", "2024-08-01T00:00:00")
    early = _p("early", "Another different statement.", "2024-07-31T23:59:59")
    cut = date_cutoff(ev, None, "2024-08-01")
    res = decontaminate([half, quarter, late, early], ev, cutoff=cut)
    assert [(d.problem.id, d.reason) for d in res.dropped] == [("half", "ngram_overlap"), ("late", "after_eval_start")]
    res = decontaminate([half, quarter, late, early], ev, cutoff=cut, threshold=0.6, by_date=False)
    assert res.dropped == [] and res.info["date_cutoff"] is None


def test_date_cutoff_sources_and_bad_dates():
    ev = [_p("a", "x", "2024-09-03T18:30:00"), _p("b", "y", "2024-08-07T10:00:00"), _p("c", "z")]
    assert date_cutoff(ev, None, None) == dt.datetime(2024, 8, 7)  # the earliest evaluation day
    assert date_cutoff(ev, None, "2024-08-01") == dt.datetime(2024, 8, 1)  # the evaluation window's start
    assert date_cutoff(ev, "2024-06-30", "2024-08-01") == dt.datetime(2024, 6, 30)  # prepare.date_cutoff wins
    assert date_cutoff([_p("c", "z")], None, None) is None
    with pytest.raises(ValueError, match="prepare.date_cutoff: not an ISO date"):
        date_cutoff(ev, "August", None)
    res = decontaminate([_p("t", "Some statement.", "last spring")], ev, cutoff=dt.datetime(2024, 8, 1))
    assert [p.id for p in res.kept] == ["t"] and [n.flag for n in res.notes] == ["unparsable_date"]
