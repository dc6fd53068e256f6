"""DM-style data migration (see migration/README in the package docstring)."""
