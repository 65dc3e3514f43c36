"""A real HTTP server on loopback that serves feed files from a folder, as a blog would.

`/blog/feed/?paged=2` is the file `blog/feed/index?paged=2` (a folder's file is `index`; the
query, when there is one, is part of the name). It answers conditional requests with 304 (by
ETag and by Last-Modified), gzips when asked, follows a table of redirects, and keeps every
request so tests can count them and read their headers.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    status: int


@dataclass
class FeedServer:
    root: Path
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    redirects: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)  # path -> an error status to answer
    content_type: str = "application/xml; charset=UTF-8"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def file_for(self, target: str) -> Path:
        parts = urlsplit(target)
        name = parts.path.lstrip("/")
        if not name or name.endswith("/"):
            name += "index"
        if parts.query:
            name += "?" + parts.query
        return self.root / name

    def put(self, target: str, text: str) -> Path:
        """Write the document served at `target` (a path with its query)."""
        path = self.file_for(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def feed_url(self, target: str) -> str:
        return self.url + target

    def hits(self, path_prefix: str = "") -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]


def _handler(server: FeedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            # Kept, status included, before the answer goes out: once the client has it, the
            # test may look.
            self.request_seen = Request(self.path, dict(self.headers.items()), 0)
            with server.lock:
                server.requests.append(self.request_seen)
            self._answer()

        def send_response(self, code: int, message: str | None = None) -> None:
            self.request_seen.status = code
            super().send_response(code, message)

        def _answer(self) -> int:
            if self.path in server.redirects:
                self.send_response(301)
                self.send_header("Location", server.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return 301
            if self.path in server.statuses:
                self.send_error(server.statuses[self.path])
                return server.statuses[self.path]
            path = server.file_for(self.path)
            if not path.is_file():
                self.send_error(404)
                return 404
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            modified = int(path.stat().st_mtime)
            if self._not_modified(etag, modified):
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return 304
            self.send_response(200)
            if "gzip" in self.headers.get("Accept-Encoding", ""):
                body = gzip.compress(body)
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Type", server.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", formatdate(modified, usegmt=True))
            self.end_headers()
            self.wfile.write(body)
            return 200

        def _not_modified(self, etag: str, modified: int) -> bool:
            if "If-None-Match" in self.headers:
                return self.headers["If-None-Match"] == etag
            since = self.headers.get("If-Modified-Since")
            if since:
                try:
                    return modified <= parsedate_to_datetime(since).timestamp()
                except (TypeError, ValueError):
                    return False
            return False

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

    return Handler


class RunningFeedServer:
    """Start and stop a FeedServer in a thread."""

    def __init__(self, root: Path) -> None:
        self.state = FeedServer(root)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.state.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
