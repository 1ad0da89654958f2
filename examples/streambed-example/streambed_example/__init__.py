"""An example Streambed plug-in package (see README.md)."""
