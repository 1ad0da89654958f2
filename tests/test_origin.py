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

from streambed.abr_service.video import generate_video, load_video
from streambed.core.errors import ConfigError
from streambed.core.servers import free_port, serve_in_thread, wait_healthy
from streambed.server.app import create_app
from streambed.server.build import build_synthetic
from streambed.server.mpd import MPD_NAME, parse_mpd

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


def test_multi_range_edge_cases(site: tuple[str, Path]) -> None:
    """Unsatisfiable parts of a range set are dropped, not a 416 for all; suffixes longer than
    the file, whitespace, overlaps, giant numbers and over-long lists behave."""
    url, root = site
    data = (root / CHUNK).read_bytes()
    size = len(data)
    with httpx.Client(base_url=url) as client:
        r = client.get(f"/{CHUNK}", headers={"Range": f"bytes=0-10,{size + 10}-{size + 20}"})
        assert r.status_code == 206, r.text
        assert r.headers["content-range"] == f"bytes 0-10/{size}" and r.content == data[:11]
        r = client.get(f"/{CHUNK}", headers={"Range": f"bytes={size * 9}-, 5-9"})
        assert r.status_code == 206 and r.content == data[5:10]
        r = client.get(f"/{CHUNK}", headers={"Range": f"bytes=-{size * 10}"})  # whole file
        assert r.status_code == 206 and r.content == data
        assert r.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
        r = client.get(f"/{CHUNK}", headers={"Range": "bytes = 2-4"})
        assert r.status_code == 206 and r.content == data[2:5]
        r = client.get(f"/{CHUNK}", headers={"Range": "bytes=0-9,5-19"})  # overlapping: merged
        assert r.status_code == 206 and r.content == data[:20]
        r = client.get(f"/{CHUNK}", headers={"Range": "bytes=0-" + "9" * 5000})
        assert r.status_code == 206 and r.content == data
        r = client.get(f"/{CHUNK}", headers={"Range": "bytes=" + "9" * 5000 + "-"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
        r = client.get(f"/{CHUNK}", headers={"Range": f"bytes={size}-, {size + 1}-, -0"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
        many = "bytes=" + ",".join(f"{i}-{i}" for i in range(0, 400, 2))  # 200 ranges: ignored
        r = client.get(f"/{CHUNK}", headers={"Range": many})
        assert r.status_code == 200 and r.content == data
        r = client.get(f"/{CHUNK}", headers={"Range": "bytes=0-0,2-2,4-4"})  # within the bound
        assert r.status_code == 206 and r.headers["content-type"].startswith("multipart/")


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


# ---------------------------------------------------------------------------------------------
# The dash.js player's page and scripts (fixed files from the web directory, never a path)

WEB_SECRET = b"WEB-SECRET-51d7e0"
PLAYER_SCRIPTS = ("streambed-abr.js", "streambed-player.js", "streambed-decide-worker.js")


def make_web_dir(path: Path, with_dashjs: bool = True) -> Path:
    """A player web directory: the page, its scripts, a fake dash.js build when asked, and files
    that must never be served (the driver, package.json, another file of dash.js's package)."""
    path.mkdir(parents=True)
    (path / "player.html").write_text("<!doctype html><title>page</title>")
    for name in PLAYER_SCRIPTS:
        (path / name).write_text(f"// {name}\n")
    for secret in ("drive.mjs", "package.json", "package-lock.json"):
        (path / secret).write_bytes(WEB_SECRET)
    package = path / "node_modules" / "dashjs"
    package.mkdir(parents=True)
    (package / "package.json").write_bytes(WEB_SECRET)
    if with_dashjs:
        build = package / "dist" / "modern" / "umd"
        build.mkdir(parents=True)
        (build / "dash.all.min.js").write_text("var dashjs = {};\n")
    return path


@pytest.fixture(scope="module")
def player_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("player-site")
    root = base / "content"
    build_synthetic(generate_video(seed=4, num_chunks=2, bitrates_kbps=(300, 750)), root)
    (root / "secret.txt").write_bytes(WEB_SECRET)  # content is never reached from the routes
    web = make_web_dir(base / "web")
    with serve_in_thread(create_app(root, web_dir=web)) as url:
        yield url


def test_player_page_and_scripts(player_site: str) -> None:
    with httpx.Client(base_url=player_site) as client:
        page = client.get("/player.html")
        assert page.status_code == 200 and page.text.startswith("<!doctype html>")
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        # Cross-origin isolated: the page may use SharedArrayBuffer (its decision worker too).
        assert page.headers["cross-origin-opener-policy"] == "same-origin"
        assert page.headers["cross-origin-embedder-policy"] == "require-corp"
        assert page.headers["cache-control"] == "no-store"
        for name in (*PLAYER_SCRIPTS, "dash.all.min.js"):
            r = client.get(f"/_streambed/{name}")
            assert r.status_code == 200, name
            assert r.headers["content-type"] == "text/javascript; charset=utf-8"
            isolated = name == "streambed-decide-worker.js"
            assert ("cross-origin-embedder-policy" in r.headers) == isolated, name
        assert client.get("/_streambed/dash.all.min.js").text == "var dashjs = {};\n"
        head = client.head("/player.html")
        assert head.status_code == 200 and head.content == b""
        assert client.post("/player.html").status_code == 405
        # The MPD and segments are still served from the content root.
        assert client.get(f"/{MPD_NAME}").status_code == 200
        for name in ("drive.mjs", "package.json", "node_modules", "secret.txt", "player.html"):
            r = client.get(f"/_streambed/{name}")
            assert r.status_code == 404 and "not a player file" in r.json()["detail"], name


@pytest.mark.parametrize(
    "target",
    [
        b"/_streambed/../package.json",
        b"/_streambed/../../package.json",
        b"/_streambed/..%2fpackage.json",
        b"/_streambed/%2e%2e%2fpackage.json",
        b"/_streambed/%2e%2e/%2e%2e/web/package.json",
        b"/_streambed/..%5cpackage.json",
        b"/_streambed/..\\package.json",
        b"/_streambed/node_modules/dashjs/package.json",
        b"/_streambed/node_modules%2fdashjs%2fpackage.json",
        b"/_streambed/dash.all.min.js/../../package.json",
        b"/_streambed/dash.all.min.js%2f..%2f..%2f..%2fpackage.json",
        b"/_streambed//web/package.json",
        b"/_streambed/%2fetc%2fpasswd",
        b"/_streambed/drive.mjs",
        b"/_streambed/drive.mjs%00.js",
        b"/_streambed/streambed-abr.js%00",
        b"/_streambed/.%2e/secret.txt",
        b"/_streambed/",
        b"/player.html/../package.json",
        b"/player.html%2f..%2fpackage.json",
        b"/player.html/../../web/drive.mjs",
        b"/../web/player.html",
        b"/%2e%2e/web/drive.mjs",
        b"/secret.txt/../../web/package.json",
    ],
)
def test_player_routes_serve_nothing_else(player_site: str, target: bytes) -> None:
    status, data = raw_get(player_site, target)
    assert status in (400, 404), data[:300]
    assert WEB_SECRET not in data
    assert b"root:" not in data


def test_player_page_without_node_modules_is_503(tmp_path: Path) -> None:
    """No ``npm ci`` yet: the page and dash.js answer 503 naming scripts/setup.sh; the rest of the
    origin works."""
    root = tmp_path / "content"
    build_synthetic(generate_video(seed=5, num_chunks=2, bitrates_kbps=(300, 750)), root)
    web = make_web_dir(tmp_path / "web", with_dashjs=False)
    with serve_in_thread(create_app(root, web_dir=web)) as url, httpx.Client(base_url=url) as c:
        for path in ("/player.html", "/_streambed/dash.all.min.js"):
            r = c.get(path)
            assert r.status_code == 503, path
            assert "scripts/setup.sh" in r.json()["detail"]
            assert "dash.all.min.js" in r.json()["detail"]
        assert c.get("/_streambed/streambed-abr.js").status_code == 200
        assert c.get(f"/{MPD_NAME}").status_code == 200


def test_the_real_player_files_are_served(tmp_path: Path) -> None:
    """The default web directory is player/web: every name the page loads is there."""
    from streambed.server.app import WEB_DIR
    from streambed.server.web import PLAYER_FILES

    assert (WEB_DIR / "player.html").is_file()
    html = (WEB_DIR / "player.html").read_text()
    for name, (relative, _) in PLAYER_FILES.items():
        assert (
            relative == "node_modules/dashjs/dist/modern/umd/dash.all.min.js"
            or (WEB_DIR / relative).is_file()
        ), name
    for name in ("dash.all.min.js", "streambed-abr.js", "streambed-player.js"):
        assert f'src="/_streambed/{name}"' in html
