"""The one exception tree of Streambed.

Every error a user can cause (a bad file, a bad value, a bad model) is a ``StreambedError``;
the CLI prints it as one line and exits with status 2. Anything else is a bug.
"""

from __future__ import annotations


class StreambedError(Exception):
    """Base class of every error Streambed reports to users."""


class TraceError(StreambedError):
    """A network trace is malformed; the message names the file and line."""


class VideoError(StreambedError):
    """A video description is inconsistent; the message names the file or field."""


class ModelError(StreambedError):
    """A checkpoint cannot be loaded or does not fit the ladder / observation."""


class ConfigError(StreambedError):
    """An argument or parameter has an invalid value."""


class ContentError(StreambedError):
    """DASH content cannot be built or read (ffmpeg missing or failing, a malformed MPD)."""


class LinkError(StreambedError):
    """An emulated network link cannot be set up or run; the message names what failed."""


class ReportError(StreambedError):
    """A report directory cannot be read (no summary.json, a malformed per_trace.csv, ...);
    the message names the file and what is wrong."""
