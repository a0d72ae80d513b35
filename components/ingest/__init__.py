"""Ingest: read raw data, check it against the spec, write and version it (DVC)."""
