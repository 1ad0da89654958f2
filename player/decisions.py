"""Choosing each chunk's level: the decision service first, local BBA when it cannot answer.

Before chunk k the player sends ``POST {abr}/decide`` with what it measured for chunk k-1
(:class:`streambed.abr_service.app.schemas.DecideRequest`: level, bytes, request-to-last-byte seconds,
stall seconds, and the buffer now). The answer's ``quality`` is followed when it is a level
of the MPD's ladder. Anything else decides locally for that chunk only, with
``fallback=True`` and a reason:

* the service is down or resets the connection, or a phase of the exchange (connect, send,
  wait for the answer) takes longer than ``timeout_s``;
* an HTTP error, a body that is not JSON, or an answer without a valid ``quality`` (not an
  integer, outside the ladder, for another chunk).

The local fallback is BBA (the service's default fallback) fed every chunk the session played,
so it decides on the session's full history; for chunk 0 it takes ``first_quality`` as the
service does. The service is asked again for the next chunk: a session never stops because
the service is down. When the service answers with its own fallback (its algorithm failed),
the level is followed and recorded as a fallback with reason ``service: ...``. An answer whose
``bitrate_kbps`` is not the MPD's for that level (the service decides for another video) is
followed, and warned about once (``Decider.warnings``, in ``session.json``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from streambed.abr_service.algorithms.base import ChunkFeedback, PlayerState
from streambed.abr_service.algorithms.buffer_based import BBA
from streambed.abr_service.video import Video
from streambed.abr_service.wire import MIN_DOWNLOAD_S
from streambed.player.downloads import describe_error

log = logging.getLogger(__name__)

REASON_CHARS = 200


@dataclass(frozen=True)
class Measured:
    """What the player measured for the chunk it just downloaded (units in the names)."""

    chunk_index: int
    quality: int
    chunk_bytes: int
    download_s: float
    buffer_s: float
    """Buffer after the chunk was appended and after any wait."""
    rebuffer_s: float


@dataclass(frozen=True)
class Decision:
    quality: int
    decision_ms: float
    """Wall time from the start of the request to having a level, ms (a timeout included)."""
    fallback: bool
    reason: str | None
    local: bool
    """True when the player decided itself (the service gave no usable answer)."""
    algorithm: str | None
    """The session's algorithm as the service names it (None when it did not answer)."""


class LocalFallback:
    """BBA on the MPD's ladder, fed every chunk of the session."""

    def __init__(self, bitrates_kbps: tuple[int, ...], chunk_s: float, num_chunks: int) -> None:
        # BBA reads only the ladder's length; nominal sizes make a valid Video of that ladder.
        sizes = np.outer(
            np.asarray(bitrates_kbps, dtype=np.float64) * 125.0 * chunk_s,
            np.ones(max(num_chunks, 1)),
        )
        video = Video(
            "mpd", tuple(bitrates_kbps), chunk_s, np.maximum(sizes.round(), 1), max(num_chunks, 1)
        )
        self.algo = BBA(video)
        self.bitrates_kbps = tuple(bitrates_kbps)
        self.num_levels = len(bitrates_kbps)

    def on_chunk(self, m: Measured) -> None:
        self.algo.on_chunk(
            ChunkFeedback(
                m.chunk_index, m.quality, m.chunk_bytes, m.download_s, m.buffer_s, m.rebuffer_s
            )
        )

    def select(self, chunk_index: int, buffer_s: float, last_quality: int, first: int) -> int:
        if chunk_index == 0:
            return min(max(first, 0), self.num_levels - 1)
        return self.algo.select(PlayerState(chunk_index, buffer_s, last_quality))


def decide_body(
    session_id: str,
    chunk_index: int,
    buffer_s: float,
    last: Measured | None,
    algorithm: str | None = None,
    video: str | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``POST /decide`` body for ``chunk_index``; ``last`` is the chunk before it."""
    body: dict[str, Any] = {
        "session_id": session_id,
        "chunk_index": chunk_index,
        "buffer_s": max(buffer_s, 0.0),
    }
    if last is not None:
        body.update(
            last_quality=last.quality,
            last_chunk_bytes=last.chunk_bytes,
            # The service refuses sub-0.1 ms downloads; only a loopback fetch can be that fast.
            last_chunk_download_s=max(last.download_s, MIN_DOWNLOAD_S),
            rebuffer_s=last.rebuffer_s,
        )
    if algorithm is not None:
        body["algorithm"] = algorithm  # every time: a restarted service recreates the session
    if video is not None:
        body["video"] = video
    if params:
        body["params"] = json_params(params)
    return body


def json_params(params: dict[str, Any]) -> dict[str, Any]:
    """``--param`` values as the JSON the service wants: numbers and booleans typed (it coerces
    no strings: ``"8"`` is not 8), anything else a string."""
    return {key: _typed(value) for key, value in params.items()}


def _typed(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    if isinstance(parsed, float) and not math.isfinite(parsed):
        return value  # not JSON: the service refuses the string, naming it
    return parsed if isinstance(parsed, (bool, int, float)) else value


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS] + "..."


def parse_answer(
    response: httpx.Response, chunk_index: int, num_levels: int
) -> tuple[int, dict[str, Any]] | str:
    """(quality, answer) from a /decide response, or why it is unusable."""
    if response.status_code != 200:
        return _short(f"HTTP {response.status_code}: {response.text}")
    try:
        answer = json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _short(f"answer is not JSON: {response.text!r}")
    if not isinstance(answer, dict):
        return _short(f"answer is not a JSON object: {response.text!r}")
    quality = answer.get("quality")
    if isinstance(quality, bool) or not isinstance(quality, int):
        return _short(f"answer has no integer quality: {response.text!r}")
    if not 0 <= quality < num_levels:
        return f"quality {quality} outside the MPD's levels 0..{num_levels - 1}"
    if answer.get("chunk_index", chunk_index) != chunk_index:
        return f"answer is for chunk {answer.get('chunk_index')!r}, asked for {chunk_index}"
    return quality, answer


class Decider:
    """Asks the service for every chunk, falling back to :class:`LocalFallback`."""

    def __init__(
        self,
        client: httpx.Client,
        abr_url: str,
        session_id: str,
        fallback: LocalFallback,
        *,
        timeout_s: float,
        first_quality: int,
        algorithm: str | None = None,
        video: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.url = abr_url.rstrip("/") + "/decide"
        self.session_id = session_id
        self.fallback = fallback
        self.timeout = httpx.Timeout(timeout_s)
        self.first_quality = first_quality
        self.algorithm = algorithm
        self.video = video
        self.params = params
        self.service_ok: bool | None = None  # None until the first request
        self.answered = 0
        """Decisions that came from the service (its own fallback's included)."""
        self.first_failure: str | None = None
        self.warnings: list[str] = []

    def on_chunk(self, measured: Measured) -> None:
        self.fallback.on_chunk(measured)

    def decide(self, chunk_index: int, buffer_s: float, last: Measured | None) -> Decision:
        started = time.perf_counter()
        body = decide_body(
            self.session_id, chunk_index, buffer_s, last, self.algorithm, self.video, self.params
        )
        try:
            try:
                response = self.client.post(self.url, json=body, timeout=self.timeout)
            except httpx.RemoteProtocolError:
                # A kept-alive connection the server closed as we sent (a server with a short
                # keep-alive): the request was never answered, so asking again is safe.
                response = self.client.post(self.url, json=body, timeout=self.timeout)
            outcome = parse_answer(response, chunk_index, self.fallback.num_levels)
        except httpx.TimeoutException as exc:
            outcome = f"no answer within {self.timeout.read} s ({type(exc).__name__})"
        except httpx.RequestError as exc:  # down, refused, reset mid-answer
            outcome = _short(describe_error(exc))
        if isinstance(outcome, str):
            self._note(False, chunk_index, outcome)
            if self.first_failure is None:
                self.first_failure = outcome
            last_quality = last.quality if last is not None else self.first_quality
            quality = self.fallback.select(chunk_index, buffer_s, last_quality, self.first_quality)
            return Decision(
                quality, (time.perf_counter() - started) * 1000.0, True, outcome, True, None
            )
        self._note(True, chunk_index, None)
        quality, answer = outcome
        self.answered += 1
        self._check_ladder(chunk_index, quality, answer.get("bitrate_kbps"))
        served_fallback = answer.get("fallback") is True
        reason = f"service: {answer.get('reason')}" if served_fallback else None
        algorithm = answer.get("algorithm")
        return Decision(
            quality,
            (time.perf_counter() - started) * 1000.0,
            served_fallback,
            reason,
            False,
            algorithm if isinstance(algorithm, str) else None,
        )

    def _check_ladder(self, chunk_index: int, quality: int, service_kbps: object) -> None:
        """Warn once when the service's ladder is not the MPD's: it decides for another video
        (e.g. ``--video`` or the service's default), so its levels mean other bitrates."""
        if self.warnings or isinstance(service_kbps, bool):
            return
        if not isinstance(service_kbps, int | float):
            return
        mpd_kbps = self.fallback.bitrates_kbps[quality]
        if abs(service_kbps - mpd_kbps) <= max(1.0, 0.01 * mpd_kbps):
            return
        warning = (
            f"the decision service's video differs from the MPD's: level {quality} is "
            f"{service_kbps:g} kbps there but {mpd_kbps} kbps in the MPD (chunk {chunk_index}; "
            "check the service's --video and the session's --video)"
        )
        log.warning("session %s: %s", self.session_id, warning)
        self.warnings.append(warning)

    def _note(self, ok: bool, chunk_index: int, reason: str | None) -> None:
        """Log the service going away and coming back once each, not every chunk."""
        if ok and self.service_ok is False:
            log.info(
                "session %s chunk %d: decision service answers again", self.session_id, chunk_index
            )
        elif not ok and self.service_ok is not False:
            log.warning(
                "session %s chunk %d: decision service unusable (%s); deciding locally with "
                "BBA until it answers",
                self.session_id,
                chunk_index,
                reason,
            )
        self.service_ok = ok
