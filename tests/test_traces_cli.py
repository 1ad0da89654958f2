"""Tests of ``streambed traces`` run in-process through ``streambed.commands.traces.register``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from streambed.commands import traces as cli
from streambed.core.errors import TraceError
from streambed.traces import detect_format, load_mahimahi, load_pensieve, load_trace


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streambed")
    sub = p.add_subparsers(dest="command", required=True)
    cli.register(sub)
    return p


def run(*argv: str) -> int:
    args = parser().parse_args(["traces", *argv])
    return int(args.func(args))


def test_generate_info_convert_both_ways(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    synth = tmp_path / "synth"
    with caplog.at_level(logging.INFO, logger="streambed.commands.traces"):
        assert (
            run(
                "generate",
                "--out",
                str(synth),
                "--count",
                "3",
                "--seed",
                "4",
                "--duration-s",
                "40",
                "--interval-s",
                "0.5",
                "--outage-prob",
                "0.02",
            )
            == 0
        )
    assert f"wrote 3 traces to {synth}" in caplog.text
    names = sorted(p.name for p in synth.iterdir())
    assert names == ["synth_000", "synth_001", "synth_002"]
    originals = [load_pensieve(synth / n) for n in names]
    assert all(t.duration_s == 40.0 and len(t) == 81 for t in originals)

    capsys.readouterr()
    assert run("info", str(synth), "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 3
    assert info["total_duration_s"] == pytest.approx(120.0)
    assert info["mean_mbps"] == pytest.approx(np.mean([t.mean_mbps for t in originals]))

    assert run("info", str(synth)) == 0
    out = capsys.readouterr().out
    assert "traces" in out and "3" in out and "p10 / p50 / p90" in out

    mm = tmp_path / "mm"
    with caplog.at_level(logging.INFO, logger="streambed.commands.traces"):
        assert run("convert", str(synth), str(mm), "--to", "mahimahi") == 0
    assert f"converted 3 traces from {synth} to {mm}" in caplog.text
    assert sorted(p.name for p in mm.iterdir()) == names
    for n in names:
        assert detect_format(mm / n) == "mahimahi"
        assert load_mahimahi(mm / n)[-1] == 40_000

    back = tmp_path / "back"
    assert run("convert", str(mm), str(back), "--to", "pensieve", "--bin-s", "0.5") == 0
    for original, n in zip(originals, names, strict=True):
        restored = load_pensieve(back / n)
        assert len(restored) == len(original)
        # The whole-trace mean is exact up to less than one 1500-byte packet.
        assert restored.mean_mbps == pytest.approx(original.mean_mbps, abs=12_000 / 40 / 1e6)

    assert run("info", str(mm / names[0]), "--json") == 0
    single = json.loads(capsys.readouterr().out)
    assert single["count"] == 1


def test_generate_is_reproducible(tmp_path: Path) -> None:
    for d in ("a", "b"):
        run(
            "generate",
            "--out",
            str(tmp_path / d),
            "--count",
            "2",
            "--seed",
            "3",
            "--duration-s",
            "10",
            "--states-mbps",
            "1",
            "2",
            "--outage-s",
            "1",
            "2",
        )
    for n in ("synth_000", "synth_001"):
        assert (tmp_path / "a" / n).read_text() == (tmp_path / "b" / n).read_text()
    values = load_pensieve(tmp_path / "a" / "synth_000").mbps
    assert values.max() < 2 * 2.5


def test_convert_single_files(tmp_path: Path) -> None:
    src = tmp_path / "p"
    src.write_text("0 12\n1 12\n2 3\n")
    assert run("convert", str(src), str(tmp_path / "m.txt"), "--to", "mahimahi") == 0
    ms = load_mahimahi(tmp_path / "m.txt")
    assert len(ms) == 1000 + 250
    outdir = tmp_path / "out"
    outdir.mkdir()
    assert run("convert", str(tmp_path / "m.txt"), str(outdir), "--to", "pensieve") == 0
    back = load_trace(outdir / "m.txt")
    np.testing.assert_allclose(back.mbps, [12.0, 12.0, 3.0])
    # mahimahi -> mahimahi copies the opportunities unchanged
    assert run("convert", str(tmp_path / "m.txt"), str(tmp_path / "m2"), "--to", "mahimahi") == 0
    np.testing.assert_array_equal(load_mahimahi(tmp_path / "m2"), ms)


def test_convert_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        run("convert", str(tmp_path / "nope"), str(tmp_path / "x"), "--to", "pensieve")
    d = tmp_path / "d"
    d.mkdir()
    (d / "t").write_text("0 1\n1 1\n")
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(TraceError, match="must be a directory"):
        run("convert", str(d), str(f), "--to", "mahimahi")
    (d / "bad").write_text("0 1\n1 -1\n")
    with pytest.raises(TraceError, match="line 2: negative bandwidth"):
        run("convert", str(d), str(tmp_path / "o"), "--to", "mahimahi")


def test_generate_and_info_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=">= 1"):
        run("generate", "--out", str(tmp_path / "g"), "--count", "0")
    with pytest.raises(TraceError, match="outage_prob"):
        run("generate", "--out", str(tmp_path / "g"), "--outage-prob", "1.5")
    with pytest.raises(TraceError, match="no such file"):
        run("info", str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TraceError, match="no trace files"):
        run("info", str(tmp_path / "empty"))


def test_no_subcommand_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run() == 2
    err = capsys.readouterr().err
    assert "convert" in err and "generate" in err and "info" in err


@pytest.mark.parametrize("sub", [[], ["convert"], ["generate"], ["info"]])
def test_help_exits_zero(sub: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["traces", *sub, "--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_bad_choice_is_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["traces", "convert", "a", "b", "--to", "csv"])
    assert exc.value.code == 2
