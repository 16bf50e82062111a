"""The in-memory form of one sample, and the errors a reader raises for a bad file."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class SampleError(Exception):
    """One input file cannot become a sample; carries the file and a human reason."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


class SourceError(Exception):
    """A whole source cannot be read (missing or unreadable folder, no credentials, bad URL)."""


@dataclass(frozen=True)
class Rejected:
    """A file that did not become a sample, and why. Every rejected file is listed, never dropped."""

    file: str
    reason: str


@dataclass
class RawSample:
    """One decoded sample at its original resolution.

    ``image`` is 2-D (grey); ``mask`` is 2-D integer labels (0 = background) or None when unlabelled.
    ``spacing_mm`` is (row, col) in millimetres when the source knows it.
    """

    sample_id: str
    image: np.ndarray
    mask: np.ndarray | None
    source_image: str
    source_mask: str | None = None
    subject_id: str | None = None
    spacing_mm: tuple[float, float] | None = None
