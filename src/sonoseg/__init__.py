"""sonoseg."""
