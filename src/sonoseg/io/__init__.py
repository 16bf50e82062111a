"""Readers for each source format, the standardized sample store, and S3 access."""
