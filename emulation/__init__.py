"""Emulated network links: run any command behind a trace-driven link.

``streambed.emulation.link`` is the API (``LinkSpec``, ``run_behind_link``, ``start_behind_link``,
``resolve_kind``, ``available_kinds``, ``address_of``); ``streambed link`` is its CLI
(``streambed.commands.link``). Kinds: Mahimahi's own shells (``streambed.emulation.mahimahi``), Streambed's
packet shaper in a network namespace (``streambed.emulation.netns`` + ``streambed.emulation.shaper``) and a userspace
shaping relay (``streambed.emulation.proxy``), all on the trace semantics of ``streambed.emulation.schedule``.

This module imports nothing, so the shaper and proxy processes start fast.
"""
