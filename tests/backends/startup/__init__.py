"""Tiny Django and Flask projects, and their workers started as docs/migration.md shows."""
