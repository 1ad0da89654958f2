"""One discovery for every plug-in group (``streambed.abr_service.plugins``): a plug-in that
fails to import, or that reuses a taken name, is skipped with the same warning and kept in the
same error listing, whether it is an algorithm, an observation or a policy architecture."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from plugin_helpers import fake_distribution

from streambed.abr_service import architectures, observation
from streambed.abr_service.algorithms import registry

MODULE = "sb_disc_missing"  # never importable
Listing = Callable[[], dict[str, object]]
# group -> (logger, the registry's listing, its error listing, the kind, a built-in's name and
# what it points at: a second registration of that built-in clashes)
GROUPS: dict[str, tuple[str, Listing, Callable[[], dict[str, str]], str, str, str]] = {
    "streambed.algorithms": (
        registry.__name__,
        registry.available_algorithms,
        registry.load_errors,
        "algorithm",
        "bba",
        "streambed.abr_service.algorithms.buffer_based:BBA",
    ),
    "streambed.observations": (
        observation.__name__,
        observation.observations,
        observation.load_errors,
        "observation",
        "pensieve-6x8/1",
        "streambed.abr_service.observation:PensieveObservation",
    ),
    "streambed.policies": (
        architectures.__name__,
        architectures.architectures,
        architectures.load_errors,
        "policy architecture",
        "pensieve",
        "streambed.abr_service.architectures:PensieveArchitecture",
    ),
}


def _clear() -> None:
    registry.clear_cache()
    observation.clear_cache()
    architectures.clear_cache()


@pytest.fixture
def broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In every group: ``gone`` names a missing module; a built-in is registered again."""
    entries = {
        group: {"gone": f"{MODULE}:Thing", builtin: target}
        for group, (*_, builtin, target) in GROUPS.items()
    }
    fake_distribution(tmp_path / "site", "sb-disc", "1.0", entries)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    _clear()
    yield
    _clear()
    sys.modules.pop(MODULE, None)


@pytest.mark.parametrize("group", list(GROUPS))
def test_broken_plugin_skipped_alike(
    broken: None, group: str, caplog: pytest.LogCaptureFixture
) -> None:
    logger, listing, load_errors, kind, builtin, target = GROUPS[group]
    with caplog.at_level(logging.WARNING, logger=logger):
        known = listing()
    assert "gone" not in known and builtin in known  # the built-in kept, nothing broke
    assert getattr(known[builtin], "source", "built-in") == "built-in"
    errors = load_errors()
    assert set(errors) == {"gone", builtin}
    assert errors["gone"].endswith(f"ModuleNotFoundError: No module named '{MODULE}'")
    assert "taken" in errors[builtin] or "clashes" in errors[builtin]
    warned = [r.getMessage() for r in caplog.records if r.name == logger]
    assert f"{kind} plug-in 'gone' ({MODULE}:Thing) skipped: {errors['gone']}" in warned
    assert f"{kind} plug-in {builtin!r} ({target}) skipped: {errors[builtin]}" in warned
    # Discovered once: no second round of warnings, the same listing.
    caplog.clear()
    listing()
    assert load_errors() == errors
    assert not [r for r in caplog.records if r.name == logger]
