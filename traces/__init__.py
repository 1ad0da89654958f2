"""Network traces for Streambed: the ``Trace`` type, Pensieve/Mahimahi I/O, synthetic traces
and trace sets. Depends on numpy only (no web imports)."""

from streambed.traces.formats import (
    PACKET_BITS,
    PACKET_BYTES,
    Trace,
    detect_format,
    load_mahimahi,
    load_pensieve,
    load_trace,
    mahimahi_to_pensieve,
    pensieve_to_mahimahi,
    save_mahimahi,
    save_pensieve,
)
from streambed.traces.stress import STRESS_KINDS, StressParams, generate_stress_set
from streambed.traces.synth import (
    SynthParams,
    constant_trace,
    default_traces,
    generate_set,
    generate_trace,
    step_trace,
)
from streambed.traces.traceset import TraceSetSummary, load_traceset, summarize, trace_files

__all__ = [
    "PACKET_BITS",
    "PACKET_BYTES",
    "STRESS_KINDS",
    "StressParams",
    "SynthParams",
    "Trace",
    "TraceSetSummary",
    "constant_trace",
    "default_traces",
    "detect_format",
    "generate_set",
    "generate_stress_set",
    "generate_trace",
    "load_mahimahi",
    "load_pensieve",
    "load_trace",
    "load_traceset",
    "mahimahi_to_pensieve",
    "pensieve_to_mahimahi",
    "save_mahimahi",
    "save_pensieve",
    "step_trace",
    "summarize",
    "trace_files",
]
