"""DASH MPDs of the shape Streambed's origin serves: write them and read them back.

The shape: a static presentation, one Period, one video AdaptationSet whose Representations
share a SegmentTemplate with ``$Number$`` addressing (no SegmentTimeline) and one fixed segment
duration. Level ``i`` is the ``i``-th Representation in ascending bandwidth; the origin's own
content also uses ``i`` as the Representation id. Both the origin's content builder and the
player use this module, so the naming below is defined once.

Parsing uses ``xml.etree``: MPDs come from our own origin or a trusted one (the Expat bundled
with Python >= 3.11 refuses entity expansion attacks).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin

from streambed.core.errors import ContentError

MPD_NAME = "manifest.mpd"
# The init segment is ftyp+moov, a (media-less) MP4 file, hence .mp4 and video/mp4; media
# segments are ISO BMFF segments (styp/moof/mdat), hence .m4s and video/iso.segment.
INIT_TEMPLATE = "init-$RepresentationID$.mp4"
MEDIA_TEMPLATE = "chunk-$RepresentationID$-$Number%05d$.m4s"
START_NUMBER = 1
MPD_NAMESPACE = "urn:mpeg:dash:schema:mpd:2011"

_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d*)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d*)?)H)?(?:(?P<m>\d+(?:\.\d*)?)M)?(?:(?P<s>\d+(?:\.\d*)?)S)?)?$"
)
_IDENTIFIER = re.compile(r"\$(RepresentationID|Number|Bandwidth|Time)(%0(\d+)d)?\$|\$\$")


def parse_iso_duration(text: str) -> float:
    """Seconds in an ISO 8601 duration as MPDs use it (``PT1M2.5S``; no years or months)."""
    match = _DURATION.match(text.strip())
    if not match or text.strip() in ("P", "PT") or text.strip().endswith("T"):
        raise ContentError(f"MPD: {text!r} is not an ISO 8601 duration like 'PT192.0S'")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


def format_iso_duration(seconds: float) -> str:
    """``PT<seconds>S`` with millisecond precision (what ffmpeg writes, minus hours)."""
    return f"PT{seconds:.3f}S".replace(".000S", ".0S")


def expand_template(template: str, representation_id: str, bandwidth_bps: int, number: int) -> str:
    """Substitute a SegmentTemplate's identifiers (``$Number%05d$`` pads with zeros)."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:  # "$$" is a literal dollar
            return "$"
        if name == "RepresentationID":
            if match.group(2):
                raise ContentError(
                    f"MPD: template {template!r}: $RepresentationID$ takes no format"
                )
            return representation_id
        if name == "Time":
            raise ContentError(
                f"MPD: template {template!r} uses $Time$ (SegmentTimeline), which is not supported"
            )
        value = number if name == "Number" else bandwidth_bps
        width = int(match.group(3)) if match.group(3) else 0
        return f"{value:0{width}d}"

    return _IDENTIFIER.sub(substitute, template)


@dataclass(frozen=True)
class Representation:
    """One bitrate level of the MPD.

    ``init_template`` and ``media_template`` are the SegmentTemplate's ``initialization`` and
    ``media`` attributes as written; ``base_url`` is the absolute URL they resolve against.
    ``segment_duration_s`` = SegmentTemplate ``duration`` / ``timescale``.
    """

    id: str
    bandwidth_bps: int
    width: int | None
    height: int | None
    codecs: str | None
    mime_type: str | None
    init_template: str
    media_template: str
    start_number: int
    segment_duration_s: float
    base_url: str

    def init_url(self) -> str:
        return urljoin(
            self.base_url, expand_template(self.init_template, self.id, self.bandwidth_bps, 0)
        )

    def segment_url(self, number: int) -> str:
        """Absolute URL of the segment whose ``$Number$`` is ``number``."""
        name = expand_template(self.media_template, self.id, self.bandwidth_bps, number)
        return urljoin(self.base_url, name)


@dataclass(frozen=True)
class Manifest:
    """A parsed MPD: the ladder (``representations``, ascending bandwidth) and segment timing.

    ``duration_s`` is the presentation's duration, ``segment_duration_s`` each segment's
    (the last one may be shorter), ``num_segments`` = ceil(duration / segment duration).
    Levels are 0-based indices into ``representations``; chunks are 0-based too, and chunk ``c``
    is the segment numbered ``start_number + c``.
    """

    url: str
    duration_s: float
    segment_duration_s: float
    num_segments: int
    representations: tuple[Representation, ...]

    @property
    def num_levels(self) -> int:
        return len(self.representations)

    @property
    def bitrates_kbps(self) -> tuple[int, ...]:
        """The ladder in kbps (bandwidth / 1000, rounded), lowest first."""
        return tuple(round(r.bandwidth_bps / 1000) for r in self.representations)

    def _rep(self, level: int) -> Representation:
        if not 0 <= level < len(self.representations):
            raise ContentError(
                f"MPD {self.url}: level {level} outside 0..{len(self.representations) - 1}"
            )
        return self.representations[level]

    def init_url(self, level: int) -> str:
        """Absolute URL of ``level``'s initialization segment."""
        return self._rep(level).init_url()

    def segment_url(self, level: int, number: int) -> str:
        """Absolute URL of ``level``'s media segment whose ``$Number$`` is ``number``."""
        return self._rep(level).segment_url(number)

    def chunk_url(self, level: int, chunk: int) -> str:
        """Absolute URL of 0-based chunk ``chunk`` at ``level``."""
        if not 0 <= chunk < self.num_segments:
            raise ContentError(f"MPD {self.url}: chunk {chunk} outside 0..{self.num_segments - 1}")
        rep = self._rep(level)
        return rep.segment_url(rep.start_number + chunk)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _base(base: str, element: ET.Element) -> str:
    found = _children(element, "BaseURL")
    if found and found[0].text and found[0].text.strip():
        return urljoin(base, found[0].text.strip())
    return base


def _int(where: str, value: str | None, name: str, default: int | None = None) -> int:
    if value is None:
        if default is None:
            raise ContentError(f"{where}: missing attribute {name!r}")
        return default
    try:
        number = int(value)
    except ValueError:
        raise ContentError(f"{where}: attribute {name}={value!r} is not an integer") from None
    if number < 0:
        raise ContentError(f"{where}: attribute {name}={value!r} is negative")
    return number


def _is_video(adaptation: ET.Element) -> bool:
    if adaptation.get("contentType") == "video":
        return True
    mimes = [adaptation.get("mimeType") or ""]
    mimes += [r.get("mimeType") or "" for r in _children(adaptation, "Representation")]
    return any(m.startswith("video/") for m in mimes)


def parse_mpd(text: str | bytes, base_url: str) -> Manifest:
    """Parse an MPD of the shape above; ``base_url`` is the MPD's own URL (or file path).

    Raises :class:`ContentError` naming the element and attribute that does not fit: a dynamic
    presentation, several Periods, no or several video AdaptationSets, a SegmentTimeline,
    representations with different segment durations.
    """
    where = f"MPD {base_url}"
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ContentError(f"{where}: not well-formed XML: {exc}") from None
    if _local(root.tag) != "MPD":
        raise ContentError(f"{where}: root element is <{_local(root.tag)}>, expected <MPD>")
    if (root.get("type") or "static") != "static":
        raise ContentError(f"{where}: type={root.get('type')!r}; only static MPDs are supported")
    periods = _children(root, "Period")
    if len(periods) != 1:
        raise ContentError(f"{where}: {len(periods)} Periods; exactly one is supported")
    period = periods[0]
    length = period.get("duration") or root.get("mediaPresentationDuration")
    if length is None:
        raise ContentError(f"{where}: no mediaPresentationDuration (or Period duration)")
    duration_s = parse_iso_duration(length)
    videos = [a for a in _children(period, "AdaptationSet") if _is_video(a)]
    if len(videos) != 1:
        raise ContentError(f"{where}: {len(videos)} video AdaptationSets; exactly one is supported")
    adaptation = videos[0]
    base = _base(_base(_base(base_url, root), period), adaptation)

    inherited: dict[str, str] = {}
    for holder in (period, adaptation):
        for template in _children(holder, "SegmentTemplate"):
            inherited.update(template.attrib)
    reps: list[Representation] = []
    for element in _children(adaptation, "Representation"):
        rep_id = element.get("id")
        rwhere = f"{where}: Representation id={rep_id!r}"
        if rep_id is None:
            raise ContentError(f"{where}: a Representation has no id")
        attributes = dict(inherited)
        for template in _children(element, "SegmentTemplate"):
            attributes.update(template.attrib)
            if _children(template, "SegmentTimeline"):
                raise ContentError(f"{rwhere}: SegmentTimeline is not supported ($Number$ only)")
        if "media" not in attributes:
            raise ContentError(f"{rwhere}: no SegmentTemplate with a media attribute")
        if "initialization" not in attributes:
            raise ContentError(f"{rwhere}: SegmentTemplate has no initialization attribute")
        timescale = _int(rwhere, attributes.get("timescale"), "timescale", 1)
        seg_duration = _int(rwhere, attributes.get("duration"), "SegmentTemplate duration")
        if timescale == 0 or seg_duration == 0:
            raise ContentError(f"{rwhere}: SegmentTemplate duration and timescale must be > 0")
        width = element.get("width") or adaptation.get("width")
        height = element.get("height") or adaptation.get("height")
        reps.append(
            Representation(
                id=rep_id,
                bandwidth_bps=_int(rwhere, element.get("bandwidth"), "bandwidth"),
                width=_int(rwhere, width, "width") if width else None,
                height=_int(rwhere, height, "height") if height else None,
                codecs=element.get("codecs") or adaptation.get("codecs"),
                mime_type=element.get("mimeType") or adaptation.get("mimeType"),
                init_template=attributes["initialization"],
                media_template=attributes["media"],
                start_number=_int(rwhere, attributes.get("startNumber"), "startNumber", 1),
                segment_duration_s=seg_duration / timescale,
                base_url=_base(base, element),
            )
        )
    if not reps:
        raise ContentError(f"{where}: the video AdaptationSet has no Representation")
    for rep in reps:  # refuse unsupported templates ($Time$) now, not at the first download
        rep.init_url()
        rep.segment_url(rep.start_number)
    ids = [r.id for r in reps]
    if len(set(ids)) != len(ids):
        raise ContentError(f"{where}: Representation ids repeat: {ids}")
    durations = {r.segment_duration_s for r in reps}
    if len(durations) > 1:
        raise ContentError(f"{where}: Representations differ in segment duration: {durations}")
    segment_s = durations.pop()
    # DASH: the number of segments is ceil(period duration / segment duration); the tolerance
    # absorbs decimal rounding of the written durations.
    num_segments = max(1, math.ceil(duration_s / segment_s - 1e-6))
    reps.sort(key=lambda r: r.bandwidth_bps)
    return Manifest(base_url, duration_s, segment_s, num_segments, tuple(reps))


def build_mpd(
    bitrates_kbps: Sequence[int],
    chunk_s: float,
    num_segments: int,
    resolutions: Sequence[tuple[int, int]] | None = None,
    codecs: str | None = None,
) -> str:
    """An MPD text for levels ``0..K-1`` (Representation id = level) with Streambed's naming.

    ``chunk_s`` is the segment duration in seconds; the presentation lasts
    ``num_segments * chunk_s``. ``resolutions`` are (width, height) per level, if known.
    """
    ET.register_namespace("", MPD_NAMESPACE)

    def tag(name: str) -> str:
        return f"{{{MPD_NAMESPACE}}}{name}"

    timescale = 1_000_000  # as ffmpeg: microseconds
    root = ET.Element(
        tag("MPD"),
        {
            "profiles": "urn:mpeg:dash:profile:isoff-live:2011",
            "type": "static",
            "mediaPresentationDuration": format_iso_duration(num_segments * chunk_s),
            "maxSegmentDuration": format_iso_duration(chunk_s),
            "minBufferTime": format_iso_duration(chunk_s),
        },
    )
    period = ET.SubElement(root, tag("Period"), {"id": "0", "start": "PT0.0S"})
    adaptation = ET.SubElement(
        period,
        tag("AdaptationSet"),
        {
            "id": "0",
            "contentType": "video",
            "mimeType": "video/mp4",
            "segmentAlignment": "true",
            "startWithSAP": "1",
        },
    )
    ET.SubElement(
        adaptation,
        tag("SegmentTemplate"),
        {
            "timescale": str(timescale),
            "duration": str(round(chunk_s * timescale)),
            "initialization": INIT_TEMPLATE,
            "media": MEDIA_TEMPLATE,
            "startNumber": str(START_NUMBER),
        },
    )
    for level, kbps in enumerate(bitrates_kbps):
        attributes = {"id": str(level), "bandwidth": str(int(kbps) * 1000)}
        if codecs:
            attributes["codecs"] = codecs
        if resolutions is not None:
            attributes["width"], attributes["height"] = map(str, resolutions[level])
        ET.SubElement(adaptation, tag("Representation"), attributes)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
