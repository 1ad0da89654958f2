"""Typed settings of the decision service, from flags and ``STREAMBED_*`` environment variables.

Flags win over the environment, which wins over the defaults here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streambed.abr_service.video import FIRST_QUALITY
from streambed.core.errors import ConfigError
from streambed.core.servers import BODY_TIMEOUT_S, HEAD_TIMEOUT_S, MAX_CONNECTIONS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMBED_", extra="forbid")

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = Field(default=8333, ge=0, le=65535)
    """TCP port (8333, as Pensieve's ABR server)."""
    algorithm: str = "robustmpc"
    """Algorithm of a session whose first request names none."""
    fallback_algorithm: str = "bba"
    """Classic algorithm that decides when the session's own algorithm fails."""
    videos: list[Path] = Field(default_factory=list)
    """Video descriptions served (video.json or video_size_* directory); the first is the
    default. Empty: the embedded generated video."""
    models_dir: Path | None = None
    """Where uploaded checkpoints live. None: a temporary directory that vanishes at exit."""
    model: Path | None = None
    """Checkpoint stored and activated for ``ppo`` at start-up (e.g. the Pensieve-PPO model)."""
    token_file: Path | None = None
    """File holding the bearer token that model uploads and activations need."""
    token: SecretStr | None = None
    """The token itself (``STREAMBED_TOKEN``); ``token_file`` wins when both are given."""
    session_idle_s: float = Field(default=600.0, gt=0)
    """A session unused this long is forgotten."""
    max_sessions: int = Field(default=10_000, ge=1)
    """Most sessions kept; the least recently used is evicted beyond it."""
    first_quality: int = Field(default=FIRST_QUALITY, ge=-1)
    """Level of chunk 0 when the session has no history yet (Pensieve's harness: 1).
    -1 asks the algorithm instead."""
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    """Largest request body, except model uploads."""
    max_model_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest checkpoint upload."""
    log_dir: Path | None = None
    """One JSON-lines decision log per session here, when given."""
    run_id: str = ""
    """Tag written into every decision log line."""
    access_log: bool = False
    """uvicorn's per-request access log (off: it costs throughput)."""
    head_timeout_s: float = Field(default=HEAD_TIMEOUT_S, gt=0, le=3600)
    """A connection whose request head is not complete this long after the connection or the
    request's first byte is closed (408)."""
    body_timeout_s: float = Field(default=BODY_TIMEOUT_S, gt=0, le=3600)
    """A request whose body is not complete this long after its head is closed."""
    max_connections: int = Field(default=MAX_CONNECTIONS, ge=1)
    """Connections (and requests running) at once; beyond it requests get 503."""
    decision_threads: int = Field(default=4, ge=1, le=64)
    """Worker threads running decisions off the event loop (a session's requests run in
    order, one at a time)."""
    max_pending_decisions: int = Field(default=256, ge=1)
    """Decisions running or waiting at once; beyond it /decide and POST / answer 503."""
    max_mpc_horizon: int = Field(default=5, ge=1, le=8)
    """Longest MPC horizon a session's ``params`` may ask for: 6^horizon plans are scored per
    decision (5: under a millisecond; each more chunk costs 6 times the time and memory)."""

    def read_token(self) -> str | None:
        """The configured upload token, or None when uploads are disabled."""
        if self.token_file is not None:
            try:
                text = self.token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"token file {self.token_file}: {exc.strerror}") from exc
            if not text:
                raise ConfigError(f"token file {self.token_file} is empty")
            return text
        if self.token is not None and self.token.get_secret_value().strip():
            return self.token.get_secret_value().strip()
        return None
