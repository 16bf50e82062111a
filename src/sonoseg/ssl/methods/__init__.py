"""One module per method; importing this package registers them all with ``sonoseg.ssl.base``."""

from . import cotrain, cps, fixmatch, hdc, infodiv, mean_teacher, simcvd, supervised  # noqa: F401
