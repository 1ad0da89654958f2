"""Algorithm plug-ins (entry-point group ``streambed.algorithms``).

In-process: real entry points without installing anything: a ``<name>.dist-info`` directory
(METADATA, entry_points.txt) and a module file on ``sys.path``, found by importlib.metadata.
One plug-in is good; the others fail to import, are not ``ABRAlgorithm`` subclasses, have
``Params`` without defaults, or clash with a built-in: each is named in a warning and skipped.

Installed: ``examples/streambed-example`` pip-installed (offline) into a fresh virtual
environment that sees this project's dependencies through a ``.pth`` file, then used from that
environment's Python through ``streambed algorithms``, ``eval``, a real ``serve`` and a short
``emulate`` behind netns links (root, as test_emulate).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
import venv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch
from plugin_helpers import fake_distribution
from service_helpers import running_service

from streambed.abr_service.algorithms import registry
from streambed.abr_service.algorithms.base import PlayerState
from streambed.abr_service.video import generate_video
from streambed.cli import main
from streambed.core.errors import ConfigError
from streambed.core.servers import free_port, wait_healthy
from streambed.traces import load_traceset
from streambed.trainer.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "streambed-example"
VIDEO = generate_video(num_chunks=5, chunk_s=1.0, bitrates_kbps=(300, 750, 1850))

PLUGIN_MODULE = '''
from dataclasses import dataclass, field

from streambed.abr_service.algorithms.base import ABRAlgorithm, PlayerState


@dataclass(frozen=True)
class FixedParams:
    level: int = 1
    """The level always chosen."""


class Fixed(ABRAlgorithm):
    name = "fixed-by-class"  # differs from the entry point's name, which wins
    Params = FixedParams

    def select(self, state: PlayerState) -> int:
        return min(self.params.level, self.video.num_levels - 1)


class NotAnAlgorithm:
    pass


@dataclass(frozen=True)
class NoDefaults:
    x: int


class NeedsX(ABRAlgorithm):
    name = "needsx"
    Params = NoDefaults

    def select(self, state: PlayerState) -> int:
        return 0


@dataclass(frozen=True)
class BadRangeParams:
    level: int = field(default=1, metadata={"range": ("low", "high")})


class BadRange(NeedsX):
    Params = BadRangeParams
'''

ENTRY_POINTS = {
    "streambed.algorithms": {
        "fixed": "tp_plugin_mod:Fixed",
        "broken": "tp_plugin_missing:Whatever",
        "notsub": "tp_plugin_mod:NotAnAlgorithm",
        "needsx": "tp_plugin_mod:NeedsX",
        "badrange": "tp_plugin_mod:BadRange",
        "bba": "tp_plugin_mod:Fixed",
    }
}


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fake installed distribution ``tp-plugins`` 1.0 with the entry points above."""
    site = tmp_path / "site"
    fake_distribution(site, "tp-plugins", "1.0", ENTRY_POINTS, {"tp_plugin_mod": PLUGIN_MODULE})
    monkeypatch.syspath_prepend(str(site))  # restored (and caches invalidated) by monkeypatch
    registry.clear_cache()
    yield site
    registry.clear_cache()
    sys.modules.pop("tp_plugin_mod", None)


def test_good_plugin_registered_broken_ones_named_and_skipped(
    plugins: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="streambed.abr_service.algorithms.registry"):
        infos = registry.available_algorithms()
    fixed = infos["fixed"]
    assert fixed.source == "plugin tp-plugins 1.0 (tp_plugin_mod:Fixed)"
    assert [(p.name, p.type, p.default, p.doc) for p in fixed.params] == [
        ("level", "int", 1, "The level always chosen.")
    ]
    assert infos["bba"].builtin  # the clash did not replace the built-in
    errors = registry.load_errors()
    assert set(errors) == {"broken", "notsub", "needsx", "badrange", "bba"}
    assert "BadRange.Params.level: range ('low', 'high') is not two numbers" in errors["badrange"]
    assert "ModuleNotFoundError" in errors["broken"]
    assert "not an ABRAlgorithm subclass" in errors["notsub"]
    assert "cannot be built with defaults" in errors["needsx"]
    assert "clashes with the built-in" in errors["bba"]
    warned = [r.getMessage() for r in caplog.records]
    for name in errors:  # the warning every plug-in group gives (abr_service.plugins)
        assert any(
            w.startswith(f"algorithm plug-in {name!r} (") and w.endswith(f"skipped: {errors[name]}")
            for w in warned
        )

    algo = registry.make_algorithm("fixed", VIDEO, {"level": "2"})
    assert algo.name == "fixed"  # the registered name, as records are keyed
    assert algo.select(PlayerState(next_chunk=1, buffer_s=4.0, last_quality=1)) == 2
    with pytest.raises(ConfigError, match="'lvl'"):
        registry.make_algorithm("fixed", VIDEO, {"lvl": "2"})
    with pytest.raises(ConfigError, match="plug-in skipped: .*ModuleNotFoundError"):
        registry.make_algorithm("broken", VIDEO)


def write_inputs(root: Path, traces: int = 2) -> tuple[Path, Path]:
    video_json = VIDEO.save(root / "video.json")
    tdir = root / "traces"
    tdir.mkdir()
    for i, mbps in enumerate((6.0, 1.2, 3.0)[:traces]):
        (tdir / f"t{i}").write_text("".join(f"{t}\t{mbps}\n" for t in range(60)))
    return tdir, video_json


def test_eval_in_process_and_param_errors(
    plugins: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traces, video_json = write_inputs(tmp_path)
    out = tmp_path / "out"
    argv = ["eval", "--traces", str(traces), "--video", str(video_json), "--no-progress"]
    code = main([*argv, "--algorithms", "fixed,bba", "--param", "fixed.level=0", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    # chunk 0 at the default level, then level 0 (300 kbps) throughout
    assert summary["algorithms"]["fixed"]["bitrate_mean_kbps"] == 300.0
    assert summary["params"] == {"fixed": {"level": "0"}}
    capsys.readouterr()
    assert main([*argv, "--algorithms", "fixed", "--param", "fixed.level=x", "--out", "o"]) == 2
    assert "level='x'" in capsys.readouterr().err
    assert main([*argv, "--algorithms", "broken", "--out", "o"]) == 2
    assert "broken: cannot import tp_plugin_missing:Whatever" in capsys.readouterr().err


def test_decide_and_catalog_in_service(plugins: Path, tmp_path: Path) -> None:
    body = {"session_id": "s", "chunk_index": 0, "buffer_s": 0.0, "algorithm": "fixed"}
    with running_service(tmp_path) as url:
        algos = {a["name"]: a for a in httpx.get(f"{url}/algorithms").json()}
        assert algos["fixed"]["kind"] == "plugin"
        assert algos["fixed"]["source"].startswith("plugin tp-plugins 1.0")
        assert algos["fixed"]["params"] == {"level": 1}
        assert "broken" not in algos and algos["bba"]["source"] == "built-in"
        r = httpx.post(f"{url}/decide", json={**body, "chunk_index": 1, "params": {"level": 2}})
        assert r.status_code == 200 and r.json()["quality"] == 2, r.text
        r = httpx.post(f"{url}/decide", json={**body, "session_id": "t", "params": {"level": "x"}})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "params", "level"]
        r = httpx.post(f"{url}/decide", json={**body, "session_id": "u", "params": {"nope": 1}})
        assert r.status_code == 422 and "'nope'" in r.text
        # no declared range: still strict types, finite and 64-bit
        for i, bad in enumerate([True, 1.5, 10**30, "2"]):
            r = httpx.post(
                f"{url}/decide", json={**body, "session_id": f"w{i}", "params": {"level": bad}}
            )
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["detail"][0]["loc"] == ["body", "params", "level"]
            assert "valid: an integer (64-bit)" in r.text
        r = httpx.post(f"{url}/decide", json={**body, "session_id": "v", "algorithm": "broken"})
        assert r.status_code == 404 and "plug-in" not in r.text


def test_algorithms_command(plugins: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["algorithms"]) == 0
    text = capsys.readouterr().out
    assert "fixed  [plugin tp-plugins 1.0 (tp_plugin_mod:Fixed)]" in text
    assert "    level: int = 1  The level always chosen." in text
    assert "    reservoir_s: float = 5.0  [0.0, 3600.0]  Buffer below which" in text
    assert "    qoe: str = 'lin'  {lin, log, hd, ssim, vmaf}  QoE metric" in text
    assert "plug-ins not loaded (streambed.algorithms):" in text and "  notsub: " in text
    assert main(["algorithms", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert {"name": "pensieve", "obs_version": "pensieve-6x8/1"}.items() <= next(
        a for a in found["architectures"] if a["name"] == "pensieve"
    ).items()
    assert [o["shape"] for o in found["observations"] if o["version"] == "pensieve-6x8/1"] == [
        [6, 8]
    ]
    by_name = {a["name"]: a for a in found["algorithms"]}
    assert by_name["fixed"]["params"][0] == {
        "name": "level",
        "type": "int",
        "default": 1,
        "doc": "The level always chosen.",
        "range": None,  # undeclared: still finite, 64-bit, strictly typed
        "choices": None,
        "valid": "an integer (64-bit)",
    }
    assert by_name["robustmpc"]["params"][0]["range"] == [1, 5]
    assert by_name["bba"]["source"] == "built-in"
    assert set(found["errors"]) == {"broken", "notsub", "needsx", "badrange", "bba"}


# ------------------------------------------------------------------------------------------
# the example package, installed into a fresh virtual environment


@pytest.fixture(scope="module")
def example_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv seeing this project's dependencies (offline) with the example installed;
    returns its python."""
    root = tmp_path_factory.mktemp("venv")
    env_dir = root / "env"
    # No pip of its own: pip and setuptools come from this project's venv through the .pth
    # below (ensurepip's old setuptools could not build a wheel offline), installing here.
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # This project's venv (its dependencies, setuptools) and the project's editable install
    # (its hook maps streambed.* onto the folders: the same line its own .pth runs).
    ours = sysconfig.get_paths()["purelib"]
    hooks = "".join(p.read_text() for p in Path(ours).glob("__editable__.streambed_abr-*.pth"))
    assert hooks, f"no editable install of streambed-abr in {ours}"
    (Path(site) / "streambed-dev.pth").write_text(f"{ours}\n{hooks}\n")
    # A copy: setuptools writes build/ and *.egg-info next to the sources.
    source = shutil.copytree(EXAMPLE, root / "example", ignore=shutil.ignore_patterns("build"))
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-index", str(source)],
        check=True,
        capture_output=True,
    )
    return python


def venv_streambed(python: Path, *args: str, **kwargs: object) -> str:
    done = subprocess.run(
        [str(python), "-m", "streambed", *args],
        capture_output=True,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return str(done.stdout)


@pytest.mark.slow
def test_example_listed_and_evaluates_like_in_process(example_venv: Path, tmp_path: Path) -> None:
    text = venv_streambed(example_venv, "algorithms")
    assert (
        "harmonic  [plugin streambed-example 0.1.0 (streambed_example.harmonic:HarmonicRate)]"
        in text
    )
    assert "    window: int = 5  [1, 100]  Number of past chunks in the harmonic mean." in text
    assert "    safety: float = 0.9" in text
    assert "  tiny-mlp-throughput  reads example-throughput/1  " in text
    assert "  example-throughput/1  shape (3, 8)  streambed_example." in text
    assert (
        "  pensieve-6x8/1  shape (6, 8)  streambed.abr_service.observation:PensieveObservation"
        in text
    )
    traces, video_json = write_inputs(tmp_path, traces=3)
    out = tmp_path / "eval"
    venv_streambed(
        example_venv,
        *("eval", "--traces", str(traces), "--video", str(video_json), "--no-progress"),
        *("--algorithms", "harmonic,bba", "--param", "harmonic.window=3", "--out", str(out)),
    )
    with open(out / "per_trace.csv") as fh:
        rows = {(r["algorithm"], r["trace"]): float(r["qoe"]) for r in csv.DictReader(fh)}

    sys.path.insert(0, str(EXAMPLE))
    try:
        from streambed_example.harmonic import HarmonicRate
    finally:
        sys.path.remove(str(EXAMPLE))
    result = evaluate(
        load_traceset(traces),
        VIDEO,
        ["harmonic", "bba"],
        params={"harmonic": {"window": "3"}},
        classes={"harmonic": HarmonicRate},
        progress=False,
    )
    mine = {(m.algorithm, m.trace): m.qoe for m in result.metrics}
    assert len(mine) == 6 and rows == mine


@contextmanager
def venv_service(python: Path, tmp_path: Path, *args: str) -> Iterator[tuple[str, list[str]]]:
    """A real ``streambed serve`` from ``python``'s environment: its URL, and a list that holds
    its output once it has stopped (by SIGINT, cleanly)."""
    port = free_port()
    proc = subprocess.Popen(
        [str(python), "-m", "streambed", "serve", "--port", str(port)]
        + ["--models-dir", str(tmp_path / "models"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_healthy(url, proc) is None, "serve did not start"
        yield url, output
    finally:
        proc.send_signal(signal.SIGINT)
        output.append(proc.communicate(timeout=20)[0])
    assert proc.returncode == 0, output[0]


@pytest.mark.slow
def test_example_served_by_a_real_service(example_venv: Path, tmp_path: Path) -> None:
    with venv_service(example_venv, tmp_path) as (url, output):
        algos = {a["name"]: a for a in httpx.get(f"{url}/algorithms").json()}
        assert algos["harmonic"]["source"].startswith("plugin streambed-example 0.1.0")
        assert algos["harmonic"]["params"] == {"window": 5, "safety": 0.9}
        body = {"session_id": "h", "algorithm": "harmonic", "params": {"window": 3}}
        r = httpx.post(f"{url}/decide", json={**body, "chunk_index": 0, "buffer_s": 0.0})
        assert r.status_code == 200 and r.json()["algorithm"] == "harmonic", r.text
        # 1 MB in 1 s = 8 Mbit/s: 0.9 x 8000 kbps fits the top level of the default ladder
        feedback = {"last_quality": 1, "last_chunk_bytes": 1_000_000, "last_chunk_download_s": 1}
        r = httpx.post(f"{url}/decide", json={**body, **feedback, "chunk_index": 1, "buffer_s": 4})
        assert r.status_code == 200 and not r.json()["fallback"], r.text
        assert r.json()["bitrate_kbps"] <= 0.9 * 8000
        r = httpx.post(
            f"{url}/decide",
            json={
                **body,
                "session_id": "bad",
                "chunk_index": 0,
                "buffer_s": 0,
                "params": {"safety": 0},
            },
        )
        assert r.status_code == 422 and "safety=0" in r.text and "[0.05, 1.0]" in r.text, r.text
        params = {a["name"]: a for a in algos["harmonic"]["parameters"]}
        assert params["window"]["range"] == [1, 100] and params["safety"]["range"] == [0.05, 1.0]
    assert "algorithm plug-in 'harmonic' from plugin streambed-example 0.1.0" in output[0]


@pytest.mark.slow
def test_example_observation_trains_evaluates_and_serves(
    example_venv: Path, tmp_path: Path
) -> None:
    """``tiny-mlp-throughput`` over the example's own observation: trained, evaluated and served
    from the environment the example is installed in."""
    traces, video_json = write_inputs(tmp_path, traces=3)
    run = tmp_path / "run"
    summary = venv_streambed(
        example_venv,
        *("train", "ppo", "--arch", "tiny-mlp-throughput", "--traces", str(traces)),
        *("--video", str(video_json), "--steps", "200", "--num-envs", "8"),
        *("--rollout-steps", "8", "--val-every", "1", "--no-progress", "--out", str(run)),
    )
    assert json.loads(summary)["iterations"] >= 1
    data = torch.load(run / "best.pt", weights_only=True)
    assert (data["arch"], data["obs_version"]) == ("tiny-mlp-throughput", "example-throughput/1")
    out = tmp_path / "eval"
    venv_streambed(
        example_venv,
        *("eval", "--traces", str(traces), "--video", str(video_json), "--no-progress"),
        *("--algorithms", "ppo,bba", "--model", str(run / "best.pt"), "--out", str(out)),
    )
    assert json.loads((out / "summary.json").read_text())["algorithms"]["ppo"]["traces"] == 3

    model = ("--video", str(video_json), "--model", str(run / "best.pt"))
    with venv_service(example_venv, tmp_path, *model) as (url, _):
        models = httpx.get(f"{url}/models").json()["models"]
        assert [m["obs_version"] for m in models] == ["example-throughput/1"]
        body = {"session_id": "t", "algorithm": "ppo"}
        r = httpx.post(f"{url}/decide", json={**body, "chunk_index": 0, "buffer_s": 0.0})
        assert r.status_code == 200, r.text
        feedback = {"last_quality": 1, "last_chunk_bytes": 200_000, "last_chunk_download_s": 0.5}
        for k in (1, 2):
            r = httpx.post(
                f"{url}/decide", json={**body, **feedback, "chunk_index": k, "buffer_s": 2}
            )
            assert r.status_code == 200 and not r.json()["fallback"], r.text
            assert r.json()["model_version"], r.text


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="netns links need root")
def test_example_runs_in_the_emulation(example_venv: Path, tmp_path: Path) -> None:
    traces, video_json = write_inputs(tmp_path)
    out = tmp_path / "emu"
    venv_streambed(
        example_venv,
        *("emulate", "--traces", str(traces), "--video", str(video_json)),
        *("--algorithms", "harmonic", "--param", "harmonic.window=3", "--link", "netns"),
        *("--max-chunks", "3", "--parallel", "2", "--delay-ms", "10", "--no-progress"),
        *("--out", str(out)),
        timeout=120,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithms"]["harmonic"]["traces"] == 2
    assert summary["params"] == {"harmonic": {"window": "3"}}
    lines = (out / "sessions" / "harmonic").rglob("*.jsonl")
    assert any(lines)


def test_example_params_documented() -> None:
    text = textwrap.dedent((EXAMPLE / "pyproject.toml").read_text())
    assert 'harmonic = "streambed_example.harmonic:HarmonicRate"' in text
    assert 'tiny-mlp = "streambed_example.tiny:TinyActorCritic"' in text
    assert 'tiny-mlp-throughput = "streambed_example.tiny:TinyThroughputActorCritic"' in text
    assert '[project.entry-points."streambed.observations"]' in text
