"""``streambed demo``, the README's first command, end to end at a small size: generated traces,
real ffmpeg content, an emulation of BBA, RobustMPC and the shipped PPO behind ``--link auto``
(netns as root, as in CI), the simulation of the same, and the HTML report."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from streambed.cli import main
from streambed.reports.sessionlog import read_jsonl

TRACES = 2
CHUNKS = 2  # --duration-s 8: two 4 s segments per level


@pytest.mark.slow
def test_demo_emulates_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--traces", str(TRACES), "--duration-s", "8"]
    assert main([*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == f"report: {out / 'report.html'}"

    video = json.loads((out / "content" / "video.json").read_text())
    assert len(video["bitrates_kbps"]) == 6
    emu = json.loads((out / "emulation" / "summary.json").read_text())
    planned = TRACES * 3
    assert emu["sessions"] == {"planned": planned, "done": planned, "failed": 0}
    assert set(emu["algorithms"]) == {"bba", "robustmpc", "ppo"}
    assert emu["link"] == ("netns" if os.geteuid() == 0 else "proxy")
    for chunks in (out / "emulation" / "sessions").glob("*/*/chunks.jsonl"):
        records = read_jsonl(chunks)
        assert len(records) == CHUNKS
        for r in records:  # the bytes played are the encoded segments'
            segment = out / "content" / f"chunk-{r.quality}-{r.chunk_index + 1:05d}.m4s"
            assert r.chunk_bytes == segment.stat().st_size
            assert segment.read_bytes()[4:8] in (b"styp", b"moof")
    info = json.loads(
        next((out / "emulation" / "sessions" / "ppo").glob("*/session.json")).read_text()
    )
    assert info["fallbacks"] == 0  # the service decided with the shipped model

    sim = json.loads((out / "simulation" / "summary.json").read_text())
    assert set(sim["algorithms"]) == {"bba", "robustmpc", "ppo", "optimal"}
    with open(out / "emulation" / "sim_vs_emu.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == planned
    page = (out / "report.html").read_text()
    for needle in ("Simulation versus emulation", "offline optimum", "robustmpc (emulation)"):
        assert needle in page, needle
    assert page.count('<img src="data:image/png;base64,') >= 3 + planned
