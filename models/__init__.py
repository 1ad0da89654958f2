"""The learned policies Streambed ships (data only; see README.md here)."""
