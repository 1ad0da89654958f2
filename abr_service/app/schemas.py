"""Request and response bodies of the decision service, one model per direction.

Units are in the field names. Floats must be finite: NaN and infinities are refused.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streambed.abr_service.app.models_store import ModelInfo
from streambed.abr_service.wire import (
    MAX_CUMULATIVE_REBUFFER_MS as MAX_CUMULATIVE_REBUFFER_MS,
)
from streambed.abr_service.wire import MAX_DOWNLOAD_S as MAX_DOWNLOAD_S
from streambed.abr_service.wire import MAX_TIMESTAMP_MS as MAX_TIMESTAMP_MS
from streambed.abr_service.wire import MIN_DOWNLOAD_S as MIN_DOWNLOAD_S
from streambed.abr_service.wire import SESSION_ID_PATTERN as SESSION_ID_PATTERN

ParamValue = str | int | float | bool
_FIRST_MEASUREMENTS = ("last_chunk_bytes", "last_chunk_download_s")

DECIDE_EXAMPLE_FIRST: dict[str, Any] = {
    "session_id": "player-42",
    "chunk_index": 0,
    "buffer_s": 0.0,
}
DECIDE_EXAMPLE: dict[str, Any] = {
    "session_id": "player-42",
    "chunk_index": 7,
    "last_quality": 2,
    "buffer_s": 11.4,
    "last_chunk_bytes": 602_112,
    "last_chunk_download_s": 1.83,
    "rebuffer_s": 0.0,
    "algorithm": "robustmpc",
}


class DecideRequest(BaseModel):
    """What a player measured since its previous request, and which chunk it asks about.

    Before the first chunk (``last_quality`` null) nothing has been measured: a measurement
    sent as 0 then (simple players send zeros) is accepted and ignored.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [DECIDE_EXAMPLE, DECIDE_EXAMPLE_FIRST]},
    )

    session_id: str = Field(
        pattern=SESSION_ID_PATTERN,
        description="The player's session; its history is kept by the service.",
    )
    chunk_index: int = Field(ge=0, le=1_000_000, description="The chunk about to be requested.")
    last_quality: int | None = Field(
        None,
        ge=0,
        le=255,
        description="Level of the chunk just downloaded; null before chunk 0 (then the "
        "measurements below mean nothing and may be left out or sent as 0).",
    )
    buffer_s: float = Field(ge=0, le=86_400, allow_inf_nan=False, description="Buffer now, s.")
    last_chunk_bytes: int | None = Field(
        None, ge=1, le=10**10, description="Size of the chunk just downloaded, bytes."
    )
    last_chunk_download_s: float | None = Field(
        None,
        ge=MIN_DOWNLOAD_S,
        le=MAX_DOWNLOAD_S,
        allow_inf_nan=False,
        description="Its request-to-last-byte time, s (at least 0.1 ms, at most a day).",
    )
    last_chunk_start_ms: float | None = Field(
        None,
        ge=0,
        le=MAX_TIMESTAMP_MS,
        allow_inf_nan=False,
        description="Or its request time, ms (any epoch).",
    )
    last_chunk_end_ms: float | None = Field(
        None,
        ge=0,
        le=MAX_TIMESTAMP_MS,
        allow_inf_nan=False,
        description="And its last byte's time, ms (same epoch; 0.1 ms to a day after the start).",
    )
    rebuffer_s: float = Field(
        0.0,
        ge=0,
        le=86_400,
        allow_inf_nan=False,
        description="Stall since the previous request, s.",
    )
    algorithm: str | None = Field(
        None,
        max_length=64,
        description="Algorithm for this session; fixed at its first request unless named again.",
    )
    video: str | None = Field(None, max_length=128, description="Video name (GET /videos).")
    params: dict[str, ParamValue] | None = Field(
        None, description='Algorithm parameters for this session, e.g. {"reservoir_s": 8}.'
    )

    @model_validator(mode="before")
    @classmethod
    def _zeros_before_first_chunk(cls, data: Any) -> Any:
        """Drop measurements sent as 0 while ``last_quality`` is null: they mean nothing yet."""
        if not isinstance(data, dict) or data.get("last_quality") is not None:
            return data
        zeros = [
            k
            for k in _FIRST_MEASUREMENTS
            if k in data and not isinstance(data[k], bool) and data[k] == 0
        ]
        return {k: v for k, v in data.items() if k not in zeros} if zeros else data


class DecideResponse(BaseModel):
    session_id: str
    chunk_index: int
    quality: int = Field(description="Level to fetch chunk_index at (0 = lowest).")
    bitrate_kbps: float
    algorithm: str = Field(description="The session's algorithm.")
    model_version: str | None = Field(None, description="name@vN of the model, for learned ones.")
    decision_ms: float = Field(description="Time the service spent deciding, ms.")
    fallback: bool = Field(description="True when the fallback algorithm decided instead.")
    reason: str | None = Field(None, description="Why the fallback decided.")


class LegacyRequest(BaseModel):
    """The body Pensieve's modified dash.js POSTs (extra fields are ignored)."""

    model_config = ConfigDict(extra="allow")

    lastRequest: int = Field(ge=0, le=1_000_000)
    lastquality: int = Field(ge=0, le=255)
    buffer: float = Field(ge=0, le=86_400, allow_inf_nan=False)
    RebufferTime: float = Field(ge=0, le=MAX_CUMULATIVE_REBUFFER_MS, allow_inf_nan=False)
    lastChunkStartTime: float = Field(ge=0, le=MAX_TIMESTAMP_MS, allow_inf_nan=False)
    lastChunkFinishTime: float = Field(ge=0, le=MAX_TIMESTAMP_MS, allow_inf_nan=False)
    lastChunkSize: int = Field(ge=1, le=10**10)


class SessionInfo(BaseModel):
    session_id: str
    video: str
    algorithm: str
    params: dict[str, Any]
    chunks_reported: int
    decisions: int
    last_chunk_index: int | None
    idle_s: float


class SessionList(BaseModel):
    count: int
    max_sessions: int
    idle_timeout_s: float
    recent: list[str] = Field(description="Up to 100 most recently used session ids.")


class ModelOut(ModelInfo):
    active_for: list[str] = Field(description="Algorithms this version serves now.")


class ModelList(BaseModel):
    models: list[ModelOut]
    active: dict[str, str] = Field(description="Algorithm -> name@vN serving it.")


class ActivateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(None, ge=1, description="Version to serve; default the latest.")
    algorithm: str = Field("ppo", max_length=64, description="Algorithm name it serves under.")


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algorithm: str | None = Field(None, max_length=64)


class ActivationOut(BaseModel):
    algorithm: str
    model_version: str
    sha256: str


class ParamOut(BaseModel):
    name: str
    type: str = Field(description="The parameter's type as its Params dataclass declares it.")
    default: Any = None
    doc: str = ""
    range: list[int | float | None] | None = Field(
        None, description="Valid range [lo, hi], both inclusive (null: unbounded)."
    )
    choices: list[str] | None = Field(None, description="Valid values of a string parameter.")
    valid: str = Field("", description="What the parameter accepts, in words.")


class AlgorithmOut(BaseModel):
    name: str
    kind: str = Field(description="classic (built-in rule), plugin (installed package) or learned")
    source: str = Field(
        description='built-in, "plugin <dist> <version> (<module:attr>)" or "model <version>"'
    )
    params: dict[str, Any] = Field(description="Parameter defaults.")
    parameters: list[ParamOut] = Field(
        default_factory=list, description="Each parameter's type, default and description."
    )
    model_version: str | None = None


class VideoOut(BaseModel):
    name: str
    bitrates_kbps: list[float]
    chunk_s: float
    num_chunks: int
    default: bool
