"""The deployable model: an MLflow pyfunc that takes raw images and returns masks plus biometry.

Its artifacts are a slim copy of the trainer checkpoint (the weights and what rebuilds the network; no
optimizer state) and the dataset's class names; the ``sonoseg`` source travels with it as code, so the
model needs no installed project. Preprocessing (grey conversion, scaling, resizing to the network input
and back) happens inside, as in :class:`sonoseg.evaluation.predict.Predictor`.

Input: a DataFrame with one image per row, given by exactly one of

- ``path``: an image file (PNG, JPEG, TIFF, BMP, MetaImage .mha, NIfTI, NRRD, .npy), read with
  :func:`sonoseg.io.decode.read_array`, so a file's own pixel spacing makes the biometry millimetres;
- ``image``: the bytes of an encoded file, or their base64 text (as in JSON); ``format`` names its extension
  (``png``, ``mha``, ``nii.gz``...) and may be left out for PNG, JPEG, BMP, TIFF and MetaImage;
- ``pixels``: a raw 2-D image as nested lists of any size: integers 0–255 are a uint8 image, up to
  65535 a uint16 one, anything else is scaled by its own range (as training scales float images).

Output: one row per input row with the label mask as lossless PNG bytes (``mask_png``), or, when the
``output_dir`` param is given, the path of the mask PNG written there (``mask_path``); its ``height`` and
``width``; and the biometry ``aop_deg``, ``hsd``, ``hc`` in ``unit`` (mm with a known spacing, else px),
NaN where unmeasurable with the reason in ``note``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

logger = logging.getLogger(__name__)

INPUT_COLUMNS = ("path", "image", "pixels")
DEFAULT_CLASSES = {"0": "background", "1": "pubic_symphysis", "2": "fetal_head"}
OUTPUT_COLUMNS = ("height", "width", "aop_deg", "hsd", "hc", "unit", "note")
CHECKPOINT_KEYS = ("format", "method", "networks", "model", "settings", "num_classes", "input_size", "best_val_dice",
                   "best_iteration", "iteration")  # fmt: skip
# What the packaged code imports at prediction time (torch.export is not involved: the weights are a state_dict).
RUNTIME_DISTRIBUTIONS = ("torch", "monai", "numpy", "pandas", "opencv-python-headless", "SimpleITK")
# File signatures of the formats whose ``image`` bytes need no ``format``.
MAGIC_EXTENSIONS = ((b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"BM", ".bmp"), (b"II*\x00", ".tif"),
                    (b"MM\x00*", ".tif"), (b"ObjectType", ".mha"), (b"NDims", ".mha"))  # fmt: skip


class SegmentationModel(mlflow.pyfunc.PythonModel):
    """Masks and biometry for raw images; see the module docstring for the columns.

    ``model_config={"device": "cuda"}`` at load time picks the device (default ``auto``: CUDA, then
    MPS, then the CPU).
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        classes = json.loads(Path(context.artifacts["classes"]).read_text())
        self._build(context.artifacts["checkpoint"], classes, str((context.model_config or {}).get("device", "auto")))

    def _build(self, checkpoint: Path | str, classes: dict[str, str], device: str) -> None:
        from sonoseg.evaluation.biometry import structure_labels
        from sonoseg.evaluation.predict import Predictor
        from sonoseg.training.trainer import choose_device

        self.predictor = Predictor.from_checkpoint(checkpoint, choose_device(device))
        self.ps_label, self.fh_label = structure_labels(classes)

    @classmethod
    def from_checkpoint(cls, checkpoint: Path | str, classes: dict[str, str], device: str = "auto") -> SegmentationModel:
        """The same model straight from a trainer checkpoint, without MLflow (``predict(None, frame, params)``)."""
        model = cls()
        model._build(checkpoint, classes, device)
        return model

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        from sonoseg.evaluation.biometry import measure

        frame = pd.DataFrame(model_input)
        if not set(INPUT_COLUMNS) & set(frame.columns):
            raise ValueError(f"the input has columns {list(frame.columns)}: it needs one of {list(INPUT_COLUMNS)}")
        details: list[tuple[tuple[float, float] | None, str]] = []  # (spacing, name) per row, filled as decoded

        def images() -> Iterator[np.ndarray]:  # lazily, so that only one batch of images is in memory
            for index, row in enumerate(frame.to_dict("records")):
                image, spacing, name = _decode_row(row, index)
                details.append((spacing, name))
                yield image

        output_dir = (params or {}).get("output_dir")
        names: set[str] = set()
        rows = []
        for index, mask in enumerate(self.predictor.predict_many(images(), batch_size=8)):
            spacing, name = details[index]
            row: dict[str, Any] = {}
            if output_dir:
                row["mask_path"] = str(_write_mask(Path(output_dir), _unique(name, index, names), mask))
            else:
                row["mask_png"] = _encode_png(mask)
            row.update(height=int(mask.shape[0]), width=int(mask.shape[1]))
            row.update(measure(mask, spacing, self.ps_label, self.fh_label).as_dict())
            rows.append(row)
        return pd.DataFrame(rows, columns=[*(["mask_path"] if output_dir else ["mask_png"]), *OUTPUT_COLUMNS])


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _decode_row(row: dict[str, Any], index: int) -> tuple[np.ndarray, tuple[float, float] | None, str]:
    """(image, spacing or None, a name for the written mask) of one input row."""
    from sonoseg.io.decode import read_array, stem
    from sonoseg.io.samples import SampleError

    given = [column for column in INPUT_COLUMNS if not _missing(row.get(column))]
    if len(given) != 1:
        raise ValueError(f"row {index}: give exactly one of {list(INPUT_COLUMNS)}, got {given or 'none'}")
    value = row[given[0]]
    try:
        if given[0] == "path":
            image, spacing = read_array(Path(str(value)))
            return image, spacing, stem(str(value))
        if given[0] == "image":
            image, spacing = _decode_bytes(value, row.get("format"), index)
            return image, spacing, f"row{index}"
        return _pixels(value, index), None, f"row{index}"
    except SampleError as err:
        raise ValueError(f"row {index}: {err}") from err


def _decode_bytes(data: Any, file_format: Any, index: int) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Decode encoded file bytes through a temporary file, so every format ``read_array`` knows works."""
    from sonoseg.io.decode import IMAGE_EXTENSIONS, read_array

    if isinstance(data, str):
        try:
            data = base64.b64decode(data, validate=False)
        except binascii.Error as err:
            raise ValueError(f"row {index}: 'image' is a string but not base64 ({err})") from err
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError(f"row {index}: 'image' must hold the bytes of an encoded file, got {type(data).__name__}")
    if _missing(file_format):
        extension = next((ext for magic, ext in MAGIC_EXTENSIONS if data.startswith(magic)), None)
        if extension is None:
            raise ValueError(f"row {index}: the 'image' bytes are of no format recognised by their first bytes: "
                             "name it in the 'format' column (e.g. 'nii.gz')")  # fmt: skip
    else:
        extension = "." + str(file_format).lower().lstrip(".")
        if extension not in IMAGE_EXTENSIONS:
            raise ValueError(f"row {index}: format '{file_format}' is not one of {[e[1:] for e in IMAGE_EXTENSIONS]}")
    with tempfile.TemporaryDirectory(prefix="sonoseg-image-") as folder:
        path = Path(folder) / f"row{index}{extension}"
        path.write_bytes(bytes(data))
        image, spacing = read_array(path)
        return np.array(image), spacing  # a copy: the file goes away


def _pixels(value: Any, index: int) -> np.ndarray:
    """A raw 2-D image from nested lists (or arrays): integers keep a uint8/uint16 meaning."""
    rows = value.tolist() if isinstance(value, np.ndarray) else value
    try:
        image = np.array(rows)
    except ValueError as err:  # ragged rows
        raise ValueError(f"row {index}: 'pixels' must be a rectangular 2-D array ({err})") from err
    if image.ndim != 2 or image.size == 0 or image.dtype == object:
        raise ValueError(f"row {index}: 'pixels' must be a non-empty rectangular 2-D array of numbers, got shape "
                         f"{image.shape} of {image.dtype}")  # fmt: skip
    if image.dtype == np.bool_:
        return image.astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer):
        low, high = int(image.min()), int(image.max())
        if low >= 0 and high <= 255:
            return image.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return image.astype(np.uint16)
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.floating):
        return image.astype(np.float32)
    raise ValueError(f"row {index}: 'pixels' must hold numbers, got {image.dtype}")


def _encode_png(mask: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", mask)
    if not ok:
        raise RuntimeError(f"a {mask.shape} mask could not be encoded as PNG")
    return encoded.tobytes()


def _unique(name: str, index: int, taken: set[str]) -> str:
    """``name``, or ``name_row<index>`` when an earlier row of the call already used it."""
    chosen = name if name not in taken else f"{name}_row{index}"
    taken.add(chosen)
    return chosen


def _write_mask(folder: Path, name: str, mask: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_mask.png"
    path.write_bytes(_encode_png(mask))
    return path


def predict_files(
    model: str, images: Sequence[Path | str], out_dir: Path | str, tracking_uri: str | None = None,
    classes: dict[str, str] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Mask PNGs written to ``out_dir`` and the biometry of image files, as ``sonoseg predict`` reports them.

    Args:
        model: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/…``, a model folder, or a trainer
            checkpoint (``.pt``).
        tracking_uri: the MLflow store for ``models:/`` and ``runs:/`` URIs (default: ``$MLFLOW_TRACKING_URI``,
            else the project's ``sqlite:///mlflow.db`` in the working directory).
        classes: a checkpoint's class names for the biometry (default: 1 = pubic symphysis, 2 = fetal head);
            a logged model carries its own.

    Returns:
        ``file, mask_path, height, width, aop_deg, hsd, hc, unit, note``, one row per image, in order.
    """
    frame = pd.DataFrame({"path": [str(path) for path in images]})
    params = {"output_dir": str(out_dir)}
    if Path(model).suffix == ".pt":
        segmenter = SegmentationModel.from_checkpoint(model, classes or DEFAULT_CLASSES)
        table = segmenter.predict(None, frame, params)
    else:
        mlflow.set_tracking_uri(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db")
        table = mlflow.pyfunc.load_model(model).predict(frame, params=params)
    table.insert(0, "file", frame["path"])
    return table


def model_signature() -> ModelSignature:
    """Optional input columns (one per row is given), the output columns, and the ``output_dir`` param."""
    inputs = Schema([
        ColSpec("string", "path", required=False),
        # "any", not "binary": MLflow would base64-decode the empty cells of rows that give another column;
        # the model decodes base64 strings itself
        ColSpec(AnyType(), "image", required=False),
        ColSpec("string", "format", required=False),
        # nested lists of ints or floats of any size: "any", so that MLflow leaves the dtype alone
        ColSpec(AnyType(), "pixels", required=False),
    ])  # fmt: skip
    outputs = Schema([
        ColSpec("binary", "mask_png", required=False),
        ColSpec("string", "mask_path", required=False),
        ColSpec("long", "height"),
        ColSpec("long", "width"),
        ColSpec("double", "aop_deg"),
        ColSpec("double", "hsd"),
        ColSpec("double", "hc"),
        ColSpec("string", "unit"),
        ColSpec("string", "note"),
    ])  # fmt: skip
    return ModelSignature(inputs, outputs, ParamSchema([ParamSpec("output_dir", "string", None)]))


def input_example(size: int = 16) -> pd.DataFrame:
    """One small uint8 ``pixels`` image: a bright disc on a dark field."""
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2).astype(np.uint8) * 200 + 20
    return pd.DataFrame({"pixels": [disc.tolist()]})


def slim_checkpoint(checkpoint: Path, target: Path) -> Path:
    """A copy of a trainer checkpoint with what prediction needs (no optimizer state, no history)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    missing = [key for key in ("method", "networks", "model", "settings", "num_classes", "input_size") if key not in state]
    if missing:
        raise ValueError(f"{checkpoint} is not a sonoseg checkpoint that can predict (missing {missing})")
    torch.save({key: state[key] for key in CHECKPOINT_KEYS if key in state}, target)
    return target


def pip_requirements() -> list[str]:
    """Exact pins of the installed runtime distributions (local build tags such as ``+cpu`` dropped)."""
    pins = []
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            logger.warning("%s is not installed: the model's requirements leave it out", name)
    return pins


def log_segmentation_model(checkpoint: Path | str, classes: dict[str, str], name: str = "model") -> ModelInfo:
    """Log the pyfunc (slim checkpoint, class names, the ``sonoseg`` sources, signature, input example) to
    the active MLflow run; MLflow checks that the input example predicts."""
    import sonoseg

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint to package")
    with tempfile.TemporaryDirectory(prefix="sonoseg-model-") as folder:
        staged = Path(folder)
        slim = slim_checkpoint(checkpoint, staged / "model.pt")
        (staged / "classes.json").write_text(json.dumps({str(k): v for k, v in classes.items()}, indent=2))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).with_name("model_code.py")),
            artifacts={"checkpoint": str(slim), "classes": str(staged / "classes.json")},
            code_paths=[str(Path(sonoseg.__file__).parent)],  # MLflow drops __pycache__ folders
            signature=model_signature(),
            input_example=input_example(),
            pip_requirements=pip_requirements(),
        )
