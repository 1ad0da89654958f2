"""Checkpoints on disk, validated before they are stored, and the model serving each algorithm.

Layout under ``root``::

    <name>/v<version>.pt     the checkpoint exactly as uploaded
    <name>/v<version>.json   what we know about it (sha256, size, created, arch, meta)
    state.json               which (name, version) serves each learned algorithm, with history
    .incoming/               uploads being validated; emptied at start-up

Every file is written to a temporary name and renamed into place, so a crash mid-upload leaves
no half file where a reader would find it. A version is its pair of files: the ``.json`` goes
into place first and the ``.pt`` last, so a version is listed only once both are there; a half
pair (a crash between the two renames) is never listed and is removed at start-up. An uploaded checkpoint must load with
``weights_only=True``, match an architecture for the ladder, and give a finite output on a zero
observation (:func:`streambed.abr_service.policies.policy_from_checkpoint`) before it is stored.

Activation swaps one reference: a decision already running keeps the policy it read, the next
one reads the new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from streambed.abr_service.app.errors import (
    InvalidName,
    ModelRejected,
    ModelUnservable,
    NothingToRollBack,
    ServiceError,
    StorageFailed,
    UnknownModel,
)
from streambed.core.errors import ModelError
from streambed.core.fileio import atomic_write_bytes

if TYPE_CHECKING:  # torch is imported only when a model is loaded
    from streambed.abr_service.policies import LoadedPolicy

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_SLOT = "ppo"
MAX_INFO_BYTES = 1024 * 1024
"""A ``v<N>.json`` larger than this is not read (the metadata of an upload is bounded far
below it: :data:`streambed.abr_service.policies.MAX_META_JSON_BYTES`)."""


class ModelInfo(BaseModel):
    """What the store knows about one stored version (also the body ``GET /models`` lists)."""

    name: str
    version: int
    sha256: str
    size_bytes: int
    created: str
    """UTC time of the upload, ISO 8601."""
    arch: str
    num_levels: int
    obs_version: str
    source_format: str
    """pensieve-ppo ([actor, critic]), state-dict, or streambed-policy/1."""
    meta: dict[str, Any] = Field(default_factory=dict)
    """The training metadata the checkpoint carries."""

    @property
    def label(self) -> str:
        return f"{self.name}@v{self.version}"


@dataclass
class ActiveModel:
    info: ModelInfo
    policy: LoadedPolicy


def check_name(name: str, what: str = "model name") -> str:
    if not NAME_RE.match(name):
        raise InvalidName(
            f"{what} {name!r} is invalid: 1-64 characters of letters, digits, '.', '_', '-', "
            "starting with a letter or digit",
        )
    return name


class ModelStore:
    def __init__(self, root: Path, num_levels: int, reserved: set[str]) -> None:
        """``reserved``: algorithm names a learned model may not take (the classic ones)."""
        self.root = root
        self.num_levels = num_levels
        self.reserved = reserved
        self.active: dict[str, ActiveModel] = {}
        self.history: dict[str, list[tuple[str, int]]] = {}
        self._lock = threading.RLock()  # writers run in worker threads; readers need no lock
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(root / ".incoming", ignore_errors=True)
        self._remove_half_pairs()
        self._load_state()

    # --- reading ---------------------------------------------------------------------------

    def versions(self, name: str) -> list[ModelInfo]:
        directory = self.root / name
        infos = []
        for meta in sorted(directory.glob("v*.json")):
            try:
                size = meta.stat().st_size
                if size > MAX_INFO_BYTES:
                    raise ValueError(f"{size} bytes, more than the limit {MAX_INFO_BYTES}")
                info = ModelInfo(**json.loads(meta.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("skipping unreadable model metadata %s: %s", meta, exc)
                continue
            if meta.stem == f"v{info.version}" and meta.with_suffix(".pt").is_file():
                infos.append(info)
        return sorted(infos, key=lambda i: i.version)

    def list(self) -> list[ModelInfo]:
        out: list[ModelInfo] = []
        for directory in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if NAME_RE.match(directory.name):
                out.extend(self.versions(directory.name))
        return out

    def get(self, name: str, version: int | None = None) -> ModelInfo:
        check_name(name)
        versions = self.versions(name)
        if not versions:
            raise UnknownModel(f"no model named {name!r}")
        if version is None:
            return versions[-1]
        for info in versions:
            if info.version == version:
                return info
        known = ", ".join(str(i.version) for i in versions)
        raise UnknownModel(f"model {name!r} has no version {version}; versions: {known}")

    def path(self, info: ModelInfo) -> Path:
        return self.root / info.name / f"v{info.version}.pt"

    def active_labels(self) -> dict[str, str]:
        return {slot: a.info.label for slot, a in self.active.items()}

    # --- writing ---------------------------------------------------------------------------

    def put(self, name: str, data: bytes) -> tuple[ModelInfo, bool]:
        """Validate ``data`` and store it as the next version of ``name``; (info, created).

        Slow (it loads the checkpoint): the service runs it off the event loop. The same bytes
        uploaded again are the stored version, not a new one.
        """
        tmp, policy, sha256 = self._validate(name, data)
        return self._commit(name, tmp, policy, sha256, len(data))

    def _validate(self, name: str, data: bytes) -> tuple[Path, LoadedPolicy, str]:
        """Write the upload to a private temporary file and validate it."""
        check_name(name)
        if not data:
            raise ModelRejected("the upload is empty: send the checkpoint file as the body")
        incoming = self.root / ".incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        tmp = incoming / f"{uuid.uuid4().hex}.pt"
        atomic_write_bytes(tmp, data)
        from streambed.abr_service.policies import load_policy

        try:
            policy = load_policy(tmp, self.num_levels)
        except ModelError as exc:
            tmp.unlink(missing_ok=True)
            raise ModelRejected(str(exc).replace(str(tmp), f"upload {name!r}")) from exc
        return tmp, policy, hashlib.sha256(data).hexdigest()

    def _commit(
        self, name: str, tmp: Path, policy: LoadedPolicy, sha256: str, size: int
    ) -> tuple[ModelInfo, bool]:
        """Move a validated upload into place as the next version; (info, created)."""
        with self._lock:
            for info in self.versions(name):
                if info.sha256 == sha256:
                    tmp.unlink(missing_ok=True)
                    return info, False
            directory = self.root / name
            directory.mkdir(parents=True, exist_ok=True)
            taken = [int(p.stem[1:]) for p in directory.glob("v*.*") if p.stem[1:].isdigit()]
            version = max(taken, default=0) + 1
            info = ModelInfo(
                name=name,
                version=version,
                sha256=sha256,
                size_bytes=size,
                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                arch=policy.arch,
                num_levels=policy.num_levels,
                obs_version=policy.obs_version,
                source_format=policy.source_format,
                meta=_jsonable(policy.meta),
            )
            record = info.model_dump_json(indent=2).encode()
            meta_path, pt_path = directory / f"v{version}.json", directory / f"v{version}.pt"
            try:
                atomic_write_bytes(meta_path, record)
                os.replace(tmp, pt_path)  # last: the version exists from here on
            except OSError as exc:
                meta_path.unlink(missing_ok=True)
                tmp.unlink(missing_ok=True)
                raise StorageFailed(f"cannot store {info.label}: {exc.strerror}") from exc
            log.info("stored model %s (sha256 %s, %d bytes)", info.label, sha256[:12], size)
            return info, True

    def activate(self, name: str, version: int | None, slot: str) -> ActiveModel:
        with self._lock:
            check_name(slot, "algorithm name")
            if slot in self.reserved:
                raise InvalidName(
                    f"algorithm {slot!r} is a built-in classic algorithm; pick another name"
                )
            info = self.get(name, version)
            current = self.active.get(slot)
            if current is not None and current.info.label == info.label:
                return current
            new = ActiveModel(info, self._load(info))
            if current is not None:
                self.history.setdefault(slot, []).append((current.info.name, current.info.version))
            self.active = {**self.active, slot: new}  # the swap: one reference, copy on write
            self._save_state()
            log.info("algorithm %s now served by %s", slot, info.label)
            return new

    def rollback(self, name: str, slot: str | None) -> tuple[str, ActiveModel]:
        with self._lock:
            slots = [s for s, a in self.active.items() if a.info.name == name]
            if slot is not None:
                if slot not in slots:
                    raise NothingToRollBack(f"model {name!r} is not serving algorithm {slot!r}")
                slots = [slot]
            if not slots:
                raise NothingToRollBack(f"model {name!r} is not active for any algorithm")
            if len(slots) > 1:
                raise NothingToRollBack(
                    f"model {name!r} serves {', '.join(slots)}: name one with 'algorithm'"
                )
            target = slots[0]
            stack = self.history.get(target, [])
            while stack:
                prev_name, prev_version = stack.pop()
                try:
                    info = self.get(prev_name, prev_version)
                    new = ActiveModel(info, self._load(info))
                except (ServiceError, ModelError) as exc:
                    log.warning(
                        "rollback of %s skips %s@v%d: %s", target, prev_name, prev_version, exc
                    )
                    continue
                self.active = {**self.active, target: new}
                self._save_state()
                log.info("algorithm %s rolled back to %s", target, info.label)
                return target, new
            self._save_state()
            raise NothingToRollBack(f"algorithm {target!r} has no earlier model to roll back to")

    # --- persistence -----------------------------------------------------------------------

    def _remove_half_pairs(self) -> None:
        """Delete a ``.pt`` without its ``.json`` and the reverse (left by a crash mid-commit)."""
        for directory in (p for p in self.root.iterdir() if p.is_dir()):
            if not NAME_RE.match(directory.name):
                continue
            for path in list(directory.glob("v*.pt")) + list(directory.glob("v*.json")):
                other = path.with_suffix(".json" if path.suffix == ".pt" else ".pt")
                if path.stem[1:].isdigit() and not other.exists():
                    log.warning("removing %s: its %s is missing", path, other.name)
                    path.unlink(missing_ok=True)

    def _load(self, info: ModelInfo) -> LoadedPolicy:
        from streambed.abr_service.policies import load_policy

        try:
            return load_policy(self.path(info), self.num_levels)
        except ModelError as exc:
            raise ModelUnservable(f"{info.label} cannot be served: {exc}") from exc

    def _save_state(self) -> None:
        state = {
            "active": {s: [a.info.name, a.info.version] for s, a in self.active.items()},
            "history": {s: [list(h) for h in hist] for s, hist in self.history.items()},
        }
        atomic_write_bytes(self.root / "state.json", json.dumps(state, indent=2).encode())

    def _load_state(self) -> None:
        path = self.root / "state.json"
        if not path.is_file():
            return
        try:
            state = json.loads(path.read_text())
            active = dict(state.get("active", {}))
            self.history = {
                s: [(str(n), int(v)) for n, v in hist]
                for s, hist in dict(state.get("history", {})).items()
            }
        except (OSError, ValueError, TypeError) as exc:
            log.error("ignoring unreadable %s: %s", path, exc)
            return
        for slot, entry in active.items():
            try:
                name, version = entry
                info = self.get(str(name), int(version))
                self.active[slot] = ActiveModel(info, self._load(info))
                log.info("algorithm %s served by %s (restored)", slot, info.label)
            except (ServiceError, ValueError, TypeError) as exc:
                log.error("algorithm %s: cannot restore %r: %s", slot, entry, exc)


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint metadata as JSON can carry it (tensors and odd types become strings)."""
    try:
        return dict(json.loads(json.dumps(meta, default=str)))
    except (TypeError, ValueError):
        return {"unreadable": True}
