"""The DASH origin over real HTTP: types, lengths, ranges, HEAD, caching, CORS, and that nothing
outside the content root is ever served."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest

from abr_service.video import generate_video, load_video
from server.app import create_app
from server.build import build_synthetic
from server.mpd import MPD_NAME, parse_mpd
from streambed.errors import ConfigError
from streambed.servers import free_port, serve_in_thread, wait_healthy

SECRET = b"TOP-SECRET-8f3a2c"
CHUNK = "chunk-1-00002.m4s"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A synthetic content root on loopback, with secrets beside it and symlinks out of it."""
    base = tmp_path_factory.mktemp("origin")
    root = base / "content"
    build_synthetic(generate_video(seed=3, num_chunks=3, bitrates_kbps=(300, 750, 1200)), root)
    (base / "secret.txt").write_bytes(SECRET)
    (base / "content-secret").mkdir()  # shares the root's name as a prefix
    (base / "content-secret" / "secret.txt").write_bytes(SECRET)
    (root / ".hidden").write_bytes(SECRET)
    (root / "sub").mkdir()
    os.symlink(base / "secret.txt", root / "link-out")
    os.symlink("../../secret.txt", root / "sub" / "relative-out")
    os.symlink(base, root / "dir-link")
    os.symlink(root / CHUNK, root / "link-in")  # stays inside: allowed
    with serve_in_thread(create_app(root)) as url:
        yield url, root


def raw_get(url: str, target: bytes) -> tuple[int, bytes]:
    """Send ``GET target`` exactly as given (no client-side normalisation); status and bytes."""
    host, port = urlsplit(url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


def test_types_lengths_and_bodies(site: tuple[str, Path]) -> None:
    url, root = site
    expected = {
        MPD_NAME: "application/dash+xml",
        "video.json": "application/json",
        "init-0.mp4": "video/mp4",
        CHUNK: "video/iso.segment",
    }
    with httpx.Client(base_url=url) as client:
        for name, media_type in expected.items():
            r = client.get(f"/{name}", headers={"Accept-Encoding": "gzip, br"})
            assert r.status_code == 200, name
            assert r.headers["content-type"] == media_type
            size = (root / name).stat().st_size
            assert int(r.headers["content-length"]) == size
            assert r.content == (root / name).read_bytes()
            assert r.headers["accept-ranges"] == "bytes"
            assert r.headers["cache-control"] == "no-store"
            assert "content-encoding" not in r.headers  # bytes on the wire = sizes on disk
        manifest = parse_mpd(client.get(f"/{MPD_NAME}").text, f"{url}/{MPD_NAME}")
        assert manifest.chunk_url(1, 1) == f"{url}/{CHUNK}"
        assert client.get(manifest.chunk_url(1, 1)).content == (root / CHUNK).read_bytes()
        video = load_video(root)
        assert len(client.get(manifest.chunk_url(2, 0)).content) == video.chunk_bytes[2, 0]
        assert client.get("/healthz").json() == {"status": "ok"}


def test_byte_ranges(site: tuple[str, Path]) -> None:
    url, root = site
    data = (root / CHUNK).read_bytes()
    size = len(data)
    with httpx.Client(base_url=url) as client:
        r = client.get(f"/{CHUNK}", headers={"Range": "bytes=0-99"})
        assert r.status_code == 206
        assert r.headers["content-range"] == f"bytes 0-99/{size}"
        assert r.headers["content-length"] == "100" and r.content == data[:100]
        r = client.get(f"/{CHUNK}", headers={"Range": "bytes=-100"})
        assert r.status_code == 206 and r.content == data[-100:]
        assert r.headers["content-range"] == f"bytes {size - 100}-{size - 1}/{size}"
        r = client.get(f"/{CHUNK}", headers={"Range": "bytes=1000-"})
        assert r.status_code == 206 and r.content == data[1000:]
        assert int(r.headers["content-length"]) == size - 1000
        r = client.get(f"/{CHUNK}", headers={"Range": f"bytes=10-{size + 500}"})  # clipped
        assert r.status_code == 206 and r.content == data[10:]
        for bad in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
            r = client.get(f"/{CHUNK}", headers={"Range": bad})
            assert r.status_code == 416, bad
            assert r.headers["content-range"] == f"bytes */{size}"
            assert r.headers["cache-control"] == "no-store"
        for ignored in ("items=0-1", "bytes=abc", "bytes=5-1", "bytes=1-2;"):
            r = client.get(f"/{CHUNK}", headers={"Range": ignored})
            assert r.status_code == 200 and r.content == data, ignored
        r = client.get(f"/{CHUNK}", headers={"Range": "bytes=0-0, -1"})
        assert r.status_code == 206 and r.headers["content-type"].startswith("multipart/byteranges")


def test_head(site: tuple[str, Path]) -> None:
    url, root = site
    size = (root / CHUNK).stat().st_size
    with httpx.Client(base_url=url) as client:
        r = client.head(f"/{CHUNK}")
        assert r.status_code == 200 and r.content == b""
        assert int(r.headers["content-length"]) == size
        assert r.headers["content-type"] == "video/iso.segment"
        r = client.head(f"/{CHUNK}", headers={"Range": "bytes=0-9"})
        assert r.status_code == 206 and r.headers["content-length"] == "10" and r.content == b""
        assert client.head("/missing.m4s").status_code == 404


def test_cors(site: tuple[str, Path]) -> None:
    url, _ = site
    origin = {"Origin": "http://127.0.0.1:9999"}
    with httpx.Client(base_url=url) as client:
        r = client.get(f"/{MPD_NAME}", headers=origin)
        assert r.headers["access-control-allow-origin"] == "*"
        assert "content-range" in r.headers["access-control-expose-headers"].lower()
        r = client.options(
            f"/{CHUNK}",
            headers={
                **origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "range",
            },
        )
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "*"
        assert "GET" in r.headers["access-control-allow-methods"]
        assert "range" in r.headers["access-control-allow-headers"].lower()
        r = client.options("/anything")  # a plain OPTIONS, not a preflight
        assert r.status_code == 204 and "HEAD" in r.headers["allow"]
        r = client.get("/nope.m4s", headers=origin)
        assert r.status_code == 404 and r.headers["access-control-allow-origin"] == "*"


def test_errors_are_json(site: tuple[str, Path]) -> None:
    url, _ = site
    with httpx.Client(base_url=url) as client:
        r = client.get("/chunk-9-00001.m4s")
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"detail": "not found: /chunk-9-00001.m4s"}
        assert r.headers["cache-control"] == "no-store"
        for directory in ("/", "/sub", "/sub/"):
            assert client.get(directory).status_code == 404, directory
        assert client.post(f"/{MPD_NAME}", content=b"x").status_code == 405
        assert client.get("/link-in").content == client.get(f"/{CHUNK}").content


@pytest.mark.parametrize(
    "target",
    [
        b"/../secret.txt",
        b"/../../../../../../etc/passwd",
        b"/sub/../../secret.txt",
        b"/%2e%2e/secret.txt",
        b"/%2e%2e%2fsecret.txt",
        b"/..%2fsecret.txt",
        b"/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        b"/%252e%252e%252fsecret.txt",  # double-encoded: decoded once, it is a file name
        b"/%25252e%25252e/secret.txt",
        b"/..\\secret.txt",
        b"/%2e%2e%5csecret.txt",
        b"/..%5c..%5csecret.txt",
        b"//etc/passwd",
        b"/%2fetc%2fpasswd",
        b"/%c0%ae%c0%ae/secret.txt",  # overlong UTF-8 dots
        b"/./../secret.txt",
        b"/../content-secret/secret.txt",
        b"/link-out",
        b"/sub/relative-out",
        b"/dir-link/secret.txt",
        b"/dir-link/content-secret/secret.txt",
        b"/.hidden",
        b"/%2ehidden",
        b"/" + CHUNK.encode() + b"%00",
        b"/%00../secret.txt",
        b"/secret.txt%00.m4s",
        b"http://127.0.0.1/../secret.txt",  # absolute-form request target
    ],
)
def test_nothing_outside_the_root(site: tuple[str, Path], target: bytes) -> None:
    url, _ = site
    status, data = raw_get(url, target)
    assert status in (400, 404), data[:300]
    assert SECRET not in data
    assert b"root:" not in data  # /etc/passwd


def test_absolute_paths_and_raw_nul(site: tuple[str, Path]) -> None:
    url, root = site
    secret = root.parent / "secret.txt"
    for target in ("/" + str(secret), "/" + quote(str(secret), safe=""), "//" + str(secret)):
        status, data = raw_get(url, target.encode())
        assert status in (400, 404) and SECRET not in data, target
    # A raw NUL or backslash never reaches a file either, whoever refuses it.
    for raw in (b"/secret\x00.txt", b"/..\\..\\secret.txt"):
        status, data = raw_get(url, raw)
        assert status in (400, 404) and SECRET not in data, raw


def test_create_app_needs_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        create_app(tmp_path / "missing")


def test_origin_process(tmp_path: Path) -> None:
    """``streambed origin`` in its own process: logs the MPD URL and serves the content."""
    build_synthetic(generate_video(seed=1, num_chunks=2, bitrates_kbps=(300, 750)), tmp_path / "c")
    port = free_port()
    cmd = [sys.executable, "-m", "streambed.cli", "origin", "--content", str(tmp_path / "c")]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_healthy(url, proc) is None, "origin did not start"
        r = httpx.get(f"{url}/{MPD_NAME}")
        assert r.status_code == 200 and parse_mpd(r.text, r.url.path).num_segments == 2
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert f"MPD at http://127.0.0.1:{port}/{MPD_NAME}" in out
    assert "2 levels 300,750 kbps, 2 segments of 4 s" in out
