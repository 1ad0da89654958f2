"""The learned policies Streambed ships (data; how each was made: README.md here)."""

from importlib.resources import files
from pathlib import Path

SHIPPED_MODEL = Path(str(files(__name__) / "ppo-norway.pt"))
"""The learned policy Streambed ships: PPO trained on norway-train with the Envivio video."""
