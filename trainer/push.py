"""Pushing a run's new best checkpoint to the decision service (``--push``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx

from streambed.trainer.args import CommonArgs

log = logging.getLogger(__name__)


def push_checkpoint(
    args: CommonArgs, path: Path, attempts: int = 3, transport: httpx.BaseTransport | None = None
) -> bool:
    """Upload ``path`` and activate it; retried, reported, never raised."""
    name = args.push_name or Path(args.out).name
    try:
        token = Path(args.token_file).read_text().strip() if args.token_file else ""
    except OSError as exc:
        log.error("push: cannot read token file %s: %s", args.token_file, exc.strerror)
        return False
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{args.push.rstrip('/')}/models/{name}"
    for attempt in range(1, attempts + 1):
        try:
            with httpx.Client(timeout=30, transport=transport) as client:
                r = client.put(
                    url,
                    content=path.read_bytes(),
                    headers=headers,
                    params={"activate": "true", "algorithm": args.push_algorithm},
                )
            if r.status_code in (200, 201):
                info = r.json()
                log.info(
                    "pushed %s to %s as %s@v%s", path.name, args.push, name, info.get("version")
                )
                return True
            log.warning(
                "push attempt %d/%d: HTTP %d %s", attempt, attempts, r.status_code, r.text[:200]
            )
            if r.status_code in (401, 403, 413, 422):
                break  # retrying will not help
        except httpx.HTTPError as exc:
            log.warning("push attempt %d/%d: %s", attempt, attempts, exc)
        time.sleep(0.5 * attempt)
    log.error("push of %s to %s failed; training goes on", path.name, args.push)
    return False
