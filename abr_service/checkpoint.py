"""The checkpoint format: the one module that writes and reads Streambed's checkpoints.

A policy checkpoint (``best.pt``, ``final.pt``, an upload to the service) is a torch zip of
``{"format": "streambed-policy/1", "arch": ..., "num_levels": ..., "obs_version": ...,
"actor": state_dict, "meta": {...}}`` (:func:`policy_checkpoint` writes it,
:func:`policy_contents` reads it, and also Pensieve-PPO's ``[actor, critic]`` state dicts and a
bare actor state dict). A training state (a run's ``last.pt``) is ``{"format":
"streambed-train-state/1", ...}`` (:func:`train_state`, :func:`read_train_state`).

Checkpoints are untrusted (uploads, downloads, damaged files): :func:`read_checkpoint` is the
one reader, and before ``torch.load`` (``weights_only=True``) it checks the zip's declared
(uncompressed) sizes against the caller's bound, so a small file that inflates to gigabytes is
refused before anything is allocated. The metadata is bounded too (:func:`bounded_meta`): a
pickle's shared references make a tiny file expand to a huge JSON. Building and checking the
actor is :mod:`streambed.abr_service.policies`'.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from streambed.abr_service.observation import OBS_VERSION
from streambed.core.errors import ModelError
from streambed.core.fileio import atomic_write_bytes

CHECKPOINT_FORMAT = "streambed-policy/1"
TRAIN_STATE_FORMAT = "streambed-train-state/1"

MAX_PICKLE_BYTES = 1024 * 1024
"""The largest ``data.pkl`` (the pickled structure, without tensor data) a policy may have."""
MAX_TRAIN_STATE_PICKLE_BYTES = 16 * 1024 * 1024
"""The same for a training state (its optimizer and generator states add structure)."""
MAX_ENTRIES = 1024
"""The most entries a checkpoint's zip may hold."""
ENTRY_OVERHEAD_BYTES = 512
"""Zip headers and torch's alignment padding per entry, allowed beyond the declared contents."""
MAX_META_JSON_BYTES = 64 * 1024
"""The largest JSON encoding of a checkpoint's ``meta`` (a real run's is about 1.5 KiB)."""
MAX_META_DEPTH = 8
MAX_META_ITEMS = 10_000


def short(value: object, limit: int = 80) -> str:
    """``repr`` of a str or a scalar, cut to ``limit`` characters, for error messages (never
    of a container: a pickle's shared references can make that endless)."""
    scalar = value is None or isinstance(value, str | bool | float)
    if scalar or (isinstance(value, int) and value.bit_length() <= 64):
        text = repr(value)
    else:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_archive(
    path: Path, max_data_bytes: int, max_pickle_bytes: int = MAX_PICKLE_BYTES
) -> None:
    """Refuse a checkpoint whose zip declares more than the bounds, before anything is loaded.

    ``data.pkl`` (the pickle) may declare at most ``max_pickle_bytes`` uncompressed, every other
    entry together (the tensor storages) at most ``max_data_bytes``. torch allocates each
    record at its declared size and fails if the contents differ, so this bounds memory.
    """
    # a file larger than its contents could declare is refused before its directory is parsed
    largest = max_data_bytes + max_pickle_bytes + MAX_ENTRIES * ENTRY_OVERHEAD_BYTES
    size = path.stat().st_size
    if size > largest:
        raise ModelError(f"{path}: {size} bytes, more than the limit of {largest} for a checkpoint")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ModelError(
            f"{path}: not a loadable checkpoint (not a torch zip file: {exc})"
        ) from exc
    if len(entries) > MAX_ENTRIES:
        raise ModelError(f"{path}: {len(entries)} zip entries, more than the limit {MAX_ENTRIES}")
    data = 0
    for entry in entries:
        if entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelError(
                f"{path}: zip entry {short(entry.filename)} uses compression method "
                f"{entry.compress_type}; torch.save writes stored entries"
            )
        if entry.filename.endswith("/data.pkl") or entry.filename == "data.pkl":
            if entry.file_size > max_pickle_bytes:
                raise ModelError(
                    f"{path}: {short(entry.filename)} declares {entry.file_size} bytes, more "
                    f"than the limit of {max_pickle_bytes} for a checkpoint's pickle"
                )
        else:
            data += entry.file_size
    if data > max_data_bytes:
        raise ModelError(
            f"{path}: declares {data} bytes of tensor data uncompressed, more than the limit "
            f"of {max_data_bytes}"
        )


def read_checkpoint(
    path: str | Path, max_data_bytes: int, max_pickle_bytes: int = MAX_PICKLE_BYTES
) -> Any:
    """The one checkpoint reader: the archive's bounds (:func:`check_archive`), then
    ``torch.load`` with ``weights_only=True``; every failure becomes a one-line ModelError.

    ``max_data_bytes`` bounds the tensor data
    (:func:`streambed.abr_service.policies.policy_data_limit` for a policy; a training state
    has its own bound).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint file")
    check_archive(path, max_data_bytes, max_pickle_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's notes on odd pickles
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # untrusted bytes: torch raises many kinds on junk
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a loadable checkpoint ({first[:200]})") from exc


class _MetaBudget:
    def __init__(self, where: str) -> None:
        self.where = where
        self.items = 0
        self.bytes = 0

    def take(self, items: int, size: int) -> None:
        self.items += items
        self.bytes += size
        if self.items > MAX_META_ITEMS:
            raise ModelError(
                f"{self.where}: meta has more than {MAX_META_ITEMS} items (the limit), counting "
                "each repeated reference"
            )
        if self.bytes > MAX_META_JSON_BYTES:
            raise ModelError(
                f"{self.where}: meta is larger than {MAX_META_JSON_BYTES} bytes as JSON (the limit)"
            )


def _plain(value: Any, depth: int, budget: _MetaBudget) -> Any:
    """``value`` as JSON can carry it, charged to ``budget`` as it is built (never expanded
    beyond the limits: a shared list is charged at every place it appears)."""
    if isinstance(value, dict | list | tuple | set | frozenset):
        if depth >= MAX_META_DEPTH:
            raise ModelError(
                f"{budget.where}: meta is nested deeper than {MAX_META_DEPTH} levels (the limit)"
            )
        budget.take(1, 2)
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if isinstance(key, str):
                    name = key
                elif key is None or isinstance(key, bool):
                    name = json.dumps(key)  # as json.dumps writes such keys
                elif isinstance(key, float) or (isinstance(key, int) and key.bit_length() <= 128):
                    name = str(key)
                else:
                    raise ModelError(f"{budget.where}: meta has a key of type {type(key).__name__}")
                budget.take(0, len(name) + 4)
                out[name] = _plain(item, depth + 1, budget)
            return out
        return [_plain(item, depth + 1, budget) for item in value]
    if isinstance(value, bool) or value is None:
        budget.take(1, 5)
        return value
    if isinstance(value, int):
        if value.bit_length() > 128:
            raise ModelError(f"{budget.where}: meta holds an integer of {value.bit_length()} bits")
        budget.take(1, len(str(value)) + 2)
        return value
    if isinstance(value, float):
        budget.take(1, len(repr(value)) + 2)
        return value
    if isinstance(value, torch.Tensor) and value.numel() > 16:
        value = f"tensor of shape {tuple(value.shape)}"
    elif not isinstance(value, str):
        value = str(value)  # small tensors, dtypes, sizes: their text
    budget.take(1, len(value) + 2)
    return value


def bounded_meta(meta: Any, where: str) -> dict[str, Any]:
    """A checkpoint's ``meta`` as plain JSON data, or a ModelError naming the limit it exceeds
    (:data:`MAX_META_JSON_BYTES`, :data:`MAX_META_DEPTH`, :data:`MAX_META_ITEMS`)."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise ModelError(f"{where}: meta is a {type(meta).__name__}, not a mapping")
    plain = _plain(meta, 0, _MetaBudget(where))
    size = len(json.dumps(plain))  # exact now that it is known to be small
    if size > MAX_META_JSON_BYTES:
        raise ModelError(
            f"{where}: meta is {size} bytes as JSON, more than the limit {MAX_META_JSON_BYTES}"
        )
    return dict(plain)


# ------------------------------------------------------------------------------------------
# Policy checkpoints


def weights_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """A digest of a state dict's names and values (a checkpoint's ``meta.weights_sha256``)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def policy_checkpoint(
    actor_state: Mapping[str, torch.Tensor],
    arch: str,
    obs_version: str,
    num_levels: int,
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    """A self-describing policy checkpoint (the service and ``streambed eval`` load it); its meta
    gains the weights' digest and the time of writing, unless ``meta`` gives them."""
    state = {k: v.detach().cpu().clone() for k, v in actor_state.items()}
    return {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "num_levels": num_levels,
        "obs_version": obs_version,
        "actor": state,
        "meta": {
            "weights_sha256": weights_sha256(state),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **meta,
        },
    }


@dataclass(frozen=True)
class PolicyContents:
    """What a loaded policy checkpoint holds, whichever layout it came in (not yet checked
    against an architecture: :func:`streambed.abr_service.policies.policy_from_checkpoint`)."""

    arch: str
    obs_version: Any
    """Any value from the file: the caller checks it is a registered observation."""
    state: Any
    """The actor's weights as loaded: the caller checks it is a state dict of tensors."""
    meta: dict[str, Any]
    source_format: str


def policy_contents(data: Any, where: str) -> PolicyContents:
    """The parts of a policy checkpoint ``torch.load`` returned, in any accepted layout
    (Streambed's, Pensieve-PPO's ``[actor, critic]``, a bare actor state dict), or a ModelError
    naming ``where``. The first two are always ``pensieve-ppo`` over ``pensieve-6x8/1``."""
    if isinstance(data, list | tuple) and data and isinstance(data[0], dict):
        return PolicyContents("pensieve-ppo", OBS_VERSION, data[0], {}, "pensieve-ppo")
    if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
        arch = data.get("arch", "pensieve-ppo")
        if not isinstance(arch, str):
            raise ModelError(f"{where}: arch is a {type(arch).__name__}, not an architecture name")
        return PolicyContents(
            arch,
            data.get("obs_version", OBS_VERSION),
            data.get("actor"),
            bounded_meta(data.get("meta"), where),
            CHECKPOINT_FORMAT,
        )
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return PolicyContents("pensieve-ppo", OBS_VERSION, data, {}, "state-dict")
    raise ModelError(
        f"{where}: not a policy checkpoint (expected a state dict, "
        "[actor, critic] state dicts, or a Streambed checkpoint)"
    )


def save_checkpoint(obj: Any, path: Path) -> bytes:
    """``torch.save`` written atomically: readers never see half a checkpoint. Returns the bytes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return data


# ------------------------------------------------------------------------------------------
# Training states (last.pt)


def train_state(
    *,
    algorithm: str,
    modules: Mapping[str, Any],
    collectors: list[Any],
    extra: Mapping[str, Any],
    torch_rngs: list[torch.Tensor],
    iteration: int,
    elapsed_s: float,
    best_val: float,
    policy: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything ``--resume`` restores: the state dicts of ``modules`` (networks and
    optimizers), every worker's sessions and generator, the algorithm's ``extra`` state, the
    loop's counters, and the actor as a policy checkpoint."""
    return {
        "format": TRAIN_STATE_FORMAT,
        "algorithm": algorithm,
        "modules": {k: m.state_dict() for k, m in modules.items()},
        "collectors": collectors,
        "extra": dict(extra),
        "torch_rngs": torch_rngs,
        "iteration": iteration,
        "elapsed_s": elapsed_s,
        "best_val": best_val,
        "policy": dict(policy),
    }


def read_train_state(
    path: Path, max_data_bytes: int, algorithm: str | None = None
) -> dict[str, Any]:
    """The training state in ``path``, read by :func:`read_checkpoint` with ``max_data_bytes``
    of tensor data at most; a one-line ModelError naming the file if it is not one (or is the
    state of another ``algorithm``)."""
    if not path.is_file():
        raise ModelError(f"{path}: no such file: the run saved no state to resume from yet")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: cannot resume from it: the file is empty")
    try:
        state = read_checkpoint(path, max_data_bytes, MAX_TRAIN_STATE_PICKLE_BYTES)
    except ModelError as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        raise ModelError(f"{path}: cannot resume from it: {reason}") from None
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise ModelError(f"{path}: not a Streambed training state ({TRAIN_STATE_FORMAT})")
    saved = state.get("algorithm")
    if algorithm is not None and saved != algorithm:
        name = saved if isinstance(saved, str) and len(saved) <= 40 else short(saved)
        raise ModelError(
            f"{path}: the state of a {name} run, not {algorithm}; "
            f"resume it with streambed train {name}"
        )
    return state
