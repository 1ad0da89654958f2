"""Per-segment SSIM and VMAF measured at `streambed origin build` (server/quality.py), and the
Video fields that carry them (abr_service/video.py). Real ffmpeg on tiny content."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from streambed.abr_service.video import SSIM_DB_CAP, Video, generate_video, load_video
from streambed.cli import main
from streambed.core.errors import ContentError, VideoError
from streambed.server.build import build_encoded, build_synthetic
from streambed.server.quality import _segment_means, find_vmaf_ffmpeg, ssim_to_db

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs Debian's ffmpeg")

# 3 levels x 4 segments of 1 s at 12 frame/s: a build and its measurement take about a second.
TINY = {
    "duration_s": 4,
    "chunk_s": 1,
    "ladder_kbps": (60, 150, 400),
    "resolutions": [(128, 72), (192, 108), (256, 144)],
    "fps": 12,
}
TINY_FLAGS = [
    "--duration-s=4",
    "--chunk-s=1",
    "--ladder-kbps=60,150,400",
    "--resolutions=128x72,192x108,256x144",
    "--fps=12",
    "--no-progress",
]


def test_ssim_to_db_is_puffers_convention_with_a_cap() -> None:
    # -10 log10(1 - SSIM): 1 - 0.99 = 1e-2 -> 20 dB, 1e-3 -> 30 dB, 0.9 -> 10 dB, 0 -> 0 dB
    got = ssim_to_db(np.array([0.99, 0.999, 0.9, 0.0]))
    np.testing.assert_allclose(got, [20.0, 30.0, 10.0, 0.0], atol=1e-9)
    # 1 - SSIM is floored at 1e-6: equal pictures read 60 dB, not infinity
    assert SSIM_DB_CAP == 60.0
    np.testing.assert_allclose(ssim_to_db(np.array([1.0, 0.9999999, 0.999999])), [60.0] * 3)
    assert float(ssim_to_db(0.99999)) == pytest.approx(50.0)  # under the cap: not clipped


def test_frames_map_to_segments_by_time() -> None:
    # 2.5 frames per segment (e.g. 2.5 frame/s, 1 s chunks): frame n in floor(n / 2.5),
    # so segments hold frames {0,1,2}, {3,4}, {5,6,7}, {8,9}; the 11th frame (rounding at
    # the end) counts in the last segment
    frames = np.arange(1.0, 12.0)  # 1..11
    means = _segment_means(frames, 2.5, 4, "test")
    np.testing.assert_allclose(means, [2.0, 4.5, 7.0, (9 + 10 + 11) / 3])
    with pytest.raises(ContentError, match="7 frames measured, 10 expected: segment 3 has none"):
        _segment_means(np.ones(7), 2.5, 4, "SSIM of level 0")
    with pytest.raises(ContentError, match="14 frames measured, 10 expected"):  # wrong rate
        _segment_means(np.ones(14), 2.5, 4, "SSIM of level 0")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quality") / "content"
    return build_encoded(out, **TINY, progress=False)  # type: ignore[arg-type]


def test_build_stores_per_segment_ssim(built: Path, tmp_path: Path) -> None:
    video = load_video(built)
    ssim = video.quality_table("ssim_db")
    assert ssim.shape == (3, 4) and ssim.dtype == np.float64
    assert np.isfinite(ssim).all() and (ssim > 0).all() and (ssim <= SSIM_DB_CAP).all()
    # the 400 kbps 256x144 level (the reference's own size) beats 60 kbps at 128x72 upscaled,
    # on average and in every segment
    assert ssim[2].mean() > ssim[1].mean() > ssim[0].mean()
    assert (ssim[2] > ssim[0]).all()
    # round trip: save and load keep the tables, and the JSON carries them as lists of lists
    again = load_video(video.save(tmp_path / "copy"))
    np.testing.assert_array_equal(again.quality_table("ssim_db"), ssim)
    data = json.loads((built / "video.json").read_text())
    assert len(data["ssim_db"]) == 3 and all(len(row) == 4 for row in data["ssim_db"])
    assert not list(built.glob(".quality-*"))  # the filters' logs are not left to be served


def test_build_stores_per_segment_vmaf(built: Path) -> None:
    # The dev install has the [vmaf] extra (imageio-ffmpeg, whose ffmpeg has libvmaf): this
    # runs there, and skips only where the extra is not installed.
    pytest.importorskip("imageio_ffmpeg")
    assert find_vmaf_ffmpeg() is not None, "imageio-ffmpeg's binary lists no libvmaf filter"
    vmaf = load_video(built).quality_table("vmaf")
    assert vmaf.shape == (3, 4)
    assert (vmaf >= 0).all() and (vmaf <= 100).all()
    assert vmaf[2].mean() > vmaf[1].mean() > vmaf[0].mean()
    assert vmaf[2].mean() > 90  # the top level at the reference's size is nearly transparent


def test_cli_no_quality_leaves_the_tables_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c"
    assert main(["origin", "build", "--out", str(out), *TINY_FLAGS, "--no-quality"]) == 0
    data = json.loads((out / "video.json").read_text())
    assert "ssim_db" not in data and "vmaf" not in data
    video = load_video(out)
    assert video.ssim_db is None and video.vmaf is None
    with pytest.raises(VideoError, match=r"no per-segment SSIM measurements \(ssim_db\)"):
        video.quality_table("ssim_db")


def test_cli_no_vmaf_measures_ssim_only(tmp_path: Path) -> None:
    out = tmp_path / "c"
    assert main(["origin", "build", "--out", str(out), *TINY_FLAGS, "--no-vmaf"]) == 0
    video = load_video(out)
    assert video.ssim_db is not None and video.ssim_db.shape == (3, 4)
    assert video.vmaf is None


def test_bad_vmaf_ffmpeg_is_one_line_before_any_encode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c"
    argv = ["origin", "build", "--out", str(out), *TINY_FLAGS]
    assert main([*argv, "--vmaf-ffmpeg", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"streambed origin: error: --vmaf-ffmpeg {tmp_path / 'nope'}: no such executable"
    # Debian's ffmpeg runs but has no libvmaf
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None
    if find_vmaf_ffmpeg(None) != ffmpeg and "libvmaf" not in _filters(ffmpeg):
        assert main([*argv, "--vmaf-ffmpeg", ffmpeg]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "has no libvmaf filter" in err
    assert main([*argv, "--vmaf-ffmpeg", ffmpeg, "--no-quality"]) == 2
    assert "--no-quality skips it" in capsys.readouterr().err
    assert not out.exists()  # refused before encoding anything


def _filters(ffmpeg: str) -> str:
    return subprocess.run(
        [ffmpeg, "-hide_banner", "-filters"], capture_output=True, text=True
    ).stdout


def test_source_file_at_its_own_frame_rate(tmp_path: Path) -> None:
    # a 15 frame/s file, encoded at its own rate (no --fps): frames per segment come from
    # ffprobe, 15 per 1 s segment
    source = tmp_path / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=15:duration=3"]
        + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(source)],
        check=True,
    )
    out = build_encoded(
        tmp_path / "c",
        source=source,
        chunk_s=1,
        ladder_kbps=(60, 400),
        resolutions=[(128, 72), (256, 144)],
        vmaf=False,
        progress=False,
    )
    ssim = load_video(out).quality_table("ssim_db")
    assert ssim.shape == (2, 3) and (ssim[1] > ssim[0]).all()


def test_synthetic_content_has_no_measurements(tmp_path: Path) -> None:
    video = generate_video(num_chunks=3, bitrates_kbps=(100, 200))
    loaded = load_video(build_synthetic(video, tmp_path / "s"))
    assert loaded.ssim_db is None and loaded.vmaf is None
    with pytest.raises(VideoError) as info:
        loaded.quality_table("vmaf")
    assert str(info.value) == (
        "video 'synthetic-vbr' has no per-segment VMAF measurements (vmaf): build real content "
        "with `streambed origin build` (ffmpeg measures SSIM; VMAF needs the [vmaf] extra)"
    )
    with pytest.raises(VideoError, match="unknown quality measurement 'psnr'"):
        loaded.quality_table("psnr")


def test_bad_tables_are_one_line_naming_the_field(tmp_path: Path) -> None:
    video = generate_video(num_chunks=3, bitrates_kbps=(100, 200))
    with pytest.raises(VideoError, match=r"field 'ssim_db' has shape \(2, 2\), expected \(2, 3\)"):
        dataclasses.replace(video, ssim_db=[[1, 2], [3, 4]])
    with pytest.raises(VideoError, match="field 'ssim_db': level 1 chunk 2 is inf"):
        dataclasses.replace(video, ssim_db=[[1, 2, 3], [4, 5, float("inf")]])
    ok = dataclasses.replace(video, ssim_db=[[1, 2, 3], [4, 5, 6]])
    assert ok.ssim_db is not None and not ok.ssim_db.flags.writeable
    assert ok == video  # measurements do not change which video it is
    data = ok.to_json()
    data["vmaf"] = [[50, 60, 70], [80, 90, 120]]
    path = tmp_path / "video.json"
    path.write_text(json.dumps(data))
    with pytest.raises(VideoError) as info:
        load_video(path)
    assert str(info.value) == (
        f"{path}: video 'synthetic-vbr': field 'vmaf': level 1 chunk 2 is 120.0, expected a "
        "finite number >= 0 and <= 100"
    )


def test_video_fields_default_to_none() -> None:
    video = Video("v", (100, 200), 1.0, np.array([[10, 10], [20, 20]]), 2)
    assert video.ssim_db is None and video.vmaf is None
    assert "ssim_db" not in video.to_json() and "vmaf" not in video.to_json()
