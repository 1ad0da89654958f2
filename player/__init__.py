"""The headless DASH player: ``streambed play``.

``player.session.play_session(PlayerConfig(...))`` plays one session in real time against a
DASH origin and the decision service and writes its logs; ``streambed.commands.play`` is the thin command
line over it. The parts: ``downloads`` (timed GETs with bounded retries), ``decisions`` (the
decision service, with local BBA when it cannot answer), ``buffer`` (the real-time playout
buffer) and ``session`` (the loop, the log files and the outcome). ``browser`` plays the same
session with a real player instead (``streambed play --browser``): dash.js in headless Chromium
with Streambed's remote ABR rule, from ``web`` (the page, the rule and the Node.js driver).
"""
