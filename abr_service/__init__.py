"""The ABR brain: video description, QoE, observation, algorithms, policies (no web imports)."""
