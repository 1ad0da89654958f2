"""``streambed serve``: the ABR decision service under uvicorn."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from streambed.core.errors import ConfigError

log = logging.getLogger(__name__)

# flag -> Settings field; a flag left out leaves the STREAMBED_* variable or the default.
FLAGS: dict[str, str] = {
    "host": "host",
    "port": "port",
    "algorithm": "algorithm",
    "fallback": "fallback_algorithm",
    "video": "videos",
    "models_dir": "models_dir",
    "model": "model",
    "token_file": "token_file",
    "session_idle_s": "session_idle_s",
    "max_sessions": "max_sessions",
    "first_quality": "first_quality",
    "max_body_bytes": "max_body_bytes",
    "max_model_bytes": "max_model_bytes",
    "log_dir": "log_dir",
    "run_id": "run_id",
    "access_log": "access_log",
    "head_timeout_s": "head_timeout_s",
    "body_timeout_s": "body_timeout_s",
    "max_connections": "max_connections",
    "decision_threads": "decision_threads",
    "max_pending_decisions": "max_pending_decisions",
    "max_mpc_horizon": "max_mpc_horizon",
}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the ABR decision service (POST /decide, Pensieve's POST /, models)",
        description=(
            "Serve ABR decisions over HTTP. Every flag can also be set with a STREAMBED_* "
            "environment variable (e.g. STREAMBED_PORT, STREAMBED_TOKEN); flags win. "
            "OpenAPI documentation is at /docs."
        ),
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default 8333; 0 picks a free one)")
    p.add_argument("--algorithm", help="default algorithm of a session (default robustmpc)")
    p.add_argument("--fallback", help="classic algorithm used when one fails (default bba)")
    p.add_argument(
        "--video",
        type=Path,
        action="append",
        help="video description (video.json or video_size_* dir); repeatable, first is the "
        "default (default: the embedded generated video)",
    )
    p.add_argument("--models-dir", type=Path, help="checkpoint store (default: a temp dir)")
    p.add_argument("--model", type=Path, help="checkpoint to store and serve as ppo at start-up")
    p.add_argument("--token-file", type=Path, help="bearer token for uploads and activation")
    p.add_argument("--session-idle-s", type=float, help="forget idle sessions after (default 600)")
    p.add_argument("--max-sessions", type=int, help="sessions kept, LRU beyond (default 10000)")
    p.add_argument("--first-quality", type=int, help="level of chunk 0 (default 1; -1: ask)")
    p.add_argument("--max-body-bytes", type=int, help="request body limit (default 65536)")
    p.add_argument("--max-model-bytes", type=int, help="upload limit (default 64 MiB)")
    p.add_argument("--log-dir", type=Path, help="one JSON-lines decision log per session here")
    p.add_argument("--run-id", help="tag written into every decision log line")
    p.add_argument("--access-log", action="store_true", default=None, help="log every HTTP request")
    p.add_argument(
        "--head-timeout-s",
        type=float,
        help="close a connection whose request head takes longer (default 10)",
    )
    p.add_argument(
        "--body-timeout-s",
        type=float,
        help="close a connection whose request body takes longer after the head (default 30)",
    )
    p.add_argument(
        "--max-connections", type=int, help="connections at once, 503 beyond (default 1000)"
    )
    p.add_argument("--decision-threads", type=int, help="threads running decisions (default 4)")
    p.add_argument(
        "--max-pending-decisions",
        type=int,
        help="decisions running or queued at once, 503 beyond (default 256)",
    )
    p.add_argument(
        "--max-mpc-horizon",
        type=int,
        help="longest MPC horizon a session may ask for (default 5, at most 8; each more chunk "
        "costs 6 times the time and memory of a decision)",
    )
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from streambed.abr_service.app.settings import Settings

    given = {field: getattr(args, flag) for flag, field in FLAGS.items()}
    try:
        return Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        flags = {field: flag for flag, field in FLAGS.items()}
        problems = "; ".join(
            f"{_where(str(e['loc'][0]) if e['loc'] else '', flags)}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"settings: {problems}") from None


def _where(field: str, flags: dict[str, str]) -> str:
    flag = flags.get(field)
    option = f"--{flag.replace('_', '-')} / " if flag else ""
    return f"{field} ({option}STREAMBED_{field.upper()})"


def run(args: argparse.Namespace) -> int:
    import torch

    from streambed.abr_service.app.main import create_app
    from streambed.core.servers import check_bindable, run_server

    settings = settings_from_args(args)
    check_bindable(settings.host, settings.port)
    torch.set_num_threads(1)  # one small forward pass per request: threads only add latency
    app = create_app(settings)
    log.info("listening on http://%s:%d (docs at /docs)", settings.host, settings.port)
    run_server(
        app,
        settings.host,
        settings.port,
        settings.access_log,
        head_timeout_s=settings.head_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_connections=settings.max_connections,
    )
    return 0
