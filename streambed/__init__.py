"""Streambed: a trace-driven ABR streaming testbed.

The ``streambed`` package holds the command line and the glue; the capabilities live in the
top-level packages ``traces``, ``abr_service``, ``trainer`` and ``reports``.
"""

__version__ = "0.1.0"
