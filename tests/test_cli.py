"""The `deals` command line, run as users run it: `python -m deals ...` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deals.framework.models import Estimate
from deals.pricer.intervals import low_confidence

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"


def deals(*args: str, home: Path, env: dict[str, str] | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DEALS_")}
    environ.update({"DEALS_HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "deals", *args], capture_output=True, text=True, env=environ, cwd=ROOT, timeout=timeout
    )


def test_help_and_defaults(deals_home):
    done = deals("--help", home=deals_home)
    assert done.returncode == 0
    for command in ("price", "index", "data", "evaluate", "config"):
        assert command in done.stdout
    done = deals("config", "--defaults", home=deals_home)
    assert done.returncode == 0 and done.stdout == (ROOT / "config.yaml").read_text()


def test_bad_config_exits_2_naming_key_and_file(deals_home, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("knn:\n  weighting: loudest\n")
    done = deals("--config", str(bad), "config", home=deals_home)
    assert done.returncode == 2
    assert "knn.weighting" in done.stderr and str(bad) in done.stderr.replace("\n", "")
    done = deals("config", home=deals_home, env={"DEALS_PLANNER__CONCURRENCY": "0"})
    assert done.returncode == 2 and "DEALS_PLANNER__CONCURRENCY" in done.stderr


def test_ensemble_says_which_members_are_available_and_what_each_other_one_needs(deals_home):
    done = deals("ensemble", home=deals_home, env={"COLUMNS": "400"})
    assert done.returncode == 0, done.stderr
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in done.stdout.splitlines() if line.count("│") >= 4}
    assert rows["local"] == "yes"
    assert rows["frontier"].startswith("no: the frontier pricer needs an LLM")
    assert rows["specialist"].startswith("no: no trained specialist at")
    # with a provider and its key the frontier is available; checking it opens no store and no index, and sends nothing
    done = deals("ensemble", home=deals_home, env={"COLUMNS": "400", "DEALS_LLM__PROVIDER": "openai", "OPENAI_API_KEY": "sk-test"})
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in done.stdout.splitlines() if line.count("│") >= 4}
    assert done.returncode == 0 and rows["frontier"] == "yes", done.stderr
    assert not (deals_home / "deals.db").exists() and not (deals_home / "vectors").exists()


def test_unknown_pricer_is_a_usage_error(deals_home):
    done = deals("price", "a thing", "--pricer", "oracle", home=deals_home)
    assert done.returncode == 2 and "unknown pricer 'oracle'" in done.stderr and "Traceback" not in done.stderr
    # a data file that is not there, and a member that cannot be created, are usage/configuration errors too
    done = deals("evaluate", "--data", "/nonexistent/held-out.jsonl", home=deals_home)
    assert done.returncode == 2 and "does not exist" in done.stderr
    done = deals("ensemble", "fit", "--member", "frontier", home=deals_home)
    assert done.returncode == 2 and "the frontier pricer needs an LLM" in done.stderr and "Traceback" not in done.stderr


def test_price_prints_estimate_and_neighbours(seeded_home):
    done = deals("price", "Bose QuietComfort noise cancelling over-ear Bluetooth headphones", home=seeded_home)
    assert done.returncode == 0, done.stderr
    shown = done.stdout
    assert "Estimate: $" in shown and "nearest catalogue products" in shown
    done = deals("price", "Bose QuietComfort noise cancelling over-ear Bluetooth headphones", "--json", home=seeded_home)
    estimate = json.loads(done.stdout)
    assert ("low confidence" in shown) == low_confidence(Estimate.model_validate(estimate))
    done = deals("price", "pencil", home=seeded_home)  # nothing like it priced: the interval spans a factor over 12
    assert "low confidence: the interval spans a factor of" in done.stdout
    assert estimate["pricer"] == "ensemble" and estimate["price"] > 0 and set(estimate["parts"]) == {"local", "knn", "ridge"} and estimate["low"] < estimate["price"] < estimate["high"]
    done = deals("price", "Bose QuietComfort headphones", "--json", "--pricer", "knn", home=seeded_home)
    estimate = json.loads(done.stdout)
    assert estimate["pricer"] == "knn" and len(estimate["neighbours"]) == 10


def test_first_price_on_an_empty_home_builds_the_starter_index(deals_home):
    done = deals("price", "cordless drill driver kit with two batteries", "--json", home=deals_home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["price"] > 0
    assert (deals_home / "vectors").is_dir() and any((deals_home / "cache" / "onnx").iterdir())


def test_index_data_then_rerun_is_idempotent(seeded_home):
    sample = FIXTURES / "products-sample.jsonl"
    first = deals("index", "--data", str(sample), home=seeded_home)
    assert first.returncode == 0, first.stderr
    assert "indexed" in first.stdout
    again = deals("index", "--data", str(sample), home=seeded_home)
    assert again.returncode == 0 and "indexed 0 new products" in again.stdout


def test_data_command_curates_and_summarises(deals_home, tmp_path):
    out = tmp_path / "dataset"
    done = deals(
        "data", str(FIXTURES / "products-sample.jsonl"), "--out", str(out),
        "--reference", str(FIXTURES / "dealnews-selected-deals.jsonl"), home=deals_home,
    )
    assert done.returncode == 0, done.stderr
    for split in ("train", "validation", "test", "deal_like"):
        assert (out / f"{split}.jsonl").exists()
    assert "median" in done.stdout


def test_evaluate_side_by_side_writes_report_and_plot(seeded_home, tmp_path):
    report, plot = tmp_path / "r.json", tmp_path / "p.png"
    done = deals(
        "evaluate", "--data", str(ROOT / "data" / "eval" / "test.jsonl"), "--pricer", "constant", "--pricer", "knn",
        "--limit", "40", "--report", str(report), "--plot", str(plot), home=seeded_home,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text())
    assert data["pricers"] == ["constant", "knn"]
    for entry in data["reports"]:
        assert entry["n"] == 40 and 0 <= entry["hit_rate"] <= 1
        assert {"pricer", "n", "mae", "rmsle", "hit_rate"} <= set(entry)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args", [["evaluate", "--data", "/nonexistent.jsonl"], ["index", "--data", "/nonexistent.jsonl"]])
def test_missing_files_are_clear_errors(deals_home, args):
    done = deals(*args, home=deals_home)
    assert done.returncode in (1, 2) and "nonexistent" in (done.stderr + done.stdout)
    assert "Traceback" not in done.stderr
