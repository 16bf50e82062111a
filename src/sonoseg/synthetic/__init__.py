"""Synthetic fetal-ultrasound generator: the embedded default data source."""
