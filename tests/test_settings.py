from __future__ import annotations

from pathlib import Path

import pytest

import deals
from deals.framework import paths
from deals.framework.errors import ConfigError
from deals.framework.settings import Settings, load_settings, render_defaults

ROOT = Path(__file__).resolve().parent.parent


def test_config_yaml_is_the_rendered_defaults():
    assert (ROOT / "config.yaml").read_text(encoding="utf-8") == render_defaults()


def test_config_yaml_loads_to_the_defaults():
    assert load_settings(ROOT / "config.yaml", environ={}) == Settings()


def test_every_setting_has_a_description():
    for name, field in Settings.model_fields.items():
        assert field.description, name
        for key, sub in field.annotation.model_fields.items():
            assert sub.description, f"{name}.{key}"


def test_file_then_env_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("knn:\n  k: 7\nfeeds:\n  urls: [http://a.example/rss]\n")
    s = load_settings(cfg, environ={"DEALS_KNN__TEMPERATURE": "0.1"})
    assert s.knn.k == 7 and s.knn.temperature == 0.1
    assert s.feeds.urls == ["http://a.example/rss"]
    s = load_settings(cfg, environ={"DEALS_KNN__K": "3"})
    assert s.knn.k == 3


def test_bad_value_in_file_names_key_and_file(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("knn:\n  k: -1\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg, environ={})
    assert "knn.k" in str(exc.value) and str(cfg) in str(exc.value)


def test_unknown_key_and_bad_env_are_errors(tmp_path):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("knn:\n  kk: 3\n")
    with pytest.raises(ConfigError, match="knn.kk"):
        load_settings(cfg, environ={})
    with pytest.raises(ConfigError, match="DEALS_DATA__MIN_PRICE"):
        load_settings(None, environ={"DEALS_DATA__MIN_PRICE": "cheap"})


def test_cross_field_rule(tmp_path):
    cfg = tmp_path / "band.yaml"
    cfg.write_text("data:\n  min_price: 10\n  max_price: 5\n")
    with pytest.raises(ConfigError, match="min_price must be below max_price"):
        load_settings(cfg, environ={})


def test_config_env_var_and_home_config(tmp_path, monkeypatch, deals_home):
    (deals_home / "config.yaml").write_text("knn:\n  k: 4\n")
    assert load_settings().knn.k == 4
    other = tmp_path / "other.yaml"
    other.write_text("knn:\n  k: 5\n")
    monkeypatch.setenv("DEALS_CONFIG", str(other))
    assert load_settings().knn.k == 5


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml", environ={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("knn: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(broken, environ={})


def test_home_is_moved_by_env(deals_home):
    assert paths.home() == deals_home
    assert paths.vectors_dir().parent == deals_home


def test_public_api_is_pinned():
    assert sorted(deals.__all__) == sorted(
        [
            "ConfigError", "DataError", "Deal", "DealsError", "Estimate", "FeedEntry", "Neighbour",
            "Opportunity", "Pricer", "PricingError", "Product", "Settings", "__version__",
            "create_pricer", "load_settings", "pricer_names",
        ]
    )
    for name in deals.__all__:
        assert hasattr(deals, name)


def test_an_interval_wider_than_the_distributions_reach_is_refused():
    """Quantiles run from 5% to 95%: a 95% or 99% interval would be the 90% one under another name."""
    from pydantic import ValidationError

    assert Settings.model_validate({"pricing": {"interval_level": 0.9}}).pricing.interval_level == 0.9
    for level in (0.95, 0.99):
        with pytest.raises(ValidationError, match="interval_level"):
            Settings.model_validate({"pricing": {"interval_level": level}})


def test_importing_deals_turns_off_what_libraries_would_send_home():
    """ONNX Runtime 1.29+ looks up a Microsoft host seconds after a session starts unless told
    not to, before it loads; an explicit choice in the environment is kept."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ORT_") and k != "ANONYMIZED_TELEMETRY"}
    code = "import os, deals; print(os.environ['ORT_DISABLE_TELEMETRY'], os.environ['ANONYMIZED_TELEMETRY'])"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split() == ["1", "False"]
    env["ORT_DISABLE_TELEMETRY"] = "0"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()[0] == "0"
