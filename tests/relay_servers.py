"""Loopback stand-ins for the relay services: moto in server mode (SES v2, SNS, SQS, as boto3
speaks to AWS) and a small HTTP server that replays a service's documented answers (Postmark,
and the SES calls moto lacks), keeping every request it was sent."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

ACCOUNT = "123456789012"  # moto's account
REGION = "eu-west-1"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # time.monotonic() when it arrived

    def json(self) -> Any:
        return json.loads(self.body)


Answer = tuple[int, dict[str, str], Any]  # status, headers, JSON body


@dataclass
class ReplayServer:
    """Answers each request with `answer(request)`; `release` ends a held (slow) answer."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    answer: Callable[[Request], Answer | None] = lambda request: (404, {}, {})
    release: threading.Event = field(default_factory=threading.Event)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


def _handler(server: ReplayServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length),
                time.monotonic(),
            )
            server.requests.append(request)
            answer = server.answer(request)
            if answer is None:  # hold the answer: the client's timeout is under test
                server.release.wait(10)
                return
            status, headers, body = answer
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(name="replay")
def replay_fixture() -> Iterator[ReplayServer]:
    server = ReplayServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    httpd.shutdown()
    httpd.server_close()


def aws_error(status: int, code: str, message: str) -> Answer:
    """An AWS error as SES v2 (REST-JSON: the header) and SQS (JSON: `__type`) answer it."""
    return status, {"x-amzn-ErrorType": code}, {"__type": code, "message": message}


@pytest.fixture(name="aws_credentials")
def aws_credentials_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials for boto3, so nothing of the developer's own AWS setup is read."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(name="moto_url", scope="session")
def moto_url_fixture() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(name="moto")
def moto_fixture(
    moto_url: str, aws_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """moto on loopback, reset for each test, with boto3 pointed at it."""
    import requests

    requests.post(f"{moto_url}/moto-api/reset", timeout=10)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    yield moto_url


def ses_sent_messages() -> list[Any]:
    """What moto's SES took (its server runs in this process)."""
    from moto.ses.models import ses_backends

    return list(ses_backends[ACCOUNT][REGION].sent_messages)
