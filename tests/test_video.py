"""Tests of the video description: loading, saving, generation and error messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streambed.abr_service.video import (
    PENSIEVE_BITRATES_KBPS,
    Video,
    generate_video,
    load_video,
)
from streambed.core.errors import StreambedError, VideoError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ENVIVIO = SHARED / "data" / "video" / "envivio"

needs_envivio = pytest.mark.skipif(
    not ENVIVIO.is_dir(), reason=f"shared data not present ({ENVIVIO} is absent)"
)


def write_levels(directory: Path, rows: list[list[object]]) -> Path:
    """Write one ``video_size_<level>`` file per row, one value per line."""
    directory.mkdir(parents=True, exist_ok=True)
    for level, row in enumerate(rows):
        (directory / f"video_size_{level}").write_text("".join(f"{v}\n" for v in row))
    return directory


def ladder_rows(levels: int = 6, entries: int = 10) -> list[list[object]]:
    # Level l, chunk c: (l + 1) * 1000 + c bytes, increasing with the level.
    return [[(level + 1) * 1000 + c for c in range(entries)] for level in range(levels)]


def assert_same_video(a: Video, b: Video) -> None:
    assert a.name == b.name
    assert a.bitrates_kbps == b.bitrates_kbps
    assert a.chunk_s == b.chunk_s
    assert a.num_chunks == b.num_chunks
    assert a.chunk_bytes.shape == b.chunk_bytes.shape
    assert np.array_equal(a.chunk_bytes, b.chunk_bytes)


# ------------------------------------------------------------------------------------------
# Loading the real Pensieve video


@needs_envivio
def test_load_envivio_directory() -> None:
    video = load_video(ENVIVIO)
    assert video.num_levels == 6
    assert video.chunk_bytes.shape == (6, 49)
    assert video.num_chunks == 48  # 49 entries, the last is look-ahead only
    assert video.bitrates_kbps == (300, 750, 1200, 1850, 2850, 4300)
    assert video.chunk_s == 4.0
    assert video.name == "envivio"
    # Every value is the file's, in order (first and last entries of the extreme levels).
    for level in (0, 5):
        values = [int(x) for x in (ENVIVIO / f"video_size_{level}").read_text().split()]
        assert video.chunk_bytes[level].tolist() == values
    assert video.chunk_bytes[0, 0] == 181801
    assert video.chunk_bytes[5, -1] == 1433658
    # Past the last entry the look-ahead sizes are zeros.
    assert video.sizes_at(48).tolist() == video.chunk_bytes[:, 48].tolist()
    assert video.sizes_at(49).tolist() == [0] * 6


# ------------------------------------------------------------------------------------------
# Round trips


def test_json_round_trip(tmp_path: Path) -> None:
    video = generate_video(seed=3, num_chunks=20, name="roundtrip")
    written = video.save(tmp_path / "vid")
    assert written == tmp_path / "vid" / "video.json"
    data = json.loads(written.read_text())
    assert data["format"] == "streambed-video/1"
    assert set(data) == {"format", "name", "chunk_s", "bitrates_kbps", "num_chunks", "chunk_bytes"}
    # Loading the directory and the file gives the same video.
    assert_same_video(load_video(tmp_path / "vid"), video)
    assert_same_video(load_video(written), video)


def test_json_round_trip_to_explicit_file(tmp_path: Path) -> None:
    video = Video("small", (100, 200), 2.0, np.array([[10, 11, 12], [20, 21, 22]]), 2)
    path = video.save(tmp_path / "small.json")
    assert path == tmp_path / "small.json"
    loaded = load_video(path)
    assert_same_video(loaded, video)
    assert loaded.num_chunks == 2  # not the entry count (3)


def test_save_pensieve_round_trip(tmp_path: Path) -> None:
    video = generate_video(seed=5)  # 48 chunks + 1 look-ahead entry, Pensieve's ladder
    directory = video.save_pensieve(tmp_path / "pensieve_video")
    assert sorted(p.name for p in directory.iterdir()) == [f"video_size_{i}" for i in range(6)]
    lines = (directory / "video_size_2").read_text().splitlines()
    assert len(lines) == 49
    assert [int(x) for x in lines] == video.chunk_bytes[2].tolist()
    loaded = load_video(directory)
    assert loaded.bitrates_kbps == PENSIEVE_BITRATES_KBPS
    assert loaded.num_chunks == video.num_chunks == 48
    assert loaded.chunk_s == video.chunk_s
    assert np.array_equal(loaded.chunk_bytes, video.chunk_bytes)


def test_save_pensieve_round_trip_other_ladder(tmp_path: Path) -> None:
    video = generate_video(seed=1, num_chunks=10, bitrates_kbps=(200, 400, 800))
    directory = video.save_pensieve(tmp_path / "three")
    # A 3-level directory has no known ladder: the loader asks for one.
    with pytest.raises(VideoError, match="give bitrates_kbps"):
        load_video(directory)
    loaded = load_video(directory, bitrates_kbps=(200, 400, 800))
    assert loaded.bitrates_kbps == (200, 400, 800)
    assert np.array_equal(loaded.chunk_bytes, video.chunk_bytes)
    assert loaded.num_chunks == 10
    with pytest.raises(VideoError, match="3 video_size files but 2 bitrates"):
        load_video(directory, bitrates_kbps=(200, 400))


# ------------------------------------------------------------------------------------------
# generate_video


def test_generate_video_is_deterministic_per_seed() -> None:
    a = generate_video(seed=7)
    b = generate_video(seed=7)
    c = generate_video(seed=8)
    assert np.array_equal(a.chunk_bytes, b.chunk_bytes)
    assert not np.array_equal(a.chunk_bytes, c.chunk_bytes)
    assert a.chunk_bytes.shape == (6, 49)
    assert a.num_chunks == 48
    assert a.bitrates_kbps == PENSIEVE_BITRATES_KBPS
    assert a.chunk_s == 4.0


@pytest.mark.parametrize("seed", [0, 1, 2, 11])
def test_generate_video_mean_bitrates_and_monotone_sizes(seed: int) -> None:
    video = generate_video(seed=seed)
    # Mean bitrate of a level over the played chunks = mean size (bytes) * 8 / chunk_s / 1000.
    played = video.chunk_bytes[:, : video.num_chunks]
    mean_kbps = played.mean(axis=1) * 8 / video.chunk_s / 1000
    assert np.allclose(mean_kbps, video.bitrates, rtol=0.02)
    # Sizes never decrease with the level, chunk by chunk.
    assert (np.diff(video.chunk_bytes, axis=0) >= 0).all()
    # Variable bitrate: chunks of one level are not all the same size.
    assert video.chunk_bytes[0].std() > 0


def test_generate_video_custom_shape() -> None:
    video = generate_video(seed=2, num_chunks=12, bitrates_kbps=(500, 1000, 3000), chunk_s=2.0)
    assert video.chunk_bytes.shape == (3, 13)
    assert video.num_chunks == 12
    mean_kbps = video.chunk_bytes.mean(axis=1) * 8 / 2.0 / 1000
    assert np.allclose(mean_kbps, [500, 1000, 3000], rtol=0.02)


# ------------------------------------------------------------------------------------------
# Errors


def test_levels_with_different_chunk_counts(tmp_path: Path) -> None:
    rows = ladder_rows(entries=10)
    rows[4] = rows[4][:9]  # video_size_4 one line short
    directory = write_levels(tmp_path / "uneven", rows)
    with pytest.raises(VideoError) as info:
        load_video(directory)
    message = str(info.value)
    assert str(directory) in message
    assert "different chunk counts" in message
    assert "video_size_4: 9" in message
    assert "video_size_0: 10" in message
    assert "\n" not in message


def test_sizes_decreasing_with_bitrate(tmp_path: Path) -> None:
    rows = ladder_rows(entries=10)
    rows[3][7] = 100  # level 3 chunk 7 smaller than level 2's 3007 bytes
    directory = write_levels(tmp_path / "decreasing", rows)
    with pytest.raises(VideoError) as info:
        load_video(directory)
    message = str(info.value)
    assert str(directory) in message
    assert "chunk 7" in message
    assert "100 bytes at level 3" in message
    assert "3007 bytes at level 2" in message


def test_non_integer_line(tmp_path: Path) -> None:
    rows = ladder_rows(entries=10)
    rows[2][4] = "12.5"  # line 5 of video_size_2
    directory = write_levels(tmp_path / "fraction", rows)
    with pytest.raises(VideoError) as info:
        load_video(directory)
    message = str(info.value)
    assert str(directory / "video_size_2") in message
    assert "line 5" in message
    assert "'12.5'" in message


def test_non_positive_size(tmp_path: Path) -> None:
    rows = ladder_rows(entries=10)
    rows[0][2] = 0  # line 3 of video_size_0
    directory = write_levels(tmp_path / "zero", rows)
    with pytest.raises(VideoError, match=r"video_size_0: line 3: chunk size 0 is not positive"):
        load_video(directory)


def test_empty_file(tmp_path: Path) -> None:
    directory = write_levels(tmp_path / "empty", ladder_rows(entries=10))
    (directory / "video_size_1").write_text("\n\n")
    with pytest.raises(VideoError) as info:
        load_video(directory)
    assert str(directory / "video_size_1") in str(info.value)
    assert "empty file" in str(info.value)


@pytest.mark.parametrize("missing", ["bitrates_kbps", "chunk_s", "chunk_bytes"])
def test_json_missing_field(tmp_path: Path, missing: str) -> None:
    data = generate_video(seed=0, num_chunks=4).to_json()
    del data[missing]
    path = tmp_path / "video.json"
    path.write_text(json.dumps(data))
    with pytest.raises(VideoError) as info:
        load_video(path)
    assert str(path) in str(info.value)
    assert f"missing field '{missing}'" in str(info.value)


def test_json_non_increasing_bitrates(tmp_path: Path) -> None:
    data = generate_video(seed=0, num_chunks=4, bitrates_kbps=(300, 750, 1200)).to_json()
    data["bitrates_kbps"] = [300, 750, 750]
    path = tmp_path / "video.json"
    path.write_text(json.dumps(data))
    with pytest.raises(VideoError) as info:
        load_video(path)
    assert str(path) in str(info.value)
    assert "must increase strictly" in str(info.value)


def test_json_uneven_levels_and_bad_json(tmp_path: Path) -> None:
    uneven = tmp_path / "uneven.json"
    uneven.write_text(
        json.dumps({"bitrates_kbps": [100, 200], "chunk_s": 4, "chunk_bytes": [[1, 2, 3], [4, 5]]})
    )
    with pytest.raises(VideoError, match=r"different chunk counts: \[3, 2\]"):
        load_video(uneven)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(VideoError, match="not valid JSON"):
        load_video(broken)


def test_directory_that_is_not_a_video(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello\n")
    with pytest.raises(VideoError) as info:
        load_video(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "not a video description" in str(info.value)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="no such file or directory"):
        load_video(tmp_path / "nowhere")


def test_mpd_path_gives_clear_error(tmp_path: Path) -> None:
    mpd = tmp_path / "manifest.mpd"
    mpd.write_text('<?xml version="1.0"?><MPD></MPD>\n')
    with pytest.raises(VideoError) as info:
        load_video(mpd)
    message = str(info.value)
    assert str(mpd) in message
    assert "MPD" in message
    assert "video.json" in message
    assert isinstance(info.value, StreambedError)


def test_video_validation() -> None:
    sizes = np.array([[10, 10], [20, 20]])
    with pytest.raises(VideoError, match="at least 2 levels"):
        Video("v", (100,), 4.0, sizes[:1], 1)
    with pytest.raises(VideoError, match="must increase strictly"):
        Video("v", (200, 100), 4.0, sizes, 1)
    with pytest.raises(VideoError, match="chunk_s must be positive"):
        Video("v", (100, 200), 0.0, sizes, 1)
    with pytest.raises(VideoError, match="num_chunks=3"):
        Video("v", (100, 200), 4.0, sizes, 3)
    with pytest.raises(VideoError, match="expected \\(3, chunks\\)"):
        Video("v", (100, 200, 300), 4.0, sizes, 1)


@pytest.mark.parametrize("gone", [0, 2, 4])
def test_missing_level_is_named(tmp_path: Path, gone: int) -> None:
    # A hole in video_size_0..5 used to load as a shorter ladder ("3 levels; ... give
    # bitrates_kbps") or as no video at all: the message must name the file that is missing.
    directory = write_levels(tmp_path / "holey", ladder_rows(levels=6))
    (directory / f"video_size_{gone}").unlink()
    with pytest.raises(VideoError) as info:
        load_video(directory)
    message = str(info.value)
    assert f"video_size_{gone} missing" in message
    assert str(directory) in message
    assert "give bitrates_kbps" not in message
