from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ctloop.ops.preflight import UnreachableError, check_http, check_servers


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path.endswith("/health") else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_answering_server_passes(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", f"{server}/api")
    check_servers(server)


def test_unreachable_prefect_api_names_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    expected = re.escape(f"Prefect API at {url}/health is unreachable")
    with pytest.raises(UnreachableError, match=expected):
        check_servers("sqlite:///mlflow.db")


def test_unreachable_tracking_server_names_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(UnreachableError, match=r"MLflow tracking server at .* is unreachable"):
        check_servers(url)
    check_servers("sqlite:///mlflow.db")  # the embedded store needs no server


def test_error_status_is_reported(server: str) -> None:
    with pytest.raises(UnreachableError, match="HTTP 404"):
        check_http("thing", f"{server}/nope", "hint")
