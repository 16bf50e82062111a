"""Decoding image and mask files into standard 2-D arrays, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Extensions SimpleITK decodes for us (it wraps ITK's PNG/JPEG/TIFF/BMP/MetaImage/NIfTI/NRRD IO).
SITK_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".mha", ".mhd", ".nii", ".nii.gz", ".nrrd")
IMAGE_EXTENSIONS = (*SITK_EXTENSIONS, ".npy")


def file_extension(path: Path | str) -> str:
    """The lower-case extension, with ``.nii.gz`` kept whole."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def stem(path: Path | str) -> str:
    """The file name without its (possibly double) extension."""
    name = Path(path).name
    ext = file_extension(name)
    return name[: len(name) - len(ext)] if ext else name


def read_array(path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Read any supported file into a numpy array, plus its pixel spacing (row, col) when the
    file carries a real one. ITK's default spacing of exactly 1 is a placeholder, not a measurement,
    so it is reported as unknown.

    Raises:
        SampleError: the file is empty, of an unsupported type, or cannot be decoded.
    """
    from sonoseg.io.samples import SampleError

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise SampleError(str(path), f"cannot open file ({err.strerror or err})") from err
    if size == 0:
        raise SampleError(str(path), "empty file (0 bytes)")
    ext = file_extension(path)
    if ext == ".npy":
        try:
            return np.load(path, allow_pickle=False), None
        except (ValueError, OSError, EOFError) as err:
            raise SampleError(str(path), f"cannot decode .npy array ({err})") from err
    if ext not in SITK_EXTENSIONS:
        raise SampleError(str(path), f"unsupported file type '{ext or path.name}'")
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        first_line = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown ITK error"
        raise SampleError(str(path), f"cannot decode image ({first_line})") from err
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = np.moveaxis(array, -1, 0)  # channels first, like PSFHS's 3-plane volumes
    spacing_xy = image.GetSpacing()[:2]
    spacing = None if all(s == 1.0 for s in spacing_xy) else (float(spacing_xy[1]), float(spacing_xy[0]))
    return array, spacing


def to_grey_2d(array: np.ndarray, file: str) -> np.ndarray:
    """A 2-D grey image from 2-D, single-plane or RGB(A) input. Identical planes (PSFHS stores three)
    are reduced to one; differing colour planes become luminance. The dtype is kept (float64 becomes
    float32) so that nothing is rescaled behind the user's back."""
    from sonoseg.io.samples import SampleError

    image = np.asarray(array)
    if image.ndim == 3 and image.shape[-1] in (3, 4) and image.shape[0] not in (1, 3, 4):
        image = np.moveaxis(image, -1, 0)  # channels last → first
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    elif image.ndim == 3 and image.shape[0] in (3, 4):
        planes = image[:3]
        if all(np.array_equal(planes[0], plane, equal_nan=True) for plane in planes[1:]):
            image = planes[0]
        else:
            luminance = 0.299 * planes[0] + 0.587 * planes[1] + 0.114 * planes[2]
            image = np.rint(luminance).astype(image.dtype) if np.issubdtype(image.dtype, np.integer) else luminance
    if image.ndim != 2:
        raise SampleError(file, f"expected a 2-D grey or RGB image, got an array of shape {tuple(array.shape)}")
    if image.dtype == np.float64:
        image = image.astype(np.float32)
    if image.dtype == np.bool_:
        image = image.astype(np.uint8)
    return np.ascontiguousarray(image)


def to_label_2d(array: np.ndarray, file: str, remap: dict[int, int] | None = None) -> np.ndarray:
    """A 2-D uint8 label mask. Colour masks must have identical planes; values must be integers.
    ``remap`` renames stored values (IUGC stores 7/8 for PS/FH)."""
    from sonoseg.io.samples import SampleError

    mask = np.asarray(array)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4) and mask.shape[0] not in (1, 3, 4):
        mask = np.moveaxis(mask, -1, 0)
    if mask.ndim == 3 and mask.shape[0] in (1, 3, 4):
        if not all(np.array_equal(mask[0], plane) for plane in mask[1 : min(3, mask.shape[0])]):
            raise SampleError(file, "colour mask with differing planes: expected one label value per pixel")
        mask = mask[0]
    if mask.ndim != 2:
        raise SampleError(file, f"expected a 2-D label mask, got an array of shape {tuple(array.shape)}")
    if not np.issubdtype(mask.dtype, np.integer):
        if not np.all(np.isfinite(mask)) or not np.all(mask == np.round(mask)):
            raise SampleError(file, "mask holds non-integer values: expected integer class labels")
    if mask.min() < 0 or mask.max() > 255:
        raise SampleError(file, f"mask values {int(mask.min())}..{int(mask.max())} do not fit class labels 0..255")
    mask = mask.astype(np.uint8)
    if remap:
        lookup = np.arange(256, dtype=np.uint8)
        for stored, label in remap.items():
            lookup[stored] = label
        mask = lookup[mask]
    return np.ascontiguousarray(mask)
