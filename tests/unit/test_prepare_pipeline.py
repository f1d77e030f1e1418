"""``prepare()`` over the fixtures in the hub formats: every case ends where it should, the report
adds up per stage and per source, and problems.jsonl is what the jsonl loader reads back."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nous_ray.config import ConfigError, load_config
from nous_ray.data import ProblemFormatError, load_problems
from nous_ray.prepare import prepare

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "data" / "prepare"
TRAIN = [f"deepcoder/taco:{FIX / 'deepcoder'}", f"deepcoder/primeintellect:{FIX / 'deepcoder'}",
         f"lcb:{FIX / 'lcb_train.jsonl'}"]
EVAL = f"lcb:{FIX / 'lcb_eval.jsonl'}"
TACO, PI, LCB = "deepcoder/taco", "deepcoder/primeintellect", "lcb"

# Where each fixture ends (hand-written from the fixtures' comments in make_fixtures.py).
EXPECTED_DROPS = {
    ("deepcoder/taco/train:6", "normalize", "malformed:tests"),
    ("deepcoder/taco/train/0", "dedupe", "exact_duplicate"),
    ("deepcoder/taco/train/1", "dedupe", "near_duplicate"),
    ("abc320_x", "decontaminate", "ngram_overlap"),
    ("abc372_b", "decontaminate", "after_eval_start"),
    ("deepcoder/taco/train/2", "verify_tests", "references_fail"),
    ("deepcoder/taco/train/3", "verify_tests", "multi_answer"),
    ("deepcoder/taco/train/4", "verify_tests", "too_few_tests"),
}
KEPT = ["deepcoder/taco/train/5", "deepcoder/primeintellect/train/0", "deepcoder/primeintellect/train/1",
        "deepcoder/primeintellect/train/2", "deepcoder/primeintellect/train/3", "abc340_a", "2999"]


def quiet(_):
    pass


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    cfg = load_config(None, ["verifier.workers=2"])
    report = prepare(cfg, TRAIN, EVAL, out, progress=False, say=quiet)
    return out, report


def test_each_case_ends_where_it_should(prepared):
    out, report = prepared
    assert {(d["id"], d["stage"], d["reason"]) for d in report["dropped_ids"]} == EXPECTED_DROPS
    assert [p.id for p in load_problems("jsonl", str(out / "problems.jsonl"))] == KEPT
    assert report == json.loads((out / "report.json").read_text())


def test_report_counts_per_stage_and_source(prepared):
    _, report = prepared
    s = report["stages"]
    assert list(s) == ["normalize", "dedupe", "decontaminate", "verify_tests", "difficulty"]
    assert [(s[k]["in"], s[k]["out"]) for k in s] == [(15, 14), (14, 12), (12, 10), (10, 7), (7, 7)]
    assert s["normalize"]["sources"] == {
        TACO: {"in": 7, "out": 6, "dropped": {"malformed:tests": 1}},
        PI: {"in": 4, "out": 4, "dropped": {}}, LCB: {"in": 4, "out": 4, "dropped": {}}}
    assert s["dedupe"]["sources"][TACO] == {"in": 6, "out": 4,
                                            "dropped": {"exact_duplicate": 1, "near_duplicate": 1}}
    assert s["decontaminate"]["sources"][LCB] == {"in": 4, "out": 2,
                                                  "dropped": {"after_eval_start": 1, "ngram_overlap": 1}}
    assert s["verify_tests"]["sources"][TACO] == {
        "in": 4, "out": 1, "dropped": {"multi_answer": 1, "references_fail": 1, "too_few_tests": 1}}
    assert s["verify_tests"]["notes"] == {"no_references": 3, "references_disagree": 1}
    assert s["difficulty"]["enabled"] is False and s["difficulty"]["sources"][PI] == {"in": 4, "out": 4, "dropped": {}}
    assert report["eval_set"] == {"source": EVAL, "in": 2, "out": 2, "dropped": {}}
    assert report["output"]["problems"] == 7


def test_output_round_trips_through_the_jsonl_loader(prepared):
    out, _ = prepared
    read = {p.id: p for p in load_problems("jsonl", str(out / "problems.jsonl"))}
    originals = {p.id: p for p in (load_problems("deepcoder", str(FIX / "deepcoder"), ["taco"], errors="skip")
                                   + load_problems("deepcoder", str(FIX / "deepcoder"), ["primeintellect"])
                                   + load_problems("lcb", str(FIX / "lcb_train.jsonl")))}
    for pid, p in read.items():
        assert p == originals[pid]  # tests, fn_name, time limits, solutions, dates: all of it
    assert read["2999"].fn_name == "countFixed" and read["2999"].contest_date == "2023-11-12T00:00:00"
    assert read["deepcoder/taco/train/5"].call_based and read["deepcoder/primeintellect/train/0"].solutions


def test_rerun_reuses_the_verification_and_gives_the_same_file(prepared, tmp_path):
    out, report = prepared
    again_dir = tmp_path / "again"
    again_dir.mkdir()
    (again_dir / "verify_results.jsonl").write_text((out / "verify_results.jsonl").read_text())
    cfg = load_config(None, ["verifier.workers=2"])
    again = prepare(cfg, TRAIN, EVAL, again_dir, progress=False, say=quiet)
    assert again["stages"]["verify_tests"]["info"]["judged"] == 0
    assert again["stages"]["verify_tests"]["info"]["reused"] == 6
    assert (again_dir / "problems.jsonl").read_text() == (out / "problems.jsonl").read_text()


def test_stage_switches(tmp_path):
    cfg = load_config(None, ["prepare.dedupe=false", "prepare.decontaminate=false", "prepare.verify_tests=false"])
    report = prepare(cfg, TRAIN, None, tmp_path, progress=False, say=quiet)
    s = report["stages"]
    assert [(k, s[k]["enabled"], s[k]["in"], s[k]["out"]) for k in s] == [
        ("normalize", True, 15, 14), ("dedupe", False, 14, 14), ("decontaminate", False, 14, 14),
        ("verify_tests", False, 14, 14), ("difficulty", False, 14, 14)]
    assert not (tmp_path / "verify_results.jsonl").exists()
    cfg = load_config(None, ["prepare.skip_malformed=false", "prepare.verify_tests=false"])
    with pytest.raises(ProblemFormatError, match=r"deepcoder/taco/train: row 6: field 'tests'"):
        prepare(cfg, TRAIN, EVAL, tmp_path, progress=False, say=quiet)


def test_repeated_ids_across_sources_are_dropped(tmp_path):
    cfg = load_config(None, ["prepare.verify_tests=false", "prepare.dedupe=false"])
    src = f"lcb:{FIX / 'lcb_train.jsonl'}"
    report = prepare(cfg, [src, src], EVAL, tmp_path, progress=False, say=quiet)
    assert report["stages"]["normalize"]["sources"] == {
        src: {"in": 4, "out": 4, "dropped": {}}, f"{src}#2": {"in": 4, "out": 0, "dropped": {"duplicate_id": 4}}}


def test_config_section_and_errors():
    cfg = load_config(None, ["prepare.min_tests=2", "prepare.decontam_ngram=8"])
    assert (cfg.prepare.min_tests, cfg.prepare.decontam_ngram, cfg.prepare.dedupe_threshold) == (2, 8, 0.7)
    with pytest.raises(ConfigError, match="prepare.min_test"):
        load_config(None, ["prepare.min_test=2"])
    with pytest.raises(ConfigError, match="'prepare.dedupe_threshold': must be in"):
        prepare(load_config(None, ["prepare.dedupe_threshold=1.5"]), TRAIN, EVAL, "/nonexistent", say=quiet)


@pytest.mark.parametrize("args,message", [
    (["--train", "deepcode/taco"], "unknown loader 'deepcode'"),
    (["--train", "lcb/v6"], "only deepcoder takes a subset"),
    (["--train", "tiny"], "decontamination needs --eval SOURCE"),
    (["--train", "tiny", "--eval", "lcb", "prepare.min_tests=zero"], "key 'prepare.min_tests': Value 'zero'"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "launch/prepare_data.py", "--out", str(tmp_path), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert message in last, proc.stderr
