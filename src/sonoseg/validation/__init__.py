"""Great Expectations suites over the manifest, and pixel-level checks."""
