"""Limits of the decision service's wire format, shared by the service's request models
(:mod:`streambed.abr_service.app.schemas`) and the players that send the requests.

Plain constants: a player process must not import pydantic (about half a second of start-up
each).
"""

from __future__ import annotations

SESSION_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
"""Session ids the service accepts (in bodies and in /sessions/{id})."""
MIN_DOWNLOAD_S = 1e-4
"""Shortest download time accepted: keeps every throughput finite."""
MAX_DOWNLOAD_S = 86_400.0
"""Longest download time accepted, given or derived from the chunk's timestamps."""
MAX_TIMESTAMP_MS = 1e13
"""Largest timestamp accepted, ms (any epoch: Unix milliseconds reach it in the year 2286)."""
MAX_CUMULATIVE_REBUFFER_MS = 1e10
"""Largest cumulative stall accepted from Pensieve's player, ms (about 115 days)."""
