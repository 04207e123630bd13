"""Placeholder; filled by the modules of this package."""
