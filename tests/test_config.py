from dataclasses import dataclass, field

import pytest

from tabvlm.config import from_dict, load, parse_overrides, save, to_dict
from tabvlm.errors import ConfigError


@dataclass
class Inner:
    size: int = 4
    rate: float = 0.5
    name: str | None = None


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    flag: bool = False


def test_defaults_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  size: 8\ntags: [a, b]\n")
    cfg = load(Outer, path, ["inner.rate=0.25", "flag=true", "inner.name=x"])
    assert cfg == Outer(inner=Inner(size=8, rate=0.25, name="x"), tags=["a", "b"], flag=True)


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  sise: 8\n")
    with pytest.raises(ConfigError, match=r"inner: unknown key\(s\) sise"):
        load(Outer, path)
    with pytest.raises(ConfigError, match="unknown key"):
        load(Outer, None, ["nope=1"])


def test_wrong_type_names_field():
    with pytest.raises(ConfigError, match=r"config\.inner\.size: expected int, found 'big'"):
        from_dict(Outer, {"inner": {"size": "big"}})
    with pytest.raises(ConfigError, match="expected true/false"):
        from_dict(Outer, {"flag": 1})


def test_int_widens_to_float_and_round_trip(tmp_path):
    cfg = from_dict(Outer, {"inner": {"rate": 1}})
    assert cfg.inner.rate == 1.0 and isinstance(cfg.inner.rate, float)
    save(cfg, tmp_path / "out.yaml")
    assert load(Outer, tmp_path / "out.yaml") == cfg
    assert to_dict(cfg)["inner"] == {"size": 4, "rate": 1.0, "name": None}


def test_parse_overrides_and_errors():
    assert parse_overrides(["a.b=3", "a.c=[1, 2]", "d=hi"]) == {"a": {"b": 3, "c": [1, 2]}, "d": "hi"}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["oops"])


def test_missing_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top"):
        load(Outer, bad)


def test_float_written_without_dot_is_accepted():
    # PyYAML reads 1e-3 as the string "1e-3"
    assert from_dict(Inner, {"rate": "1e-3"}).rate == 0.001
    assert parse_overrides(["lr=1e-3"]) == {"lr": "1e-3"}
    with pytest.raises(ConfigError, match="expected float"):
        from_dict(Inner, {"rate": "fast"})
