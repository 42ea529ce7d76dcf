"""Quantities with Brian2 units in model files: parsing, SI values, refusals and hints."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest

from neuro.model.spec import ModelFileError, parse_quantity, parse_rate, parse_time


@pytest.mark.parametrize(
    "text", ["10 ms", "0.01 s", "10000 us", "10 msecond", "10ms", "10*ms", "  10   ms ", "1e1 ms", "10000 µs"]
)
def test_equivalent_time_spellings_give_the_same_float(text):
    assert parse_time(text) == 0.01


@pytest.mark.parametrize("text", ["15 Hz", "0.015 kHz", "15 hertz", "15 s^-1", "15 s**-1", "15/s"])
def test_equivalent_rate_spellings_give_the_same_float(text):
    assert parse_rate(text) == 15.0


@pytest.mark.parametrize("n", ["1", "3", "7", "0.1", "0.3", "16.8", "33.7", "123.456", "2e-3"])
def test_decimal_conversion_is_correctly_rounded(n):
    # 0.1 * 3 != 0.3 in binary floats; the parser multiplies in decimal and rounds once.
    assert parse_time(f"{n} ms") == float(Decimal(n) / 1000)
    assert parse_time(f"{n} ms") == parse_time(f"{Decimal(n) / 1000} s")


def test_compound_units_cancel_to_dimensionless():
    assert parse_quantity("2 kHz*ms", "number") == 2.0
    assert parse_quantity("3 ms/ms", "number") == 3.0
    assert parse_quantity("0.5", "number") == 0.5


@pytest.mark.parametrize(
    ("text", "kind", "found", "hint"),
    [
        ("10", "time", "no unit", '"10 ms"'),
        ("10 mV", "time", "voltage", "time unit"),
        ("10 Hz", "time", "frequency", "time unit"),
        ("10 ms", "rate", "a time", "frequency unit"),
        ("15", "rate", "no unit", '"15 Hz"'),
        ("1 mV", "number", "voltage", "plain number"),
        ("10 msec", "time", "msec", "did you mean"),
        ("10 kHZ", "rate", "kHZ", "did you mean 'kHz'"),
    ],
)
def test_wrong_or_missing_units_are_refused_with_a_hint(text, kind, found, hint):
    with pytest.raises(ModelFileError) as info:
        parse_quantity(text, kind, key="populations.hidden.tau_mem")
    err = info.value
    assert err.key == "populations.hidden.tau_mem"
    assert found in err.found
    assert hint in (err.hint or "")
    assert "populations.hidden.tau_mem" in str(err)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('echo pwned') ms",
        "ms",
        "",
        "nan ms",
        "inf s",
        "1e999 s",
        "10 ms ms",
        "10 m s",
        "1 s^999",
        "1e-99999999999 s",
        "10 (ms)",
        "10 ms; import os",
        "1" * 300 + " ms",
    ],
)
def test_anything_else_is_a_model_file_error_never_evaluated(text):
    with pytest.raises(ModelFileError):
        parse_time(text)


def test_quantity_kind_must_be_known():
    with pytest.raises(ValueError, match="kind"):
        parse_quantity("1 ms", "voltage")


def test_importing_spec_and_graph_does_not_import_a_simulator():
    code = ("import sys, neuro.model.graph, neuro.model.spec; "
            "print('brian2' in sys.modules, 'norse' in sys.modules)")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False"]
