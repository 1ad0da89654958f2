"""Emulated network links: run any command behind a trace-driven link.

``emulation.link`` is the API (``LinkSpec``, ``run_behind_link``, ``start_behind_link``,
``resolve_kind``, ``available_kinds``, ``address_of``); ``streambed link`` is its CLI
(``emulation.link_cli``). Kinds: Mahimahi's own shells (``emulation.mahimahi``), Streambed's
packet shaper in a network namespace (``emulation.netns`` + ``emulation.shaper``) and a userspace
shaping relay (``emulation.proxy``), all on the trace semantics of ``emulation.schedule``.

This module imports nothing, so the shaper and proxy processes start fast.
"""
