"""The deployment (issue 11): deploy/compose.yaml, deploy/Dockerfile, and the same topology without containers.

Containers cannot be started here, so the compose file is checked against the Compose
Specification's JSON schema (vendored: tests/fixtures/compose/, with its provenance) and
for what the guide promises (health checks, start order, the gpu profile, no secret
written into it), the Dockerfile for installing exactly the locked dependencies, and the
lock for satisfying pyproject.toml. Then the topology itself runs as processes: PostgreSQL
through pg_ctl, a Chroma server through `chroma run`, the one-shot `deals index`, and two
`deals run` daemons sharing the store, as the compose file wires them.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from deals.memory.store import Store
from tests.fakes.daemon import REPO, clean_env, copy_home, scanner_reply, serve_feeds, write_config
from tests.fakes.feed_server import feed_server  # noqa: F401 - pytest fixture
from tests.fakes.llm_server import FakeLLMServer, answer
from tests.fakes.postgres import free_port
from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

DEPLOY = REPO / "deploy"
SCHEMA = REPO / "tests" / "fixtures" / "compose" / "compose-spec.json"
CHROMA = Path(sys.executable).parent / "chroma"
ALICE = "+15551110001"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


# --------------------------------------------------------------------------- the files


def test_compose_file_is_valid_against_the_compose_specification():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    assert [error.message for error in validator.iter_errors(compose())] == []
    broken = compose()
    broken["services"]["deals"]["healthcheck"]["intervall"] = "30s"  # the schema does catch mistakes
    broken["services"]["postgres"]["depends_on"] = {"chroma": {"condition": "service_happy"}}
    assert len(list(validator.iter_errors(broken))) == 2


def test_compose_wires_the_topology_the_guide_describes():
    services = compose()["services"]
    assert set(services) == {"postgres", "chroma", "deals-init", "deals", "dashboard", "vllm"}
    for name, service in services.items():
        if name != "deals-init":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert services["deals"]["healthcheck"]["test"] == ["CMD", "deals", "health"]
    assert services["deals"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "chroma": {"condition": "service_healthy"},
        "deals-init": {"condition": "service_completed_successfully"},
    }
    assert services["deals"]["deploy"]["replicas"] >= 2  # several daemons share the store
    env = services["deals"]["environment"]
    assert env["DEALS_STORE__URL"] == "postgresql://deals@postgres:5432/deals"  # no password in the URL
    assert env["DEALS_VECTORS__URL"] == "http://chroma:8000"
    assert services["deals-init"]["environment"] == env and services["chroma"]["image"] == services["deals"]["image"]
    # secrets only from the environment (.env), never written here
    text = (DEPLOY / "compose.yaml").read_text()
    for key, value in re.findall(r"^\s*([A-Z_]*(?:PASSWORD|TOKEN|SECRET|KEY)[A-Z_]*):\s*(.+)$", text, re.M):
        assert value.strip().startswith("${"), f"{key} is written into compose.yaml"
    # the dashboard: over the same store, on the host's loopback only, behind the token
    dashboard = services["dashboard"]
    assert dashboard["command"] == ["dashboard"] and dashboard["image"] == services["deals"]["image"]
    assert dashboard["environment"]["DEALS_STORE__URL"] == env["DEALS_STORE__URL"]
    assert dashboard["environment"]["DEALS_DASHBOARD_TOKEN"].startswith("${DEALS_DASHBOARD_TOKEN:?")
    assert all(port.startswith("127.0.0.1:") for port in dashboard["ports"])
    # the gpu profile: vLLM on one GPU serving the adapter as the model the specialist asks for
    vllm = services["vllm"]
    assert vllm["profiles"] == ["gpu"]
    [device] = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    assert any(arg.startswith("--lora-modules=pricer=") for arg in vllm["command"])
    assert "--enable-lora" in vllm["command"]
    # the guide describes every service, and the variables the gpu profile needs
    guide = (DEPLOY / "README.md").read_text().split("## Containers (`deploy/compose.yaml`)", 1)[1]
    assert all(f"| `{name}` |" in guide for name in services), "deploy/README.md: a service is missing from the table"
    assert "--profile gpu" in guide and "DEALS_SPECIALIST__BASE_URL=http://vllm:8000/v1" in guide
    # every variable the file uses is documented in env.example
    documented = set(re.findall(r"^#?\s*([A-Z_]+)=", (DEPLOY / "env.example").read_text(), re.M))
    assert set(re.findall(r"\$\{([A-Z_]+)", text)) <= documented


def test_the_image_installs_exactly_the_locked_dependencies_which_satisfy_pyproject():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "pip install --no-deps" in dockerfile and "requirements.lock" in dockerfile and "pip check" in dockerfile
    locked = {}
    for line in (DEPLOY / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            locked[canonicalize_name(name)] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is not in deploy/requirements.lock"
        assert requirement.specifier.contains(locked[name].split("+")[0], prereleases=True), (text, locked[name])
        for extra in requirement.extras:  # psycopg[binary] -> psycopg-binary
            assert canonicalize_name(f"{requirement.name}-{extra}") in locked, text
    ignored = (REPO / ".dockerignore").read_text()
    assert "!deploy/requirements.lock" in ignored and "!deals/" in ignored


# --------------------------------------------------------------------------- the topology, without containers


@pytest.fixture
def chroma_server(tmp_path):
    if not CHROMA.exists():
        pytest.skip("the chroma server CLI is not installed")
    port = free_port()
    log = (tmp_path / "chroma.log").open("wb")
    process = subprocess.Popen(
        [str(CHROMA), "run", "--path", str(tmp_path / "chroma"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=clean_env(tmp_path),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # the compose health check, by hand
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "the chroma server did not start"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(20)
        log.close()


def deals(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deals", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_the_compose_topology_runs_as_processes(tmp_path, seeded_home_template, pg_url, chroma_server, feed_server):  # noqa: F811
    """postgres (pg_ctl) + chroma (`chroma run`) + deals-init (`deals index`) + 2 x `deals run` on one store."""
    home = copy_home(seeded_home_template, tmp_path / "home")
    urls = serve_feeds(feed_server)
    with FakeLLMServer(answer(scanner_reply)) as llm, FakeTwilio() as twilio:
        config = write_config(
            tmp_path / "config.yaml",
            {
                "feeds": {"urls": urls},
                "llm": {"provider": "openai-compatible", "model": "local-model", "base_url": f"{llm.url}/v1", "max_retries": 0},
                "messenger": {"to": [ALICE], "base_url": twilio.url, "retry_base_s": 0, "daily_cap": 100},
                "ensemble": {"auto_fit": False},
                "planner": {"confidence": 0.4},  # the fixture feeds' bargains (see tests/test_crash.py)
                "scheduler": {"interval_minutes": 0.05, "jitter_s": 0},
            },
        )
        env = clean_env(
            home, DEALS_CONFIG=str(config), DEALS_STORE__URL=pg_url, DEALS_VECTORS__URL=chroma_server,
            TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN, TWILIO_FROM_NUMBER="+15550000000",
        )  # fmt: skip
        # deals-init: migrate the store, seed the index on the Chroma server
        assert deals("store", "status", env=env).returncode == 0
        done = deals("index", env=env)
        assert done.returncode == 0 and "7932" in done.stdout + done.stderr, done.stderr
        assert deals("health", env=env).returncode == 1  # no daemon yet: unhealthy

        logs = [(tmp_path / f"deals-{n}.log").open("wb") for n in range(2)]
        daemons = [
            subprocess.Popen([sys.executable, "-m", "deals", "run"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            for log in logs
        ]
        try:
            with Store(pg_url) as store:
                deadline = time.monotonic() + 150
                while not _settled(store):
                    assert time.monotonic() < deadline, _logs(tmp_path)
                    assert all(d.poll() is None for d in daemons), _logs(tmp_path)
                    time.sleep(0.5)
                health = deals("health", env=env)
                status = json.loads(deals("store", "status", "--json", env=env).stdout)
            for daemon in daemons:
                daemon.send_signal(signal.SIGTERM)
            assert [d.wait(60) for d in daemons] == [0, 0], _logs(tmp_path)
        finally:
            for daemon in daemons:
                if daemon.poll() is None:
                    daemon.kill()
            for log in logs:
                log.close()
        assert health.returncode == 0 and "ok: daemon pid" in health.stdout, health.stdout + health.stderr
        assert status["engine"] == "postgresql" and len(status["workers"]) == 2
        with Store(pg_url) as store:
            estimates = [store.get_estimate(row[0]) for row in store.db.execute("SELECT entry_key FROM deals").fetchall()]
            assert estimates and all(e is not None and e.neighbours for e in estimates)  # priced from the Chroma server
            alerts = store.alerts()
            assert alerts and {a.state for a in alerts} == {"sent"}
            assert store.workers() == [] and store.claims() == []
        sent = Counter((m["to"], m["body"]) for m in twilio.created)
        assert set(sent.values()) == {1} and len(sent) == len(alerts)


def _settled(store: Store) -> bool:
    """Both daemons have finished a cycle, every deal is priced and every alert sent."""
    runs = [r for r in store.recent_runs(100) if r.status == "ok"]
    if len({store._one("SELECT worker_id FROM runs WHERE id = ?", (r.id,))[0] for r in runs}) < 2:
        return False
    pending = store._one("SELECT COUNT(*) FROM deals d WHERE NOT EXISTS (SELECT 1 FROM estimates e WHERE e.deal_key = d.entry_key)")[0]
    unsent = store._one("SELECT COUNT(*) FROM alerts WHERE state <> 'sent'")[0]
    opportunities = store._one("SELECT COUNT(*) FROM opportunities")[0]
    alerted = store._one("SELECT COUNT(DISTINCT opportunity_id) FROM alerts")[0]
    return pending == 0 and unsent == 0 and opportunities > 0 and alerted == opportunities


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(tmp_path.glob("deals-*.log")))
