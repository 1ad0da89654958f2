"""Model upload, validation, activation, rollback and hot-swap under load, on a real server."""

from __future__ import annotations

import asyncio
import io
import pickle
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from service_helpers import TOKEN, auth, checkpoint_bytes, running_service

from streambed.abr_service.app.main import create_app
from streambed.abr_service.app.settings import Settings
from streambed.abr_service.video import default_video
from streambed.core.errors import ConfigError
from streambed.core.servers import serve_in_thread


def no_leftovers(models: Path) -> bool:
    """No half-written or unvalidated file anywhere in the store."""
    return not [
        p
        for p in models.rglob("*")
        if p.is_file() and (".incoming" in p.parts or p.name.startswith(".tmp-"))
    ]


def decide_ppo(client: httpx.Client, sid: str, k: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {
        "session_id": sid,
        "chunk_index": k,
        "buffer_s": 7.5,
        "algorithm": "ppo",
    }
    if k:
        body.update(last_quality=1, last_chunk_bytes=420_000, last_chunk_download_s=0.9)
    r = client.post("/decide", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_upload_list_activate_rollback_restart(tmp_path: Path) -> None:
    with running_service(tmp_path) as url, httpx.Client(base_url=url) as client:
        r = client.put("/models/pensieve", content=checkpoint_bytes(seed=1), headers=auth())
        assert r.status_code == 201, r.text
        v1 = r.json()
        assert v1["version"] == 1 and len(v1["sha256"]) == 64 and v1["meta"]["seed"] == 1
        assert v1["active_for"] == []
        # the same bytes again: the stored version, not a new one
        again = client.put("/models/pensieve", content=checkpoint_bytes(seed=1), headers=auth())
        assert again.status_code == 200 and again.json()["version"] == 1
        assert client.post("/models/pensieve/activate", headers=auth()).json() == {
            "algorithm": "ppo",
            "model_version": "pensieve@v1",
            "sha256": v1["sha256"],
        }
        assert decide_ppo(client, "a")["model_version"] == "pensieve@v1"
        r = client.put("/models/pensieve", content=checkpoint_bytes(seed=2), headers=auth())
        assert r.json()["version"] == 2
        assert decide_ppo(client, "a", 2)["model_version"] == "pensieve@v1"  # not yet active
        r = client.post("/models/pensieve/activate", json={"version": 2}, headers=auth())
        assert r.json()["model_version"] == "pensieve@v2"
        assert decide_ppo(client, "a", 3)["model_version"] == "pensieve@v2"
        listing = client.get("/models").json()
        assert listing["active"] == {"ppo": "pensieve@v2"}
        assert [(m["version"], m["active_for"]) for m in listing["models"]] == [
            (1, []),
            (2, ["ppo"]),
        ]
        r = client.post("/models/pensieve/rollback", headers=auth())
        assert r.json()["model_version"] == "pensieve@v1"
        assert decide_ppo(client, "a", 4)["model_version"] == "pensieve@v1"
        assert client.post("/models/pensieve/rollback", headers=auth()).status_code == 409
        # a second learned algorithm under its own name
        r = client.post(
            "/models/pensieve/activate", json={"version": 2, "algorithm": "ppo-b"}, headers=auth()
        )
        assert r.status_code == 200
        assert decide_ppo(client, "b", 0)["algorithm"] == "ppo"
        body = {"session_id": "c", "chunk_index": 0, "buffer_s": 0, "algorithm": "ppo-b"}
        assert client.post("/decide", json=body).json()["model_version"] == "pensieve@v2"
        names = {a["name"]: a["kind"] for a in client.get("/algorithms").json()}
        assert names["ppo-b"] == "learned" and names["bba"] == "classic"
        metrics = client.get("/metrics").text
        assert 'streambed_active_model_info{algorithm="ppo",version="pensieve@v1"} 1.0' in metrics
    # a restart on the same directory serves what was active
    with running_service(tmp_path) as url, httpx.Client(base_url=url) as client:
        assert client.get("/models").json()["active"] == {
            "ppo": "pensieve@v1",
            "ppo-b": "pensieve@v2",
        }
        assert decide_ppo(client, "d")["model_version"] == "pensieve@v1"
    assert no_leftovers(tmp_path / "models")


def test_activation_refusals(tmp_path: Path) -> None:
    with running_service(tmp_path) as url, httpx.Client(base_url=url) as client:
        client.put("/models/m", content=checkpoint_bytes(), headers=auth())
        cases = [
            ("/models/m/activate", {"algorithm": "bba"}, 422, "built-in"),
            ("/models/m/activate", {"algorithm": "../x"}, 422, "invalid"),
            ("/models/m/activate", {"version": 9}, 404, "no version 9"),
            ("/models/nope/activate", None, 404, "no model named"),
            ("/models/m/activate", {"versoin": 1}, 422, "versoin"),
            ("/models/m/rollback", None, 409, "not active"),
        ]
        for path, body, status, text in cases:
            r = client.post(path, json=body, headers=auth())
            assert r.status_code == status, (path, body, r.text)
            assert text in str(r.json()["detail"]), r.text


def _pickle_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class NotAStateDict:
    pass


REFUSED = [
    ("truncated", checkpoint_bytes()[:2000], "not a loadable checkpoint"),
    (
        "five-levels",
        checkpoint_bytes(levels=5),
        "has shape (128, 5), expected (128, 6) for a 6-level ladder",
    ),
    ("list-of-ints", _pickle_bytes([1, 2, 3]), "not a policy checkpoint"),
    ("arbitrary-object", pickle.dumps(NotAStateDict()), "not a loadable checkpoint"),
    ("text", b"hello, I am not a model", "not a loadable checkpoint"),
    ("empty", b"", "empty"),
]


@pytest.mark.parametrize("name, payload, message", REFUSED, ids=[c[0] for c in REFUSED])
def test_bad_uploads_are_refused_and_the_active_model_keeps_serving(
    tmp_path: Path, name: str, payload: bytes, message: str
) -> None:
    with running_service(tmp_path) as url, httpx.Client(base_url=url) as client:
        client.put("/models/good?activate=true", content=checkpoint_bytes(), headers=auth())
        r = client.put(f"/models/{name}?activate=true", content=payload, headers=auth())
        assert r.status_code == 422, r.text
        assert message in r.json()["detail"]
        assert str(tmp_path) not in r.json()["detail"]  # no server paths in messages
        assert decide_ppo(client, "s")["model_version"] == "good@v1"
        assert [m["name"] for m in client.get("/models").json()["models"]] == ["good"]
        assert no_leftovers(tmp_path / "models")


def test_tokens(tmp_path: Path) -> None:
    payload = checkpoint_bytes()
    with running_service(tmp_path) as url, httpx.Client(base_url=url) as client:
        r = client.put("/models/m", content=payload)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = client.put("/models/m", content=payload, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 403 and r.json()["detail"] == "wrong token"
        r = client.put("/models/m", content=payload, headers={"Authorization": f"Basic {TOKEN}"})
        assert r.status_code == 401
        assert client.post("/models/m/activate").status_code == 401
        assert client.get("/models").json()["models"] == []
    # no token configured: changes are refused, not open
    app = create_app(Settings(models_dir=tmp_path / "open"), videos=[default_video()])
    with serve_in_thread(app) as url:
        r = httpx.put(f"{url}/models/m", content=payload, headers=auth())
        assert r.status_code == 403 and "--token-file" in r.json()["detail"]


def test_upload_size_limit(tmp_path: Path) -> None:
    with running_service(tmp_path, max_model_bytes=4096) as url:
        r = httpx.put(f"{url}/models/m", content=checkpoint_bytes(), headers=auth())
        assert r.status_code == 413


def test_invalid_model_names(tmp_path: Path) -> None:
    with running_service(tmp_path) as url:
        for name in ("%2E%2E", ".hidden", "a%2Fb", "-x", "x" * 65):
            r = httpx.put(f"{url}/models/{name}", content=checkpoint_bytes(), headers=auth())
            assert r.status_code in (404, 422), (name, r.status_code)
        assert not [p for p in (tmp_path / "models").iterdir() if p.name not in (".incoming",)]


def test_preloaded_model_and_bad_preload(tmp_path: Path) -> None:
    good = tmp_path / "my model.pt"
    good.write_bytes(checkpoint_bytes())
    with running_service(tmp_path, model=good, algorithm="ppo") as url:
        r = httpx.post(f"{url}/decide", json={"session_id": "x", "chunk_index": 0, "buffer_s": 0})
        assert r.json()["algorithm"] == "ppo" and r.json()["model_version"] == "my-model@v1"
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    with pytest.raises(ConfigError, match="--model .*bad.pt: .*not a loadable checkpoint"):
        create_app(Settings(models_dir=tmp_path / "m2", model=bad), videos=[default_video()])
    with pytest.raises(ConfigError, match="default algorithm 'robustmcp' is unknown"):
        create_app(
            Settings(models_dir=tmp_path / "m3", algorithm="robustmcp"), videos=[default_video()]
        )


def test_corrupt_state_file_does_not_stop_the_service(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "state.json").write_text("{not json")
    with running_service(tmp_path) as url:
        assert httpx.get(f"{url}/healthz").json()["active_models"] == {}


# ------------------------------------------------------------------------------------------
# Hot swap while 50 sessions decide


def test_activation_under_50_concurrent_sessions(tmp_path: Path) -> None:
    with running_service(tmp_path, algorithm="ppo", model=None) as url:
        with httpx.Client(base_url=url) as client:
            for seed in (1, 2):
                client.put(
                    "/models/swap?activate=true",
                    content=checkpoint_bytes(seed=seed),
                    headers=auth(),
                )
        results = asyncio.run(_load_and_swap(url, sessions=50, chunks=48, swaps=10))
    answers, swaps = results
    assert len(answers) == 50 * 48
    failures = [a for a in answers if a.get("status") != 200 or a.get("fallback")]
    assert failures == []
    versions = {a["model_version"] for a in answers if a["chunk_index"] > 0}
    assert versions == {"swap@v1", "swap@v2"}
    assert swaps == 10


async def _load_and_swap(
    url: str, sessions: int, chunks: int, swaps: int
) -> tuple[list[dict[str, Any]], int]:
    limits = httpx.Limits(max_connections=sessions + 2)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        done = asyncio.Event()

        async def session(i: int) -> list[dict[str, Any]]:
            out = []
            for k in range(chunks):
                body: dict[str, Any] = {
                    "session_id": f"s{i}",
                    "chunk_index": k,
                    "buffer_s": (k * 1.7) % 30,
                }
                if k:
                    body.update(
                        last_quality=k % 6,
                        last_chunk_bytes=300_000 + 1000 * i,
                        last_chunk_download_s=0.5 + (i % 7) / 10,
                    )
                r = await client.post("/decide", json=body)
                answer = r.json() if r.status_code == 200 else {}
                out.append({**answer, "status": r.status_code, "chunk_index": k})
            return out

        async def swapper() -> int:
            n = 0
            while n < swaps:
                version = 1 + n % 2
                r = await client.post(
                    "/models/swap/activate", json={"version": version}, headers=auth()
                )
                assert r.status_code == 200, r.text
                n += 1
                await asyncio.sleep(0.02)
            done.set()
            return n

        gathered = await asyncio.gather(swapper(), *(session(i) for i in range(sessions)))
    return [a for part in gathered[1:] for a in part], gathered[0]
