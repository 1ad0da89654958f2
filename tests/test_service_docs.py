"""``/docs`` and ``/redoc`` work with no internet: their assets come from the installed package,
and headless Chromium (no network but loopback) renders the operations of the API."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
from service_helpers import running_service

CHROMIUM = Path("/usr/bin/chromium")
EXTERNAL = re.compile(r"""(?:src|href)=["']?(?:https?:)?//(?!127\.0\.0\.1|localhost)""")


def test_docs_pages_load_nothing_from_another_host(tmp_path: Path) -> None:
    with running_service(tmp_path) as url:
        for page in ("/docs", "/redoc"):
            html = httpx.get(url + page, timeout=10).text
            assert not EXTERNAL.search(html), f"{page} loads from another host:\n{html}"
            assets = re.findall(r"""(?:src|href)=["']?(/[^"' >]+)""", html)
            assert any(a.endswith(".js") for a in assets), html
            for asset in assets:
                response = httpx.get(url + asset, timeout=10)
                assert response.status_code == 200, asset
                assert len(response.content) > 1000 or asset.endswith(".png"), asset


def test_swagger_ui_renders_the_api_offline_in_chromium(tmp_path: Path) -> None:
    assert CHROMIUM.is_file(), "the docs test needs Chromium (scripts/setup.sh --dev installs it)"
    with running_service(tmp_path) as url:
        argv = [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            # Nothing but loopback: a CDN asset would fail to load and the page stay empty.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url + "/docs",
        ]
        env = {**os.environ, "HOME": str(tmp_path)}
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    dom = out.stdout
    assert "opblock" in dom, out.stderr[-2000:]
    assert "/decide" in dom
