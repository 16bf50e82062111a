"""Kedro pipelines: thin adapters over the library packages."""
