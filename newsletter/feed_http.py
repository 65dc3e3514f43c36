"""Fetching a blog's feed over HTTP: conditional requests, redirects, gzip, a timeout, a size cap.

Polling every few minutes must cost the blog nothing when nothing changed, so every request
but a full walk (`pull --all`) carries the ETag and Last-Modified of the last answer, and a
304 comes back as `None`. Every failure is one FeedError line naming the address.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from urllib.parse import urlsplit

import httpx

from .errors import FeedError, FeedNotFound

DEFAULT_TIMEOUT_SECONDS = 30.0
MAX_FEED_BYTES = 50_000_000  # a big blog's whole feed is a few MB; more is not a feed
ACCEPT = (
    "application/atom+xml, application/rss+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.5"
)


def user_agent() -> str:
    """Name the tool and its version, so a blog's owner can tell who polls their feed."""
    try:
        release = version("newsletter")
    except PackageNotFoundError:  # running from a checkout that was never installed
        release = "dev"
    return f"newsletter/{release} (self-hosted newsletter; feed pull)"


@dataclass(frozen=True)
class FeedResponse:
    """One fetched feed document, with what is needed to ask again conditionally."""

    url: str  # after redirects: relative links in the feed resolve against it
    content: bytes
    content_type: str
    etag: str | None
    last_modified: str | None


def check_feed_url(url: str) -> str:
    """The address, stripped, if it can be fetched over http(s)."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FeedError(
            f"{url!r} is not a feed address; give one starting with https://, such as "
            "https://BLOG.blogspot.com/feeds/posts/default or https://BLOG.example/feed/"
        )
    return url


class FeedClient:
    """One HTTP client for a pull, reused across the pages of a paged feed."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.timeout = timeout
        # httpx asks for and decodes gzip itself (Accept-Encoding: gzip, deflate).
        self._client = httpx.Client(
            timeout=timeout,
            follow_redirects=True,
            headers={"User-Agent": user_agent(), "Accept": ACCEPT},
        )

    def __enter__(self) -> FeedClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client.close()

    def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> FeedResponse | None:
        """The feed at `url`, or None when the server says it has not changed (304)."""
        url = check_feed_url(url)
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                if response.status_code == 304:
                    return None
                if response.status_code in (404, 410):
                    raise FeedNotFound(
                        f"{url} answered {response.status_code} {response.reason_phrase}"
                    )
                if response.status_code >= 400:
                    raise FeedError(
                        f"{url} answered {response.status_code} {response.reason_phrase}"
                    )
                content = self._read(response, url)
        except httpx.TimeoutException as e:
            raise FeedError(f"{url} did not answer within {self.timeout:g} seconds") from e
        except httpx.ConnectError as e:
            raise FeedError(f"cannot reach {url}: {_reason(e)}") from e
        except httpx.TooManyRedirects as e:
            raise FeedError(f"{url} redirects in a loop") from e
        except httpx.HTTPError as e:
            raise FeedError(f"cannot fetch {url}: {_reason(e)}") from e
        return FeedResponse(
            url=str(response.url),
            content=content,
            content_type=response.headers.get("content-type", ""),
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
        )

    @staticmethod
    def _read(response: httpx.Response, url: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_FEED_BYTES:
                raise FeedError(
                    f"{url} sent more than {MAX_FEED_BYTES // 1_000_000} MB: not a feed"
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _reason(error: Exception) -> str:
    """The OS's words for a failed connection ("Connection refused"), without errno noise."""
    text = str(error) or type(error).__name__
    if "] " in text and text.startswith("[Errno"):
        text = text.split("] ", 1)[1]
    return text
