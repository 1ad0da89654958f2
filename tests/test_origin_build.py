"""Building origin content (synthetic size-exact and real ffmpeg encodes) and reading MPDs."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streambed.abr_service.video import Video, generate_video, load_video
from streambed.cli import main
from streambed.core.errors import ContentError
from streambed.server.build import (
    _box_header,
    build_encoded,
    build_from_description,
    build_synthetic,
    default_resolutions,
    verify_content,
)
from streambed.server.mpd import (
    MPD_NAME,
    build_mpd,
    expand_template,
    format_iso_duration,
    parse_iso_duration,
    parse_mpd,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ENVIVIO = SHARED / "data" / "video" / "envivio"


def box_types(data: bytes) -> list[bytes]:
    """Top-level ISO BMFF box types of ``data``; asserts the boxes tile it exactly."""
    types, offset = [], 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        assert size >= 8
        types.append(kind)
        offset += size
    assert offset == len(data)
    return types


# ------------------------------------------------------------------------------------------
# Synthetic content


def test_synthetic_sizes_are_exact(tmp_path: Path) -> None:
    video = generate_video(seed=5, num_chunks=6, bitrates_kbps=(200, 500, 900, 1600))
    out = build_synthetic(video, tmp_path / "c")
    manifest, loaded = verify_content(out)
    assert loaded.to_json() == video.to_json()  # look-ahead entry kept
    assert manifest.bitrates_kbps == (200, 500, 900, 1600)
    assert manifest.num_segments == 6 and manifest.segment_duration_s == 4.0
    for level in range(4):
        assert box_types((out / f"init-{level}.mp4").read_bytes()) == [b"ftyp", b"free"]
        for chunk in range(6):
            data = (out / f"chunk-{level}-{chunk + 1:05d}.m4s").read_bytes()
            assert len(data) == video.chunk_bytes[level, chunk]
            assert box_types(data) == [b"styp", b"mdat"]
    assert not (out / "chunk-0-00007.m4s").exists()  # the look-ahead entry has no segment
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no staging left over
    # The decision service takes the directory or its MPD.
    assert load_video(out / MPD_NAME).to_json() == video.to_json()


@pytest.mark.skipif(not ENVIVIO.is_dir(), reason=f"shared data absent ({ENVIVIO})")
def test_envivio_segments_have_envivio_sizes(tmp_path: Path) -> None:
    out = build_from_description(ENVIVIO, tmp_path / "envivio")
    source = load_video(ENVIVIO)
    for level in range(6):
        sizes = (ENVIVIO / f"video_size_{level}").read_text().split()
        for chunk in range(48):
            path = out / f"chunk-{level}-{chunk + 1:05d}.m4s"
            assert path.stat().st_size == int(sizes[chunk])
    manifest, video = verify_content(out)
    assert manifest.bitrates_kbps == (300, 750, 1200, 1850, 2850, 4300)
    assert manifest.num_segments == 48 and manifest.duration_s == 192.0
    assert np.array_equal(video.chunk_bytes, source.chunk_bytes)


def test_tiny_and_huge_segments(tmp_path: Path) -> None:
    sizes = np.array([[1, 7, 8, 31, 32, 33], [2, 9, 9, 40, 40, 50]])
    out = build_synthetic(Video("tiny", (1, 2), 2.0, sizes, 6), tmp_path / "c")
    verify_content(out)
    assert box_types((out / "chunk-0-00003.m4s").read_bytes()) == [b"free"]
    assert box_types((out / "chunk-0-00005.m4s").read_bytes()) == [b"styp", b"mdat"]
    header = _box_header(b"mdat", 2**32 + 5)  # over 4 GiB: the 64-bit size form
    assert header == struct.pack(">I4sQ", 1, b"mdat", 2**32 + 5)


def test_description_flags_must_agree(tmp_path: Path) -> None:
    generate_video(num_chunks=3, bitrates_kbps=(300, 750)).save(tmp_path / "v")
    with pytest.raises(ContentError, match=r"its ladder is \[300, 750\] kbps"):
        build_from_description(tmp_path / "v", tmp_path / "c", ladder_kbps=[100, 200])
    with pytest.raises(ContentError, match="its chunks last 4.0 s, --chunk-s says 2"):
        build_from_description(tmp_path / "v", tmp_path / "c", chunk_s=2)
    levels3 = tmp_path / "p"
    Video("p", (1, 2, 3), 4.0, np.array([[5, 5], [6, 6], [7, 7]]), 1).save_pensieve(levels3)
    out = build_from_description(levels3, tmp_path / "c", ladder_kbps=[100, 200, 400])
    assert verify_content(out)[1].bitrates_kbps == (100, 200, 400)


def test_output_directory_rules(tmp_path: Path) -> None:
    video = generate_video(num_chunks=2, bitrates_kbps=(300, 750))
    other = tmp_path / "data"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    with pytest.raises(ContentError, match="not empty; pass --force"):
        build_synthetic(video, other)
    with pytest.raises(ContentError, match="not origin content"):
        build_synthetic(video, other, force=True)
    assert (other / "precious.txt").read_text() == "keep"
    out = build_synthetic(video, tmp_path / "c")
    bigger = generate_video(num_chunks=3, bitrates_kbps=(300, 750, 1200))
    build_synthetic(bigger, out, force=True)
    assert verify_content(out)[0].num_levels == 3
    (tmp_path / "empty").mkdir()
    build_synthetic(video, tmp_path / "empty")  # an empty directory is fine


def test_rebuild_into_a_mount_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A container's volume is a mount point: it cannot be removed or renamed onto, so the
    build is staged inside it and its entries swapped (the compose stack's `origin`)."""
    volume = tmp_path / "volume"
    volume.mkdir()
    monkeypatch.setattr(shutil, "rmtree", guard_rmtree(volume, shutil.rmtree))
    build_synthetic(generate_video(num_chunks=2, bitrates_kbps=(300, 750)), volume)
    (volume / ".building-leftover").mkdir()  # from a build that was killed
    build_synthetic(
        generate_video(num_chunks=3, bitrates_kbps=(300, 750, 1200)), volume, force=True
    )
    assert volume.is_dir() and verify_content(volume)[0].num_levels == 3
    assert not any(p.name.startswith(".building-") for p in volume.iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["volume"]  # nothing staged beside it


def guard_rmtree(mount: Path, rmtree: Any) -> Any:
    def guarded(path: Any, *args: Any, **kwargs: Any) -> None:
        assert Path(path) != mount, "removed the mount point itself"
        rmtree(path, *args, **kwargs)

    return guarded


def test_verify_content_names_mismatches(tmp_path: Path) -> None:
    out = build_synthetic(generate_video(num_chunks=2, bitrates_kbps=(300, 750)), tmp_path / "c")
    with open(out / "chunk-1-00002.m4s", "ab") as file:
        file.write(b"x")
    with pytest.raises(ContentError, match=r"chunk-1-00002.m4s is \d+ bytes, video.json says"):
        verify_content(out)
    (out / "init-0.mp4").unlink()
    with pytest.raises(ContentError, match="init-0.mp4 missing"):
        verify_content(out)


# ------------------------------------------------------------------------------------------
# MPD parsing


def test_mpd_round_trip_and_urls() -> None:
    text = build_mpd((300, 750, 1200), 4.0, 48, resolutions=[(256, 144), (512, 288), (640, 360)])
    m = parse_mpd(text, "http://origin:8080/videos/a/manifest.mpd")
    assert m.bitrates_kbps == (300, 750, 1200) and m.num_segments == 48
    assert m.duration_s == 192.0 and m.segment_duration_s == 4.0
    assert [(r.width, r.height) for r in m.representations][1] == (512, 288)
    assert m.init_url(2) == "http://origin:8080/videos/a/init-2.mp4"
    assert m.segment_url(0, 1) == "http://origin:8080/videos/a/chunk-0-00001.m4s"
    assert m.chunk_url(1, 47) == "http://origin:8080/videos/a/chunk-1-00048.m4s"
    with pytest.raises(ContentError, match="chunk 48 outside 0..47"):
        m.chunk_url(0, 48)
    with pytest.raises(ContentError, match="level 3 outside 0..2"):
        m.init_url(3)


def test_mpd_inheritance_base_urls_and_order() -> None:
    text = """<?xml version="1.0"?>
<MPD type="static" mediaPresentationDuration="PT1M0.5S">
 <BaseURL>http://cdn.example/root/</BaseURL>
 <Period>
  <AdaptationSet mimeType="audio/mp4"><Representation id="a" bandwidth="64000"/></AdaptationSet>
  <AdaptationSet mimeType="video/mp4" width="640" height="360">
   <BaseURL>video/</BaseURL>
   <SegmentTemplate timescale="90000" duration="180000" media="$RepresentationID$/$Bandwidth$-$Number%03d$.m4s"
     initialization="$RepresentationID$/init.mp4" startNumber="0"/>
   <Representation id="hi" bandwidth="2000000"><BaseURL>/abs/</BaseURL></Representation>
   <Representation id="lo" bandwidth="500000">
    <SegmentTemplate media="lo-$Number$-$$.m4s"/>
   </Representation>
  </AdaptationSet>
 </Period>
</MPD>"""
    m = parse_mpd(text, "http://origin/x/manifest.mpd")
    assert [r.id for r in m.representations] == ["lo", "hi"]  # ascending bandwidth
    assert m.segment_duration_s == 2.0 and m.num_segments == 31  # ceil(60.5 / 2)
    assert m.chunk_url(0, 0) == "http://cdn.example/root/video/lo-0-$.m4s"
    assert m.init_url(0) == "http://cdn.example/root/video/lo/init.mp4"
    assert m.chunk_url(1, 2) == "http://cdn.example/abs/hi/2000000-002.m4s"
    assert m.representations[0].width == 640


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<MPD", "not well-formed XML"),
        ("<Foo/>", "root element is <Foo>"),
        ('<MPD type="dynamic"><Period/></MPD>', "only static MPDs"),
        ('<MPD mediaPresentationDuration="PT4S"><Period/><Period/></MPD>', "2 Periods"),
        ('<MPD mediaPresentationDuration="PT4S"><Period/></MPD>', "0 video AdaptationSets"),
        ('<MPD mediaPresentationDuration="4 s"><Period/></MPD>', "not an ISO 8601 duration"),
        (
            '<MPD mediaPresentationDuration="PT8S"><Period><AdaptationSet contentType="video">'
            '<SegmentTemplate media="$Time$.m4s" initialization="i.mp4" duration="4"/>'
            '<Representation id="0" bandwidth="1"/></AdaptationSet></Period></MPD>',
            r"\$Time\$",
        ),
        (
            '<MPD mediaPresentationDuration="PT8S"><Period><AdaptationSet contentType="video">'
            '<Representation id="0" bandwidth="1"><SegmentTemplate media="a" initialization="b">'
            "<SegmentTimeline/></SegmentTemplate></Representation></AdaptationSet></Period></MPD>",
            "SegmentTimeline is not supported",
        ),
        (
            '<MPD mediaPresentationDuration="PT8S"><Period><AdaptationSet contentType="video">'
            '<SegmentTemplate media="a" initialization="b" duration="4"/>'
            '<Representation id="0" bandwidth="fast"/></AdaptationSet></Period></MPD>',
            "bandwidth='fast' is not an integer",
        ),
    ],
)
def test_mpd_errors_are_named(text: str, message: str) -> None:
    with pytest.raises(ContentError, match=message):
        parse_mpd(text, "http://o/m.mpd")


def test_iso_durations_and_templates() -> None:
    assert parse_iso_duration("PT192.0S") == 192.0
    assert parse_iso_duration("PT1H2M3.5S") == 3723.5
    assert parse_iso_duration("P1DT1S") == 86401.0
    for bad in ("P", "PT", "P1Y", "192", "PT-4S", "P1DT"):
        with pytest.raises(ContentError):
            parse_iso_duration(bad)
    assert format_iso_duration(192) == "PT192.0S" and format_iso_duration(12.5) == "PT12.500S"
    assert expand_template("c-$RepresentationID$-$Number%05d$.m4s", "3", 1, 42) == "c-3-00042.m4s"
    assert expand_template("$Bandwidth%08d$$$", "x", 1234, 0) == "00001234$"


# ------------------------------------------------------------------------------------------
# Real encodes with ffmpeg


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("enc") / "c"
    return build_encoded(
        out,
        duration_s=12,
        ladder_kbps=(100, 200, 400),
        resolutions=[(128, 72), (192, 108), (256, 144)],
        fps=12,
        vmaf=False,
    )


def ffprobe(path: Path) -> dict[str, object]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_ffmpeg_build(encoded: Path, tmp_path: Path) -> None:
    mpd = (encoded / MPD_NAME).read_text()
    manifest = parse_mpd(mpd, "http://o:1/c/manifest.mpd")
    assert manifest.bitrates_kbps == (100, 200, 400)
    assert [r.id for r in manifest.representations] == ["0", "1", "2"]
    assert [(r.width, r.height) for r in manifest.representations] == [
        (128, 72),
        (192, 108),
        (256, 144),
    ]
    assert manifest.num_segments == 3 and manifest.segment_duration_s == 4.0
    assert manifest.chunk_url(2, 2) == "http://o:1/c/chunk-2-00003.m4s"
    video = load_video(encoded / "video.json")
    assert video.chunk_bytes.shape == (3, 3) and video.num_chunks == 3
    for level in range(3):
        files = sorted(encoded.glob(f"chunk-{level}-*.m4s"))
        assert [f.name for f in files] == [f"chunk-{level}-{n:05d}.m4s" for n in (1, 2, 3)]
        sizes = [f.stat().st_size for f in files]
        assert sizes == video.chunk_bytes[level].tolist()
        # CBR: each segment within 25% of bitrate x duration
        target = video.bitrates_kbps[level] * 1000 / 8 * 4
        assert all(0.75 * target < s < 1.25 * target for s in sizes), (sizes, target)
    verify_content(encoded)
    joined = tmp_path / "joined.mp4"
    joined.write_bytes(
        (encoded / "init-1.mp4").read_bytes() + (encoded / "chunk-1-00002.m4s").read_bytes()
    )
    probe = ffprobe(joined)
    streams = probe["streams"]
    assert isinstance(streams, list) and len(streams) == 1
    assert streams[0]["codec_name"] == "h264"
    assert (streams[0]["width"], streams[0]["height"]) == (192, 108)


def test_ffmpeg_build_from_source(tmp_path: Path) -> None:
    """A 4:3 file with audio, 9 s: cut to 4 chunks of 2 s, letterboxed to 16:9, audio dropped."""
    src = tmp_path / "src.mp4"
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
            "-f", "lavfi", "-i", "testsrc=size=160x120:rate=15:duration=9",
            "-f", "lavfi", "-i", "sine=duration=9",
            "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", str(src),
        ],
        check=True,
    )  # fmt: skip
    out = build_encoded(
        tmp_path / "c",
        source=src,
        ladder_kbps=(80, 160),
        chunk_s=2,
        resolutions=[(128, 72), (256, 144)],
        preset="ultrafast",
    )
    manifest, video = verify_content(out)
    assert manifest.num_segments == 4 and video.num_chunks == 4 and video.chunk_s == 2.0
    assert video.name == "src"
    joined = tmp_path / "joined.mp4"
    joined.write_bytes((out / "init-0.mp4").read_bytes() + (out / "chunk-0-00004.m4s").read_bytes())
    streams = ffprobe(joined)["streams"]
    assert isinstance(streams, list) and [s["codec_type"] for s in streams] == ["video"]
    with pytest.raises(ContentError, match="shorter than 20"):
        build_encoded(tmp_path / "d", source=src, duration_s=20, ladder_kbps=(80, 160))


def test_ffmpeg_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ContentError, match="mix aspect ratios"):
        build_encoded(tmp_path / "a", ladder_kbps=(1, 2), resolutions=[(256, 144), (320, 240)])
    with pytest.raises(ContentError, match="whole number of 4.0 s chunks"):
        build_encoded(tmp_path / "a", duration_s=10, ladder_kbps=(1, 2))
    failed = tmp_path / "failed"
    with pytest.raises(ContentError, match=r"(?s)ffmpeg failed \(exit status \d+\).*nosuch"):
        build_encoded(failed, duration_s=4, ladder_kbps=(100, 200), preset="nosuch")
    assert not failed.exists() and not list(tmp_path.glob(".*building*"))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(ContentError, match="ffmpeg not found on PATH: install Debian's ffmpeg"):
        build_encoded(tmp_path / "b", duration_s=4, ladder_kbps=(100, 200))


def test_default_resolutions_are_16_9() -> None:
    sizes = default_resolutions((300, 750, 1200, 1850, 2850, 4300))
    assert sizes[0] == (256, 144) and sizes[-1] == (1280, 720)
    assert all(w * 9 == h * 16 for w, h in sizes)
    assert sizes == sorted(sizes)


# ------------------------------------------------------------------------------------------
# The CLI


def test_cli_build_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate_video(num_chunks=2, bitrates_kbps=(300, 750)).save(tmp_path / "v")
    out = tmp_path / "c"
    assert main(["origin", "build", "--out", str(out), "--from-video", str(tmp_path / "v")]) == 0
    assert f"streambed origin --content {out}" in capsys.readouterr().out
    verify_content(out)
    argv = ["origin", "build", "--out", str(tmp_path / "d"), "--from-video", str(tmp_path / "v")]
    assert main([*argv, "--duration-s", "8"]) == 2
    assert "--duration-s applies to encoded content" in capsys.readouterr().err
    assert main(["origin", "build", "--out", str(out), "--from-video", str(tmp_path / "v")]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main(["origin"]) == 2
    assert "--content DIR is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["origin", "build", "--out", "x", "--ladder-kbps", "750,300"])
    assert info.value.code == 2
    assert "strictly increasing" in capsys.readouterr().err


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, flags in (
        (["origin", "--help"], ("--content", "--host", "--port", "build")),
        (
            ["origin", "build", "--help"],
            ("--out", "--from-video", "--source", "--duration-s", "--ladder-kbps", "--chunk-s"),
        ),
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
        text = capsys.readouterr().out
        assert all(flag in text for flag in flags), text


def test_ffprobe_available() -> None:
    assert shutil.which("ffmpeg") and shutil.which("ffprobe")
