"""Decoding of the three test encodings, and the LCB date parsing, on hand-written values."""

import datetime as dt

import pytest

from nous_ray.data.case_formats import (
    CaseError,
    decode_any,
    functional_input,
    functional_output,
    lcb_cases,
    primeintellect_cases,
    stdin_text,
    taco_cases,
)
from nous_ray.data.lcb import parse_date
from nous_ray.data.problem import TestCase


def test_functional_values_are_lcb_json_lines():
    assert functional_input([[1, 2], "a\nb", {"k": None}, 1.5], "x") == '[1, 2]\n"a\\nb"\n{"k": null}\n1.5'
    assert functional_input("[1]\n\"s\"", "x") == "[1]\n\"s\""
    assert functional_output([[1, 2]], "y") == "[1, 2]"
    assert functional_output(["abc"], "y") == '"abc"'
    assert functional_output("true", "y") == "true"
    for bad, why in ([[], "no arguments"], ["[1]\nnot json", "line 1 is not a JSON value"], [3, "expected an argument list"]):
        with pytest.raises(CaseError, match=why):
            functional_input(bad, "x")
    for bad in ([1, 2], [], "not json", 7):
        with pytest.raises(CaseError) as e:
            functional_output(bad, "out")
        assert e.value.field == "out"


def test_stdin_text():
    assert stdin_text("a\n", "f") == "a\n"
    assert stdin_text(["1", "2 3"], "f") == "1\n2 3"
    with pytest.raises(CaseError, match="expected a string"):
        stdin_text(5, "f")


def test_taco_lengths_must_match_and_names_must_agree():
    assert taco_cases({"inputs": ["1\n"], "outputs": ["2\n"]}) == ([TestCase("1\n", "2\n", "stdin")], None)
    # Arrow fills absent keys with None; that is no function name.
    assert taco_cases({"inputs": ["1\n"], "outputs": ["2\n"], "fn_name": None})[1] is None
    with pytest.raises(CaseError, match="2 inputs but 1 outputs"):
        taco_cases({"inputs": ["1", "2"], "outputs": ["1"]})
    with pytest.raises(CaseError, match="no tests"):
        taco_cases({"inputs": [], "outputs": []})
    with pytest.raises(CaseError) as e:
        taco_cases({"inputs": ["1"]})
    assert e.value.field == "tests.outputs"


def test_primeintellect():
    cases, fn = primeintellect_cases([
        {"type": "function_call", "fn_name": "f", "input": [1, "a"], "output": [True]},
    ])
    assert (cases, fn) == ([TestCase('1\n"a"', "true", "functional")], "f")
    with pytest.raises(CaseError, match="different functions"):
        primeintellect_cases([
            {"type": "function_call", "fn_name": "f", "input": [1], "output": [1]},
            {"type": "function_call", "fn_name": "g", "input": [1], "output": [1]},
        ])
    with pytest.raises(CaseError, match="mixes stdin and functional"):
        primeintellect_cases([
            {"type": "function_call", "fn_name": "f", "input": [1], "output": [1]},
            {"type": "stdin_stdout", "input": "1", "output": "1"},
        ])
    with pytest.raises(CaseError) as e:
        primeintellect_cases([{"type": "stdin_stdout", "input": "1"}])
    assert e.value.field == "tests[0].output"


def test_lcb_cases():
    cases, fn = lcb_cases([{"input": "1\n2", "output": "3", "testtype": "functional"}], "add")
    assert (cases, fn) == ([TestCase("1\n2", "3", "functional")], "add")
    with pytest.raises(CaseError, match="is not 'stdin' or 'functional'"):
        lcb_cases([{"input": "1", "output": "1", "testtype": "stdin_stdout"}], None)


def test_decode_any_dispatches_on_structure():
    assert decode_any({"inputs": ["1"], "outputs": ["1"]}, None)[0][0].kind == "stdin"
    assert decode_any([{"input": "1", "output": "1", "testtype": "stdin"}], None)[0][0].kind == "stdin"
    assert decode_any([{"input": "1", "output": "1", "type": "stdin_stdout"}], None)[0][0].kind == "stdin"
    assert decode_any([{"input": "1", "output": "1"}], None)[0] == [TestCase("1", "1", "stdin")]
    with pytest.raises(CaseError, match="one encoding"):
        decode_any([{"input": "1", "output": "1", "type": "stdin_stdout"},
                    {"input": "1", "output": "1", "testtype": "stdin"}], None)
    with pytest.raises(CaseError, match="no tests"):
        decode_any([], None)
    with pytest.raises(CaseError, match="expected a list or an object"):
        decode_any("1", None)


def test_parse_date_accepts_text_and_arrow_timestamps():
    assert parse_date("2024-08-01T00:00:00") == dt.datetime(2024, 8, 1)
    assert parse_date(dt.datetime(2024, 8, 1, 5, tzinfo=dt.timezone.utc)) == dt.datetime(2024, 8, 1, 5)
    assert parse_date(dt.date(2024, 8, 1)) == dt.datetime(2024, 8, 1)
    with pytest.raises(CaseError, match="not an ISO date"):
        parse_date("June")
