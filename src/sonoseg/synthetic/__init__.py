"""Synthetic fetal-ultrasound generator: the embedded default data source."""

from sonoseg.synthetic.generator import (
    DEVICE_PRESETS,
    LABEL_BACKGROUND,
    LABEL_FETAL_HEAD,
    LABEL_PUBIC_SYMPHYSIS,
    DevicePreset,
    SyntheticConfig,
    SyntheticSample,
    generate,
    measure_throughput,
)

__all__ = [
    "DEVICE_PRESETS",
    "LABEL_BACKGROUND",
    "LABEL_FETAL_HEAD",
    "LABEL_PUBIC_SYMPHYSIS",
    "DevicePreset",
    "SyntheticConfig",
    "SyntheticSample",
    "generate",
    "measure_throughput",
]
