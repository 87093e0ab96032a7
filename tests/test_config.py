"""Knobs: parsing and clamping shared by the widgets, the URL and the CLI."""

from dataclasses import dataclass

import pytest

from dgm.core import config as C


@dataclass
class Cfg:
    name: str = C.knob("a", "a choice", choices=("a", "b"))
    lr: float = C.knob(0.01, "rate", lo=1e-4, hi=1.0, log=True)
    n: int = C.knob(8, "count", lo=1, hi=64)
    on: bool = C.knob(False, "switch")
    plain: int = 3  # not a knob


def test_knobs_in_order_with_types():
    ks = C.knobs(Cfg)
    assert [k.name for k in ks] == ["name", "lr", "n", "on"]
    assert [k.type for k in ks] == [str, float, int, bool]


@pytest.mark.parametrize("raw,expected", [("b", "b"), ("a", "a")])
def test_choice_parse(raw, expected):
    assert C.knob_map(Cfg)["name"].parse(raw) == expected


@pytest.mark.parametrize("raw", ["c", "", "A"])
def test_choice_rejects(raw):
    with pytest.raises(ValueError, match="not one of"):
        C.knob_map(Cfg)["name"].parse(raw)


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "x", "1e400"])
def test_numbers_reject_non_finite_and_text(raw):
    with pytest.raises(ValueError):
        C.knob_map(Cfg)["lr"].parse(raw)


def test_int_rejects_fractions_and_bool_parses_words():
    with pytest.raises(ValueError, match="whole"):
        C.knob_map(Cfg)["n"].parse("2.5")
    k = C.knob_map(Cfg)["on"]
    assert k.parse("true") is True and k.parse("0") is False
    with pytest.raises(ValueError):
        k.parse("maybe")


def test_clamp_to_limits():
    k = C.knob_map(Cfg)["n"]
    assert k.clamp(1000) == (64, True) and k.clamp(-5) == (1, True) and k.clamp(5) == (5, False)


def test_from_raw_collects_notes_or_raises():
    cfg, notes = C.from_raw(Cfg, {"lr": "5", "n": "abc", "zzz": "1", "name": "b"}, strict=False)
    assert cfg.lr == 1.0 and cfg.n == 8 and cfg.name == "b"
    assert len(notes) == 3 and any("zzz" in n for n in notes)
    with pytest.raises(ValueError):
        C.from_raw(Cfg, {"lr": "5"}, strict=True)
    assert C.from_raw(Cfg, {"lr": "0.5"})[0].lr == 0.5
