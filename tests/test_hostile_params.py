"""Hostile algorithm parameters: every algorithm's every parameter, through a real service.

``streambed serve`` runs as a subprocess on loopback under an address-space limit, serving
``ppo`` from a checkpoint. Hypothesis sends ``/decide`` requests whose ``params`` hold huge,
negative, zero and non-finite numbers (NaN and Infinity as JSON tokens, as strings, and as
1e309), strings, booleans, lists, objects and null, next to values inside the declared ranges.
Every answer is a 200 or a 422 naming a refused parameter, within a second; ``/healthz``, polled
from a thread, answers within 0.5 s throughout; the service's resident memory grows by less
than 300 MB. ``--param`` on the command line gets the same values: exit status 2, one line.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_helpers import checkpoint_bytes

from streambed.abr_service.algorithms import available_algorithms
from streambed.cli import main
from streambed.core.servers import free_port, wait_healthy

ADDRESS_SPACE = 3 * 1024**3
"""The service's RLIMIT_AS: torch maps much address space it never touches."""
ANSWER_S = 1.0
HEALTH_S = 0.5
RSS_GROWTH_MB = 300
EXAMPLES = 300


class Raw(str):
    """A JSON token written as is (NaN, Infinity, 1e309: not valid JSON, sent anyway)."""


def encode(value: Any) -> str:
    """JSON text of ``value``, with :class:`Raw` tokens unquoted and NaN/inf as Python writes
    them (NaN, Infinity)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{encode(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@dataclass
class Service:
    url: str
    proc: subprocess.Popen[bytes]
    catalog: dict[str, dict[str, dict[str, Any]]]
    """Algorithm -> parameter -> its GET /algorithms entry."""
    health: list[float] = field(default_factory=list)
    health_failures: list[str] = field(default_factory=list)


@contextlib.contextmanager
def serve(tmp: Path, *args: str) -> Iterator[Service]:
    """A real ``streambed serve`` on loopback under the memory limit, ``ppo`` from a checkpoint;
    ``/healthz`` polled from a thread for as long as it runs."""
    model = tmp / "model.pt"
    model.write_bytes(checkpoint_bytes())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "streambed", "serve", "--port", str(port)]
    argv += ["--models-dir", str(tmp / "models"), "--model", str(model), *args]
    log = open(tmp / "serve.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit_memory)
    try:
        why = wait_healthy(url, proc, timeout_s=120)
        assert why is None, f"serve {why}: {(tmp / 'serve.log').read_text()[-2000:]}"
        catalog = {
            a["name"]: {p["name"]: p for p in a["parameters"]}
            for a in httpx.get(f"{url}/algorithms").json()
        }
        service = Service(url, proc, catalog)
        stop = threading.Event()

        def poll() -> None:
            with httpx.Client(timeout=5.0) as client:
                while not stop.is_set():
                    started = time.perf_counter()
                    try:
                        ok = client.get(f"{url}/healthz").status_code == 200
                    except httpx.HTTPError as exc:
                        service.health_failures.append(repr(exc))
                    else:
                        service.health.append(time.perf_counter() - started)
                        if not ok:
                            service.health_failures.append("not 200")
                    stop.wait(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            yield service
        finally:
            stop.set()
            poller.join(10)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with serve(tmp_path_factory.mktemp("hostile")) as svc:
        yield svc


# ------------------------------------------------------------------------------------------
# the values

HUGE = [0, -1, 1, -(10**6), 2**31, 2**63, -(2**63) - 1, 10**30, 10**400, -(10**400)]
FLOATS = [0.0, -0.0, 0.5, -0.5, 1e-308, 1e308, -1e308, 5e300]
TOKENS = [Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e309"), Raw("-1e309")]
STRINGS = ["NaN", "Infinity", "-Infinity", "1e309", "nan", "inf", "5", "1", "true", "", "x" * 500]

hostile_values = st.one_of(
    st.sampled_from(HUGE),
    st.sampled_from(FLOATS),
    st.sampled_from(TOKENS),
    st.sampled_from(STRINGS),
    st.integers(),
    st.floats(),  # NaN and inf included: json.dumps writes the NaN and Infinity tokens
    st.text(max_size=12),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def in_range(param: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values a parameter accepts (so that accepted parameters also decide)."""
    kind, bounds, choices = param["type"], param["range"], param["choices"]
    if kind == "bool":
        return st.booleans()
    if kind == "str":
        return st.sampled_from(choices) if choices else st.text(max_size=8)
    lo, hi = bounds if bounds else (-(2**31), 2**31)
    if kind == "int":
        return st.integers(lo, hi)
    return st.floats(lo, hi)


def valid(param: dict[str, Any] | None, value: Any) -> bool:
    """The contract, written independently of the service: strict types, finite numbers, the
    declared range or choices."""
    if param is None or isinstance(value, Raw):
        return False
    kind, bounds, choices = param["type"], param["range"], param["choices"]
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str) and (choices is None or value in choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind == "int" and not (isinstance(value, int) or float(value).is_integer()):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    lo, hi = bounds if bounds else (None, None)
    if kind == "int" and bounds is None:
        lo, hi = -(2**63 - 1), 2**63 - 1
    try:
        return (lo is None or value >= lo) and (hi is None or value <= hi)
    except OverflowError:
        return False


@st.composite
def requests(draw: st.DrawFn, catalog: dict[str, dict[str, dict[str, Any]]]) -> tuple[str, dict]:
    algorithm = draw(st.sampled_from(sorted(catalog)))
    known = catalog[algorithm]
    names = [n for n in known if n != "model"]  # the model is chosen by activation only
    keys = draw(st.lists(st.sampled_from([*names, "nope"]), min_size=1, max_size=3, unique=True))
    params = {}
    for key in keys:
        inside = key in known and draw(st.booleans())  # half of them accepted values
        params[key] = draw(in_range(known[key]) if inside else hostile_values)
    return algorithm, params


# ------------------------------------------------------------------------------------------
# the service


def decide(
    client: httpx.Client, url: str, session: str, algorithm: str, params: Any
) -> tuple[httpx.Response, float]:
    """Chunk 1 of a new session (feedback included, so that an accepted algorithm decides)."""
    body = {
        "session_id": session,
        "chunk_index": 1,
        "buffer_s": 4.0,
        "last_quality": 1,
        "last_chunk_bytes": 400_000,
        "last_chunk_download_s": 1.0,
        "algorithm": algorithm,
        "params": params,
    }
    started = time.perf_counter()
    r = client.post(
        f"{url}/decide", content=encode(body), headers={"Content-Type": "application/json"}
    )
    return r, time.perf_counter() - started


def test_hostile_params_never_5xx_slow_or_large(service: Service) -> None:
    counter = iter(range(10**9))
    with httpx.Client(timeout=10.0) as client:
        for algorithm in service.catalog:  # warm every algorithm's caches before measuring
            r, _ = decide(client, service.url, f"warm-{algorithm}", algorithm, {})
            assert r.status_code == 200, r.text
        rss_before = rss_mb(service.proc.pid)
        answers: list[int] = []

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(requests(service.catalog))
        def check(case: tuple[str, dict[str, Any]]) -> None:
            algorithm, params = case
            r, elapsed = decide(client, service.url, f"h{next(counter)}", algorithm, params)
            answers.append(r.status_code)
            assert r.status_code < 500, r.text
            assert elapsed < ANSWER_S, f"{elapsed:.2f} s for {algorithm} {params!r}"
            refused = [
                k for k, v in params.items() if not valid(service.catalog[algorithm].get(k), v)
            ]
            if refused:
                assert r.status_code == 422, f"{algorithm} {params!r}: {r.text}"
                loc = r.json()["detail"][0]["loc"]
                assert loc[:2] == ["body", "params"] and loc[2] in refused, r.text
            elif r.status_code != 200:  # a combination the Params refuse (BOLA's buffers), or
                # a metric scored from measurements this (synthetic) video does not carry
                assert r.status_code == 422, r.text
                assert "must exceed" in r.text or "measurements" in r.text, r.text

        check()
        rss_after = rss_mb(service.proc.pid)
    assert answers.count(200) > 5 and answers.count(422) > 50  # both kinds were exercised
    assert service.proc.poll() is None
    assert not service.health_failures, service.health_failures[:3]
    assert max(service.health) < HEALTH_S, f"/healthz took {max(service.health):.2f} s"
    assert rss_after - rss_before < RSS_GROWTH_MB, f"{rss_before:.0f} -> {rss_after:.0f} MB"


@pytest.mark.parametrize("algorithm", ["robustmpc", "fastmpc"])
@pytest.mark.parametrize("horizon", [50, 8, 6])
def test_mpc_horizon_beyond_the_limit_is_refused_at_once(
    service: Service, algorithm: str, horizon: int
) -> None:
    with httpx.Client(timeout=5.0) as client:
        r, elapsed = decide(
            client, service.url, f"mpc-{algorithm}-{horizon}", algorithm, {"horizon": horizon}
        )
    assert r.status_code == 422, r.text
    assert elapsed < ANSWER_S
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", "params", "horizon"]
    assert f"horizon={horizon}" in detail["msg"] and "[1, 5]" in detail["msg"], detail


@pytest.mark.parametrize(
    ("algorithm", "params", "name"),
    [
        ("ppo", {"seed": -1}, "seed"),
        ("rb", {"safety": Raw("Infinity")}, "safety"),
        ("rb", {"safety": "Infinity"}, "safety"),
        ("rb", {"safety": Raw("1e309")}, "safety"),
        ("bba", {"reservoir_s": -100}, "reservoir_s"),
        ("bba", {"cushion_s": Raw("NaN")}, "cushion_s"),
        ("rb", {"window": "5"}, "window"),
        ("rb", {"window": True}, "window"),
        ("bola", {"use_chunk_sizes": 1}, "use_chunk_sizes"),
        ("robustmpc", {"qoe": "nope"}, "qoe"),
    ],
)
def test_named_refusals_keep_the_connection(
    service: Service, algorithm: str, params: dict[str, Any], name: str
) -> None:
    with httpx.Client(timeout=5.0) as client:
        r, _ = decide(client, service.url, f"named-{algorithm}-{name}", algorithm, params)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"][0]
        assert detail["loc"] == ["body", "params", name], detail
        assert f"{name}=" in detail["msg"] and "valid:" in detail["msg"], detail
        # the same keep-alive connection goes on serving
        r, _ = decide(client, service.url, f"named-ok-{algorithm}-{name}", algorithm, {})
        assert r.status_code == 200, r.text
        assert client.get(f"{service.url}/healthz").status_code == 200


def test_catalog_shows_every_range(service: Service) -> None:
    assert service.catalog["robustmpc"]["horizon"]["range"] == [1, 5]
    assert service.catalog["robustmpc"]["qoe"]["choices"] == ["lin", "log", "hd", "ssim", "vmaf"]
    assert service.catalog["bba"]["reservoir_s"]["range"] == [0.0, 3600.0]
    assert service.catalog["ppo"]["seed"]["range"] == [0, 2**32 - 1]
    for algorithm, params in service.catalog.items():
        for name, p in params.items():
            numeric = p["type"] in ("int", "float")
            assert (p["range"] is not None) == numeric, (algorithm, name)  # built-ins: all
            assert p["valid"], (algorithm, name)


def test_operator_raises_the_horizon_limit(tmp_path: Path) -> None:
    with serve(tmp_path, "--max-mpc-horizon", "6") as svc, httpx.Client(timeout=5.0) as client:
        assert svc.catalog["robustmpc"]["horizon"]["range"] == [1, 6]
        r, _ = decide(client, svc.url, "six", "robustmpc", {"horizon": 6})
        assert r.status_code == 200, r.text
        r, _ = decide(client, svc.url, "seven", "robustmpc", {"horizon": 7})
        assert r.status_code == 422 and "[1, 6]" in r.text, r.text


def test_operator_horizon_flag_checked(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "streambed", "serve", "--max-mpc-horizon", "9"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "max_mpc_horizon" in lines[0], done.stderr


# ------------------------------------------------------------------------------------------
# the command line


def bad_text(param: dict[str, Any]) -> st.SearchStrategy[str]:
    """``--param`` strings the parameter must refuse."""
    kind, bounds, choices = param["type"], param["range"], param["choices"]
    nonsense = st.sampled_from(["", "x", "[1]", "{}", "null", "0x", "1,5", "five", "1\n2"])
    if kind == "bool":
        return st.one_of(nonsense, st.sampled_from(["2", "-1", "1.5", "nan", "maybe"]))
    if kind == "str":
        assert choices, param  # a free string has nothing to refuse
        return st.text(max_size=8).filter(lambda s: s.strip() not in choices)
    lo, hi = bounds
    out = [st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1e309"])]
    out.append(st.integers(max_value=lo - 1).map(str) if kind == "int" else st.just(str(lo - 1)))
    out.append(st.integers(min_value=int(hi) + 1).map(str))
    out.append(st.floats(min_value=hi + 1, allow_infinity=False).map(repr))
    if kind == "int":
        out.append(st.sampled_from(["1.5", "2.5e0", "true"]))
    return st.one_of(nonsense, *out)


@st.composite
def cli_cases(draw: st.DrawFn) -> tuple[str, str, str]:
    infos = available_algorithms()
    algorithm = draw(st.sampled_from(sorted(infos)))
    params = {
        p.name: p.to_json()
        for p in infos[algorithm].params
        if p.type != "str" or p.choices is not None
    }
    if not params:
        return algorithm, "nope", "1"
    name = draw(st.sampled_from(sorted(params)))
    return algorithm, name, draw(bad_text(params[name]))


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(cli_cases())
def test_cli_param_refused_in_one_line(case: tuple[str, str, str]) -> None:
    algorithm, name, value = case
    argv = ["eval", "--out", "/nonexistent/never-written", "--algorithms", algorithm]
    argv += ["--param", f"{algorithm}.{name}={value}", "--no-progress"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    assert code == 2, (argv, err.getvalue())
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1, lines
    assert f"{algorithm}.{name}=" in lines[0] or f"'{name}'" in lines[0], lines[0]


def test_cli_param_refused_by_a_real_process() -> None:
    argv = [sys.executable, "-m", "streambed", "eval", "--out", "/nonexistent/o"]
    argv += ["--algorithms", "robustmpc", "--param", "robustmpc.horizon=50"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "streambed eval: error: parameter robustmpc.horizon='50': out of range; "
        "valid: an integer in [1, 5]"
    ]


def test_player_sends_typed_params(service: Service) -> None:
    """``streambed play --param reservoir_s=8`` (and the emulation, through it) sends 8, not
    "8", which the service no longer coerces."""
    from streambed.player.decisions import decide_body

    body = decide_body("player-p", 0, 0.0, None, "bba", None, {"reservoir_s": "8", "x": "NaN"})
    assert body["params"] == {"reservoir_s": 8, "x": "NaN"}  # NaN is no JSON: left a string
    body = decide_body("player-p", 0, 0.0, None, "bola", None, {"use_chunk_sizes": "true"})
    assert body["params"] == {"use_chunk_sizes": True}
    assert httpx.post(f"{service.url}/decide", json=body).status_code == 200
