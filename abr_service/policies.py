"""Policy networks over the Pensieve observation, and checkpoint loading (any observation).

The Pensieve-PPO network: one 128-unit branch per observation row (Linear over the newest
value of rows 0, 1 and 5; Linear over the 8-chunk history of rows 2 and 3; Linear over the
next-chunk sizes of row 4), concatenated, a 128-unit layer, then the head: ``pi_head``
(logits over levels) for the actor, ``val_head`` for the critic. Layer names follow
Pensieve-PPO's so its public checkpoints load as they are.

Checkpoints load with ``torch.load(weights_only=True)``. Accepted layouts:

* Pensieve-PPO's ``[actor_state_dict, critic_state_dict]``;
* a bare actor state dict;
* Streambed's ``{"format": "streambed-policy/1", "arch": ..., "num_levels": ...,
  "obs_version": ..., "actor": state_dict, "meta": {...}}``, where ``arch`` is any
  architecture of :func:`streambed.abr_service.architectures.architectures` (built-in or plug-in) and
  ``obs_version`` any registered observation (:func:`streambed.abr_service.observation.observations`;
  absent: ``pensieve-6x8/1``) that the architecture reads.

The first two are always ``pensieve-ppo`` over ``pensieve-6x8/1``. The loaded actor is checked
on a zero observation of its observation's shape.

Checkpoints are untrusted (uploads, downloads): :func:`read_checkpoint` is the one reader, and
before ``torch.load`` it checks the zip's declared (uncompressed) sizes, so a small file that
inflates to gigabytes is refused before anything is allocated; :func:`load_policy` bounds the
tensor data by what the registered architectures need for the ladder. The metadata is bounded
too (:func:`bounded_meta`): a pickle's shared references make a tiny file expand to a huge JSON.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from streambed.abr_service.architectures import architectures
from streambed.abr_service.observation import OBS_VERSION, S_INFO, S_LEN, observations
from streambed.core.errors import ModelError

CHECKPOINT_FORMAT = "streambed-policy/1"
FEATURES = 128

MAX_PICKLE_BYTES = 1024 * 1024
"""The largest ``data.pkl`` (the pickled structure, without tensor data) a policy may have."""
MAX_ENTRIES = 1024
"""The most entries a checkpoint's zip may hold."""
ENTRY_OVERHEAD_BYTES = 512
"""Zip headers and torch's alignment padding per entry, allowed beyond the declared contents."""
DATA_SLACK_BYTES = 256 * 1024
"""Tensor data allowed beyond the architectures' own (small extra tensors, alignment)."""
MAX_META_JSON_BYTES = 64 * 1024
"""The largest JSON encoding of a checkpoint's ``meta`` (a real run's is about 1.5 KiB)."""
MAX_META_DEPTH = 8
MAX_META_ITEMS = 10_000


class PensievePPONet(nn.Module):
    """Pensieve-PPO's trunk with one linear head named ``head_name``."""

    def __init__(self, num_levels: int, out_dim: int, head_name: str) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.fc1_actor = nn.Linear(1, FEATURES)
        self.fc2_actor = nn.Linear(1, FEATURES)
        self.conv1_actor = nn.Linear(S_LEN, FEATURES)
        self.conv2_actor = nn.Linear(S_LEN, FEATURES)
        self.conv3_actor = nn.Linear(num_levels, FEATURES)
        self.fc3_actor = nn.Linear(1, FEATURES)
        self.fc4_actor = nn.Linear(FEATURES * S_INFO, FEATURES)
        self._head_name = head_name
        self.add_module(head_name, nn.Linear(FEATURES, out_dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        merged = torch.cat(
            [
                F.relu(self.fc1_actor(obs[:, 0:1, -1])),
                F.relu(self.fc2_actor(obs[:, 1:2, -1])),
                F.relu(self.conv1_actor(obs[:, 2, :])),
                F.relu(self.conv2_actor(obs[:, 3, :])),
                F.relu(self.conv3_actor(obs[:, 4, : self.num_levels])),
                F.relu(self.fc3_actor(obs[:, 5:6, -1])),
            ],
            dim=1,
        )
        hidden = F.relu(self.fc4_actor(merged))
        head: nn.Module = getattr(self, self._head_name)
        return head(hidden)


class PensievePPOActor(PensievePPONet):
    """Logits over the ladder's levels."""

    def __init__(self, num_levels: int) -> None:
        super().__init__(num_levels, num_levels, "pi_head")


class PensievePPOCritic(PensievePPONet):
    """State value."""

    def __init__(self, num_levels: int) -> None:
        super().__init__(num_levels, 1, "val_head")


@dataclass
class LoadedPolicy:
    """An actor ready for inference, with what its checkpoint said about itself."""

    actor: nn.Module
    arch: str
    num_levels: int
    meta: dict[str, Any] = field(default_factory=dict)
    source_format: str = CHECKPOINT_FORMAT
    obs_version: str = OBS_VERSION
    """The observation the actor reads (:mod:`streambed.abr_service.observation`)."""


def _short(value: object, limit: int = 80) -> str:
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
                f"{path}: zip entry {_short(entry.filename)} uses compression method "
                f"{entry.compress_type}; torch.save writes stored entries"
            )
        if entry.filename.endswith("/data.pkl") or entry.filename == "data.pkl":
            if entry.file_size > max_pickle_bytes:
                raise ModelError(
                    f"{path}: {_short(entry.filename)} declares {entry.file_size} bytes, more "
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

    ``max_data_bytes`` bounds the tensor data (:func:`policy_data_limit` for a policy); other
    callers (a training state) give their own bound.
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


def _module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def policy_data_limit(num_levels: int) -> int:
    """The most tensor data a policy checkpoint for ``num_levels`` levels may declare.

    The largest actor plus critic of any registered architecture, twice over (float64 weights
    load too), plus :data:`DATA_SLACK_BYTES`; Pensieve-PPO's ``[actor, critic]`` holds both.
    """
    largest = 0
    for arch in architectures().values():
        try:
            size = _module_bytes(arch.actor(num_levels)) + _module_bytes(arch.critic(num_levels))
        except Exception:  # a plug-in that cannot build for this ladder bounds nothing
            continue
        largest = max(largest, size)
    return 2 * largest + DATA_SLACK_BYTES


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


def policy_from_checkpoint(data: Any, num_levels: int, where: str) -> LoadedPolicy:
    """Validate a loaded checkpoint against the ladder and build its actor."""
    arch, fmt, version = "pensieve-ppo", CHECKPOINT_FORMAT, OBS_VERSION
    meta: dict[str, Any] = {}
    state: Any
    if isinstance(data, list | tuple) and data and isinstance(data[0], dict):
        state, fmt = data[0], "pensieve-ppo"
    elif isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
        arch = data.get("arch", "pensieve-ppo")
        if not isinstance(arch, str):
            raise ModelError(f"{where}: arch is a {type(arch).__name__}, not an architecture name")
        version = data.get("obs_version", OBS_VERSION)
        state = data.get("actor")
        meta = bounded_meta(data.get("meta"), where)
    elif (
        isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values())
    ):
        state, fmt = data, "state-dict"
    else:
        raise ModelError(
            f"{where}: not a policy checkpoint (expected a state dict, "
            "[actor, critic] state dicts, or a Streambed checkpoint)"
        )
    readable = observations()  # built-ins and plug-ins (abr_service.observation)
    if not isinstance(version, str) or version not in readable:
        raise ModelError(
            f"{where}: unknown observation version {_short(version)}; known: {', '.join(readable)}"
        )
    observation = readable[version]
    known = architectures()  # built-ins and plug-ins (abr_service.architectures)
    if arch not in known:
        raise ModelError(f"{where}: unknown architecture {_short(arch)}; known: {', '.join(known)}")
    reads = getattr(known[arch], "obs_version", OBS_VERSION)
    if reads != version:
        raise ModelError(
            f"{where}: the checkpoint's observation is {version!r}, but the {arch} architecture "
            f"reads {reads!r}"
        )
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelError(f"{where}: the actor weights are not a state dict of tensors")
    try:
        actor = known[arch].actor(num_levels)
    except Exception as exc:  # a plug-in's constructor: report it, never crash the caller
        raise ModelError(
            f"{where}: cannot build the {arch} actor for {num_levels} levels ({exc})"
        ) from exc
    expected = actor.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = [
        k if len(k) <= 60 else k[:57] + "..." for k in sorted(set(state) - set(expected))[:10]
    ]
    if missing or unexpected:
        raise ModelError(
            f"{where}: weights do not match the {arch} architecture "
            f"(missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(unexpected) or 'none'})"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ModelError(
                f"{where}: {key} has shape {tuple(state[key].shape)}, expected "
                f"{tuple(tensor.shape)} for a {num_levels}-level ladder"
            )
    actor.load_state_dict(state)
    actor.eval()
    try:
        with torch.no_grad():
            out = actor(torch.zeros(1, *observation.shape))
    except Exception as exc:  # a plug-in's forward
        raise ModelError(f"{where}: the {arch} actor fails on a zero observation ({exc})") from exc
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (1, num_levels):
        raise ModelError(f"{where}: the {arch} actor gives {shape}, expected (1, {num_levels})")
    if not torch.isfinite(out).all():
        raise ModelError(f"{where}: the network's output on a zero observation is not finite")
    return LoadedPolicy(actor, arch, num_levels, meta, fmt, observation.version)


def load_policy(path: str | Path, num_levels: int) -> LoadedPolicy:
    """Load and validate a policy checkpoint for a ladder of ``num_levels`` (memory bounded by
    :func:`policy_data_limit`)."""
    data = read_checkpoint(path, policy_data_limit(num_levels))
    return policy_from_checkpoint(data, num_levels, str(path))
