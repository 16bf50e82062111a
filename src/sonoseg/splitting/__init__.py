"""Leak-aware labelled/unlabelled/val/test splitting."""
