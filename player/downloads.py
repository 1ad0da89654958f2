"""Fetching from the origin over one keep-alive connection, with bounded retries.

A download is timed on the session clock (seconds, monotonic) from the moment the request is
sent to its last byte, and its size is the body bytes actually received (the origin never
compresses, and ``Accept-Encoding: identity`` asks for that explicitly). A failed attempt is
retried up to ``attempts`` in all, waiting ``backoff_s``, then twice that, ... between them:

* retried: a transport error (connection refused or reset, timeout, a body shorter than its
  ``Content-Length``), 5xx, 408 and 429;
* not retried: any other status (404 will not heal), which fails at once.

Only the successful attempt is timed as the download; the time lost before it is ``retry_s``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from streambed.core.linkkinds import NAMESPACED

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429})
READ_CHUNK_BYTES = 64 * 1024


class DownloadFailed(Exception):
    """A download that gave up; the message says what and why (last error)."""


@dataclass(frozen=True)
class Fetched:
    url: str
    size_bytes: int
    start_s: float
    """Session clock when the successful attempt's request was sent, seconds."""
    end_s: float
    """Session clock at its last byte, seconds."""
    attempts: int
    retry_s: float
    """Session time spent on failed attempts and backoff before ``start_s``, seconds."""
    content: bytes | None = None
    """The body, when asked for (the MPD); media bodies are counted and dropped."""

    @property
    def download_s(self) -> float:
        return self.end_s - self.start_s


def _attempt(client: httpx.Client, url: str, keep_body: bool) -> tuple[int, bytes | None] | str:
    """(size, body) of one successful GET, or why it failed, or raise DownloadFailed (fatal)."""
    try:
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                response.read()
                text = response.text[:200].strip()
                problem = f"HTTP {response.status_code}" + (f": {text}" if text else "")
                if response.status_code >= 500 or response.status_code in RETRYABLE_STATUS:
                    return problem
                raise DownloadFailed(f"GET {url}: {problem}")
            parts: list[bytes] = []
            size = 0
            for block in response.iter_raw(READ_CHUNK_BYTES):
                size += len(block)
                if keep_body:
                    parts.append(block)
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) != size:
                return f"short body: {size} of {declared} bytes"
            return size, (b"".join(parts) if keep_body else None)
    except httpx.RequestError as exc:  # refused, reset, timeout, incomplete body
        return describe_error(exc)


def describe_error(exc: httpx.RequestError) -> str:
    """One line for a failed request; behind a netns or mahimahi link, a refused connection
    says what is usually wrong: the host's server listens on 127.0.0.1 only."""
    text = f"{type(exc).__name__}: {exc or 'no detail'}"
    kind = os.environ.get("STREAMBED_LINK_KIND")
    if isinstance(exc, httpx.ConnectError) and "refused" in str(exc).lower() and kind in NAMESPACED:
        host = os.environ.get("STREAMBED_HOST", "$STREAMBED_HOST")
        text += (
            f" (behind the {kind} link the host is {host}: its server must listen on 0.0.0.0 "
            f"or on {host}, not on 127.0.0.1)"
        )
    return text


def fetch(
    client: httpx.Client,
    url: str,
    clock: Callable[[], float],
    *,
    attempts: int = 3,
    backoff_s: float = 0.25,
    keep_body: bool = False,
) -> Fetched:
    """GET ``url`` (see the module docstring); raise :class:`DownloadFailed` after the last try."""
    first_start = clock()
    problem = ""
    for attempt in range(1, attempts + 1):
        start = first_start if attempt == 1 else clock()
        outcome = _attempt(client, url, keep_body)
        end = clock()
        if not isinstance(outcome, str):
            size, body = outcome
            return Fetched(url, size, start, end, attempt, start - first_start, body)
        problem = outcome
        if attempt < attempts:
            wait = backoff_s * 2 ** (attempt - 1)
            log.warning(
                "GET %s failed (%s); attempt %d of %d in %.2f s",
                url,
                problem,
                attempt + 1,
                attempts,
                wait,
            )
            time.sleep(wait)
    raise DownloadFailed(f"GET {url}: gave up after {attempts} attempts: {problem}")
