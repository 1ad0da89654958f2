"""Hostile checkpoints: zip bombs, metadata bombs, half-stored versions (issue 17)."""

from __future__ import annotations

import collections
import io
import pickle
import resource
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from service_helpers import TOKEN, auth, checkpoint_bytes, running_service

from streambed.abr_service.app.models_store import ModelStore
from streambed.abr_service.architectures import PensievePPOActor
from streambed.abr_service.checkpoint import (
    CHECKPOINT_FORMAT,
    MAX_META_DEPTH,
    MAX_META_ITEMS,
    MAX_META_JSON_BYTES,
)
from streambed.abr_service.observation import OBS_VERSION
from streambed.abr_service.policies import load_policy
from streambed.core.errors import ModelError
from streambed.core.servers import free_port, wait_healthy

# ------------------------------------------------------------------------------------------
# Building hostile files


class _Storage:
    """Stands for a storage record of the archive in a hand-made ``data.pkl``."""

    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, storage: _Storage, shape: tuple[int, ...]) -> None:
        self.storage, self.shape = storage, shape

    def __reduce__(self) -> tuple[Any, ...]:
        stride = [1] * len(self.shape)
        for i in range(len(self.shape) - 2, -1, -1):
            stride[i] = stride[i + 1] * self.shape[i + 1]
        args = (self.storage, 0, self.shape, tuple(stride), False, collections.OrderedDict())
        return (torch._utils._rebuild_tensor_v2, args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:  # torch's own layout of a storage reference
        if isinstance(obj, _Storage):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None


def zip_bomb(numel: int) -> bytes:
    """A bare state dict whose one tensor of ``numel`` float32 zeros is deflate-compressed:
    about 4.5 MB on disk per GB of tensor (torch.save writes stored entries; torch reads
    deflated ones too)."""
    pkl = io.BytesIO()
    _Pickler(pkl, protocol=2).dump({"fc4_actor.weight": _Tensor(_Storage("0", numel), (numel,))})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("archive/data.pkl", pkl.getvalue())
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
        with zf.open("archive/data/0", "w", force_zip64=True) as fh:
            chunk, left = bytes(1 << 24), numel * 4
            while left:
                fh.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
    return out.getvalue()


def deflated(data: bytes) -> bytes:
    """The same checkpoint with every entry deflate-compressed."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), zipfile.ZIP_DEFLATED)
    return out.getvalue()


def with_meta(meta: Any, **fields: Any) -> bytes:
    data = {
        "format": CHECKPOINT_FORMAT,
        "arch": "pensieve-ppo",
        "num_levels": 6,
        "obs_version": OBS_VERSION,
        "actor": PensievePPOActor(6).state_dict(),
        "meta": meta,
        **fields,
    }
    buffer = io.BytesIO()
    torch.save(data, buffer)
    return buffer.getvalue()


def shared_lists(depth: int, width: int = 100) -> list[Any]:
    """``[[...[0]*width...]*width]``: ``width**depth`` zeros as JSON, a few KB pickled."""
    value: list[Any] = [0] * width
    for _ in range(depth - 1):
        value = [value] * width
    return value


# ------------------------------------------------------------------------------------------
# The one reader


def test_zip_bomb_is_refused_before_loading(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pt"
    path.write_bytes(zip_bomb(25_000_000))  # 100 MB inflated
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ModelError) as info:
        load_policy(path, 6)
    message = str(info.value)
    assert str(path) in message and "declares 1000000" in message and "of tensor data" in message
    assert "limit" in message and "\n" not in message


def test_deflated_checkpoint_within_bounds_loads(tmp_path: Path) -> None:
    path = tmp_path / "zipped.pt"
    path.write_bytes(deflated(checkpoint_bytes(seed=3)))
    assert load_policy(path, 6).meta == {"trainer": "test", "seed": 3}


def test_file_larger_than_any_policy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.pt"
    state = PensievePPOActor(6).state_dict()
    state["extra"] = torch.zeros(3_000_000)  # stored: 12 MB on disk
    torch.save(state, path)
    with pytest.raises(ModelError, match=r"huge.pt: \d+ bytes, more than the limit of \d+ for a"):
        load_policy(path, 6)


def test_large_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.pt"
    path.write_bytes(deflated(with_meta({"note": "x" * 2_000_000})))
    with pytest.raises(ModelError, match=r"data\.pkl'? declares \d+ bytes, more than the limit"):
        load_policy(path, 6)


@pytest.mark.parametrize(
    ("meta", "limit"),
    [
        ({"bomb": shared_lists(4)}, f"more than {MAX_META_ITEMS} items"),
        ({"a": shared_lists(MAX_META_DEPTH + 1, width=1)}, f"deeper than {MAX_META_DEPTH}"),
        ({"note": "x" * (MAX_META_JSON_BYTES + 10)}, f"larger than {MAX_META_JSON_BYTES} bytes"),
        ([1, 2], "meta is a list, not a mapping"),
    ],
)
def test_metadata_bombs_are_refused(tmp_path: Path, meta: Any, limit: str) -> None:
    path = tmp_path / "meta.pt"
    path.write_bytes(with_meta(meta))
    with pytest.raises(ModelError) as info:
        load_policy(path, 6)
    assert limit in str(info.value) and str(path) in str(info.value)


def test_architecture_name_must_be_a_string(tmp_path: Path) -> None:
    path = tmp_path / "arch.pt"
    path.write_bytes(with_meta({}, arch=shared_lists(3)))  # its str() is megabytes
    with pytest.raises(ModelError, match="arch is a list, not an architecture name"):
        load_policy(path, 6)


def test_tensor_shape_mismatch_names_the_tensor(tmp_path: Path) -> None:
    state = PensievePPOActor(6).state_dict()
    state["fc4_actor.weight"] = torch.zeros(128, 700)
    path = tmp_path / "shape.pt"
    torch.save(state, path)
    with pytest.raises(ModelError, match=r"fc4_actor.weight has shape \(128, 700\), expected"):
        load_policy(path, 6)


# ------------------------------------------------------------------------------------------
# The model store


def test_half_pairs_are_never_listed_and_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "models"
    store = ModelStore(root, 6, set())
    info, _ = store.put("m", checkpoint_bytes(seed=1))
    (root / "m" / "v7.pt").write_bytes(b"orphan")
    (root / "m" / "v8.json").write_text((root / "m" / "v1.json").read_text())
    assert [i.version for i in store.list()] == [1]
    huge = root / "m" / "v9.json"
    huge.write_bytes(b" " * (2 * 1024 * 1024))  # an old, oversized record is not read
    (root / "m" / "v9.pt").write_bytes(b"x")
    assert [i.version for i in store.list()] == [1]
    ModelStore(root, 6, set())  # start-up
    assert sorted(p.name for p in (root / "m").iterdir()) == [
        "v1.json",
        "v1.pt",
        "v9.json",
        "v9.pt",
    ]
    assert info.version == 1


def test_listing_does_not_block_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    original = ModelStore.list

    def slow_list(self: ModelStore) -> Any:
        entered.set()
        release.wait(30)
        return original(self)

    monkeypatch.setattr(ModelStore, "list", slow_list)
    with running_service(tmp_path) as url:
        result: dict[str, int] = {}

        def listing() -> None:
            result["status"] = httpx.get(f"{url}/models", timeout=60).status_code

        thread = threading.Thread(target=listing)
        thread.start()
        try:
            assert entered.wait(30)
            # the listing is still running: /healthz answers all the same
            assert httpx.get(f"{url}/healthz", timeout=20).status_code == 200
        finally:
            release.set()
            thread.join(60)
        assert result == {"status": 200}


def test_meta_bomb_upload_is_a_4xx_and_leaves_nothing(tmp_path: Path) -> None:
    with running_service(tmp_path) as url, httpx.Client(base_url=url, timeout=60) as client:
        for bomb in (shared_lists(4), shared_lists(22, width=2)):
            r = client.put("/models/bomb", content=with_meta({"b": bomb}), headers=auth())
            assert r.status_code == 422, r.text
            assert "meta" in r.json()["detail"] and "limit" in r.json()["detail"]
        assert client.get("/models").json()["models"] == []
        assert client.get("/healthz").status_code == 200
        r = client.put("/models/fine", content=checkpoint_bytes(), headers=auth())
        assert r.status_code == 201, r.text
    files = sorted(p.name for p in (tmp_path / "models").rglob("v*"))
    assert files == ["v1.json", "v1.pt"]


# ------------------------------------------------------------------------------------------
# A real `streambed serve` under a memory limit


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _limit_memory() -> None:
    limit = 3 * 1024**3  # address space; the service needs about 1 GiB of it
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_zip_bomb_upload_keeps_service_memory_bounded(tmp_path: Path) -> None:
    bomb = zip_bomb(250_000_000)  # 953 MiB of float32 zeros
    port = free_port()
    (tmp_path / "token").write_text(TOKEN + "\n")
    cmd = [sys.executable, "-m", "streambed.cli", "serve", "--port", str(port)]
    cmd += ["--models-dir", str(tmp_path / "models"), "--token-file", str(tmp_path / "token")]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_limit_memory,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_healthy(url, proc) is None, "serve did not start"
        with httpx.Client(base_url=url, timeout=120) as client:
            # warm up: torch and the architectures are loaded before the baseline
            assert client.put("/models/ok", content=checkpoint_bytes(), headers=auth()).is_success
            before = _status(proc.pid)["VmHWM"]
            r = client.put("/models/bomb", content=bomb, headers=auth())
            grown = _status(proc.pid)["VmHWM"] - before
            assert grown < 100 * 1024 * 1024, f"peak RSS grew by {grown / 2**20:.0f} MiB"
            assert r.status_code == 422, r.text
            assert "bytes of tensor data" in r.json()["detail"]
            assert "upload 'bomb'" in r.json()["detail"]
            assert client.get("/healthz").status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
