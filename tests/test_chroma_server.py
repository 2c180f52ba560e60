"""The vector store against a real Chroma server (`chroma run`), as configured by `vectors.url`."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from deals.framework.errors import ConfigError
from deals.framework.settings import Settings
from deals.memory.embeddings import embedder_fingerprint
from deals.memory.vectors import VectorStore
from deals.pricer.data import curate, load_products

FIXTURES = Path(__file__).parent / "fixtures"
CHROMA = Path(sys.executable).parent / "chroma"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def chroma_url(tmp_path):
    if not CHROMA.exists() and not shutil.which("chroma"):
        pytest.skip("the chroma server CLI is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [str(CHROMA if CHROMA.exists() else "chroma"), "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail("chroma server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.slow
def test_index_and_query_through_a_chroma_server(chroma_url, embedder):
    settings = Settings().model_copy(deep=True)
    settings.vectors.url = chroma_url
    products = curate(load_products(FIXTURES / "products-sample.jsonl"), settings.data).products[:30]
    store = VectorStore(settings.vectors, embedder_fingerprint(settings.embeddings))
    assert store.index_products(products, embedder, progress=False).added == 30
    assert store.index_products(products, embedder, progress=False).added == 0  # idempotent on the server too
    again = VectorStore(settings.vectors, embedder_fingerprint(settings.embeddings))  # a second client, same data
    assert again.count() == 30
    [found] = again.query(embedder.encode([products[7].text]), 3)
    assert found[0].id == products[7].id and found[0].price == products[7].price


def test_bad_server_url_is_a_config_error():
    settings = Settings().model_copy(deep=True)
    settings.vectors.url = "ftp://example.org"
    with pytest.raises(ConfigError, match="vectors.url"):
        VectorStore(settings.vectors, "x")
