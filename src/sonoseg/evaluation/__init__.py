"""Metrics, biometry, plots and reports."""
