"""The trainer against careless and hostile input: damaged resume state, out-of-range flags,
a run directory that already holds a run, and what resuming leaves in the run log."""

from __future__ import annotations

import csv
import math
import re
import shutil
import zipfile
from dataclasses import fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch
from test_trainer import DATA

from streambed.abr_service.checkpoint import TRAIN_STATE_FORMAT
from streambed.cli import main
from streambed.core.errors import ConfigError
from streambed.trainer.a3c import A3CArgs
from streambed.trainer.args import Bound, CommonArgs, check_args
from streambed.trainer.dqn import DQNArgs
from streambed.trainer.imitate import ImitateArgs
from streambed.trainer.loop import progress_postfix, train_loop
from streambed.trainer.ppo import PPO, PPOArgs

TINY = ["--steps", "300", "--num-envs", "8", "--val-every", "1", "--no-progress"]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line the CLI printed (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "ppo", "--out", str(out), *TINY]) == 0
    return out


def _zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _not_a_zip(path: Path) -> None:
    path.write_text("this is not a checkpoint\n")


def _not_weights_only(path: Path) -> None:
    torch.save({"format": TRAIN_STATE_FORMAT, "algorithm": "ppo", "x": Fraction(1, 3)}, path)


def _wrong_keys(path: Path) -> None:
    torch.save({"format": TRAIN_STATE_FORMAT, "algorithm": "ppo", "iteration": 1}, path)


def _wrong_shapes(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    actor = state["modules"]["actor"]
    first = next(iter(actor))
    actor[first] = torch.zeros(3, 3)
    torch.save(state, path)


def _wrong_sessions(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["collectors"][0]["sim"]["tau"] = torch.zeros(5)
    torch.save(state, path)


def _another_algorithm(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    torch.save({**state, "algorithm": "dqn"}, path)


@pytest.mark.parametrize(
    ("damage", "extra", "says"),
    [
        (_zero_bytes, [], "cannot resume from it"),
        (_truncated, [], "cannot resume from it"),
        (_not_a_zip, [], "cannot resume from it"),
        (_not_weights_only, [], "cannot resume from it"),
        (_wrong_keys, [], "it has no 'collector' entry"),
        (_wrong_shapes, [], "size mismatch"),
        (_wrong_sessions, [], "tau has shape (5,), not (8,)"),
        (_another_algorithm, [], "the state of a dqn run, not ppo"),
        (None, ["--num-envs", "4"], "it holds 8 sessions per worker where this run has 4"),
    ],
    ids=lambda v: getattr(v, "__name__", None) or str(v),
)
def test_a_damaged_or_mismatched_last_pt_is_one_line_naming_it(
    finished_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Any,
    extra: list[str],
    says: str,
) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    last = out / "last.pt"
    if damage is not None:
        damage(last)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    argv = ["train", "ppo", "--out", str(out), "--resume", "--steps", "600", *extra]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert str(last) in line and says in line, line
    # Nothing is lost: the run directory is as it was.
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_resume_without_a_last_pt_or_with_a_damaged_args_json(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / "last.pt").unlink()
    assert main(["train", "ppo", "--out", str(out), "--resume"]) == 2
    assert str(out / "last.pt") in _error_line(capsys)
    for text, says in (
        ("{not json", "is not readable JSON"),
        ("[1, 2]", "is not a JSON object"),
        ('{"algorithm": "a3c"}', "is a a3c run; resume it with streambed train a3c"),
        ('{"algorithm": "ppo", "bogus": 1}', "unknown argument 'bogus'"),
        ('{"algorithm": "ppo", "num_envs": "many"}', "num_envs is 'many', not a int"),
    ):
        (out / "args.json").write_text(text)
        assert main(["train", "ppo", "--out", str(out), "--resume"]) == 2
        line = _error_line(capsys)
        assert str(out / "args.json") in line and says in line, line


def _with_inflating_entry(path: Path, declared: int) -> None:
    """last.pt plus one deflated entry of ``declared`` zero bytes: a small file that declares
    far more tensor data than the run could have written (the pickle never refers to it, so
    an unbounded ``torch.load`` reads the state as it was)."""
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        prefix = archive.namelist()[0].split("/")[0]
        with archive.open(f"{prefix}/data/inflates", "w", force_zip64=True) as fh:
            chunk = bytes(1 << 24)
            for _ in range(declared // len(chunk)):
                fh.write(chunk)


def test_resume_reads_last_pt_within_a_bound_derived_from_the_run(
    finished_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    last = out / "last.pt"
    _with_inflating_entry(last, 512 * 1024 * 1024)
    assert last.stat().st_size < 8 * 1024 * 1024
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def no_load(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("torch.load reached: the archive's sizes were not checked first")

    monkeypatch.setattr(torch, "load", no_load)
    assert main(["train", "ppo", "--out", str(out), "--resume", "--steps", "600"]) == 2
    line = _error_line(capsys)
    assert str(last) in line and "cannot resume from it" in line, line
    assert "bytes of tensor data uncompressed, more than the limit" in line, line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


# ------------------------------------------------------------------------------------------
# Numeric flags


@pytest.mark.parametrize(
    ("algorithm", "flag", "value", "says"),
    [
        ("ppo", "--minutes", "0", "--minutes must be positive, got 0.0"),
        ("ppo", "--minutes", "-1", "--minutes must be positive, got -1.0"),
        ("ppo", "--minutes", "nan", "--minutes must be a finite number, got nan"),
        ("ppo", "--steps", "0", "--steps must be 1 or more, got 0"),
        ("ppo", "--workers", "-1", "--workers must be 1 or more, got -1"),
        ("ppo", "--learning-rate", "0", "--learning-rate must be positive, got 0.0"),
        ("ppo", "--learning-rate", "nan", "--learning-rate must be a finite number"),
        ("ppo", "--learning-rate", "inf", "--learning-rate must be a finite number"),
        ("ppo", "--val-every", "0", "--val-every must be 1 or more, got 0"),
        ("ppo", "--seed", "-3", "--seed must be 0 or more, got -3"),
        ("ppo", "--gamma", "1.5", "--gamma must be in [0, 1], got 1.5"),
        ("ppo", "--val-fraction", "1", "--val-fraction must be in (0, 1), got 1.0"),
        ("a3c", "--num-envs", "0", "--num-envs must be 1 or more, got 0"),
        ("a3c", "--critic-lr", "-0.1", "--critic-lr must be positive, got -0.1"),
        ("dqn", "--tau", "0", "--tau must be in (0, 1], got 0.0"),
        ("dqn", "--buffer-size", "0", "--buffer-size must be 1 or more, got 0"),
        ("imitate", "--horizon", "0", "--horizon must be 1 or more, got 0"),
        ("imitate", "--snapshot-minutes", "-1", "--snapshot-minutes must be 0 or more"),
    ],
)
def test_an_out_of_range_flag_is_one_line_naming_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    algorithm: str,
    flag: str,
    value: str,
    says: str,
) -> None:
    out = tmp_path / "run"
    argv = ["train", algorithm, "--out", str(out), *TINY, f"{flag}={value}"]
    assert main(argv) == 2
    assert says in _error_line(capsys)
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("cls", [PPOArgs, A3CArgs, DQNArgs, ImitateArgs])
def test_every_numeric_argument_has_a_range(cls: type[CommonArgs]) -> None:
    bounds: dict[str, Bound] = {}
    for klass in reversed(cls.__mro__):
        bounds.update(vars(klass).get("BOUNDS", {}))
    defaults = cls()
    numeric = {
        f.name
        for f in fields(cls)
        if isinstance(getattr(defaults, f.name), int | float)
        and not isinstance(getattr(defaults, f.name), bool)
    }
    assert numeric <= set(bounds), numeric - set(bounds)
    check_args(defaults)  # the defaults are valid; --minutes' 0 means "not given"
    with pytest.raises(ConfigError, match="--minutes must be positive"):
        check_args(defaults, given={"minutes"})


# ------------------------------------------------------------------------------------------
# The run directory


def test_an_existing_run_is_refused_unless_resumed_or_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["train", "ppo", "--help"])
    assert "--force" in capsys.readouterr().out
    out = tmp_path / "run"
    base = ["train", "ppo", "--out", str(out), *TINY]
    assert main(base) == 0
    best = (out / "best.pt").read_bytes()
    assert main([*base, "--seed", "2"]) == 2
    line = _error_line(capsys)
    assert f"--out {out} holds a previous run (args.json, best.pt, last.pt" in line
    assert "--resume" in line and "--force" in line
    assert (out / "best.pt").read_bytes() == best
    assert main([*base, "--resume", "--force"]) == 2
    assert "give one" in _error_line(capsys)

    # --force replaces the run's outputs (stale snapshots and averages too) and nothing else.
    (out / "snapshots").mkdir()
    (out / "snapshots" / "min0001.00.pt").write_bytes(b"old")
    (out / "averaged.pt").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    assert main([*base, "--seed", "2", "--force"]) == 0
    assert not (out / "snapshots").exists() and not (out / "averaged.pt").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "best.pt").read_bytes() != best

    # Any non-empty directory is refused; an empty one, or a new one, is fine.
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("x\n")
    assert main(["train", "ppo", "--out", str(other), *TINY]) == 2
    assert "exists and is not empty" in _error_line(capsys)
    assert main(["train", "ppo", "--out", str(other / "data.csv"), *TINY]) == 2
    assert "is not a directory" in _error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["train", "ppo", "--out", str(tmp_path / "empty"), *TINY]) == 0


def test_the_library_refuses_an_existing_run_too(tmp_path: Path) -> None:
    args = PPOArgs(out=str(tmp_path / "r"), steps=300, num_envs=8, val_every=1, progress=False)
    train_loop(PPO(args, DATA))
    with pytest.raises(ConfigError, match="holds a previous run"):
        train_loop(PPO(args, DATA))
    train_loop(PPO(replace(args, force=True), DATA))


# ------------------------------------------------------------------------------------------
# Resuming: each iteration logged once


class _CrashedPPO(PPO):
    """Dies (as by SIGKILL: no last.pt written) at the start of its 4th iteration, once."""

    def iteration(self) -> dict[str, float]:
        if self.iterations == 3 and not self.args.resume:
            raise RuntimeError("killed")
        return super().iteration()


def _csv_iterations(out: Path) -> list[int]:
    with open(out / "metrics.csv", newline="") as fh:
        return [
            int(float(r["value"])) for r in csv.DictReader(fh) if r["name"] == "charts/iteration"
        ]


def _tb_iterations(out: Path) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    return [int(e.value) for e in events.Scalars("charts/iteration")]


def test_a_resumed_run_logs_each_iteration_once(tmp_path: Path) -> None:
    args = PPOArgs(
        out=str(tmp_path / "r"), steps=2_000, num_envs=8, val_every=2, progress=False, seed=4
    )
    with pytest.raises(RuntimeError, match="killed"):
        train_loop(_CrashedPPO(args, DATA))
    assert _csv_iterations(tmp_path / "r") == [1, 2, 3]  # last.pt holds iteration 2
    summary = train_loop(PPO(replace(args, resume=True), DATA))
    expected = list(range(1, summary["iterations"] + 1))
    assert len(expected) > 3
    assert _csv_iterations(tmp_path / "r") == expected
    assert _tb_iterations(tmp_path / "r") == expected
    with open(tmp_path / "r" / "metrics.csv", newline="") as fh:
        wall = [float(r["wall_s"]) for r in csv.DictReader(fh)]
    assert wall == sorted(wall)


# ------------------------------------------------------------------------------------------
# The progress bar


def test_progress_postfix_shows_validation_only_once_there_is_one() -> None:
    assert progress_postfix(1234.5, math.nan, -math.inf) == "1,234 steps/s"
    assert progress_postfix(99.0, 0.5551, 0.6) == "99 steps/s, val_qoe=0.555, best=0.600"


@pytest.mark.parametrize(
    ("budget", "shown"),
    [({"steps": 600}, r"\d+/600 steps"), ({"minutes": 0.02}, r"\d/1 s")],
    ids=["steps", "minutes"],
)
def test_progress_bar_shows_whole_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], budget: dict[str, Any], shown: str
) -> None:
    args = PPOArgs(out=str(tmp_path / "r"), num_envs=8, val_every=1, progress=True, **budget)
    train_loop(PPO(args, DATA))
    err = capsys.readouterr().err
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    assert re.search(shown, final) and "steps/s" in final and "val_qoe=" in final, final
    assert "nan" not in err and "inf" not in err
    assert not re.search(r"\d\.\d{4,}", err), err
