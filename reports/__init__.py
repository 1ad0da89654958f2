"""Session logs and QoE reports, shared by simulation and emulation.

Both write one JSON line per chunk (:class:`streambed.reports.sessionlog.ChunkRecord`) and a
Pensieve-format log per session; one summariser reads either, so simulated and emulated
QoE compare trace by trace.
"""
