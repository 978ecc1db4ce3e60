from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from controlplane.env import envbool, envchoice, envint, envlist, envstr


def test_envbool_reads_the_usual_spellings():
    assert envbool("X", False, environ={"X": "yes"}) is True
    assert envbool("X", True, environ={"X": "0"}) is False
    assert envbool("X", True, environ={}) is True


def test_envbool_names_the_variable_on_a_bad_value():
    with pytest.raises(ImproperlyConfigured, match="DEBUG must be one of"):
        envbool("DEBUG", False, environ={"DEBUG": "maybe"})


def test_envint_checks_type_and_bounds():
    assert envint("N", 3, environ={"N": " 7 "}) == 7
    assert envint("N", 3, environ={"N": ""}) == 3
    with pytest.raises(ImproperlyConfigured, match="N must be a whole number; got 'seven'"):
        envint("N", 3, environ={"N": "seven"})
    with pytest.raises(ImproperlyConfigured, match="N must be at least 1; got 0"):
        envint("N", 3, minimum=1, environ={"N": "0"})
    with pytest.raises(ImproperlyConfigured, match="N must be at most 10; got 11"):
        envint("N", 3, maximum=10, environ={"N": "11"})


def test_envlist_splits_on_commas_and_drops_blanks():
    assert envlist("H", ["a"], environ={"H": "x.example, y.example,,"}) == [
        "x.example",
        "y.example",
    ]
    assert envlist("H", ["a"], environ={}) == ["a"]


def test_envchoice_is_case_insensitive_and_strict():
    assert envchoice("L", "INFO", ("DEBUG", "INFO"), environ={"L": "debug"}) == "DEBUG"
    with pytest.raises(ImproperlyConfigured, match="L must be one of DEBUG, INFO; got 'loud'"):
        envchoice("L", "INFO", ("DEBUG", "INFO"), environ={"L": "loud"})


def test_envstr_strips():
    assert envstr("S", environ={"S": "  v "}) == "v"
