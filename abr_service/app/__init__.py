"""The decision service: ``streambed serve``.

``main.create_app`` builds the FastAPI app from a ``Settings``. The work is done by plain
Python objects that never import FastAPI (``engine.DecisionEngine``, ``models_store.ModelStore``,
``metrics.Metrics``); the routers under ``routers/`` only translate HTTP to and from them.
"""
