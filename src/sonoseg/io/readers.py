"""Readers: one per source layout (DESIGN.md §3). A reader lists its source cheaply (``scan``), then
decodes one sample at a time (``load``), so ingestion streams and never holds a dataset in memory.

Every file a reader sees ends up either in a ``SampleRef`` or in a ``Rejected`` entry with a reason.
"""

from __future__ import annotations

import csv
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sonoseg.io.decode import IMAGE_EXTENSIONS, file_extension, read_array, stem, to_grey_2d, to_label_2d
from sonoseg.io.samples import RawSample, Rejected, SampleError, SourceError

PSFHS_CLASSES = {0: "background", 1: "pubic_symphysis", 2: "fetal_head"}


@dataclass(frozen=True)
class SampleRef:
    """Where one sample's pixels come from; cheap to list, decoded later by ``Reader.load``."""

    sample_id: str
    image_file: str
    mask_file: str | None = None
    subject_id: str | None = None
    spacing_mm: tuple[float, float] | None = None
    frame: int | None = None


@dataclass
class ScanResult:
    """The samples a source offers and the files that cannot become samples."""

    refs: list[SampleRef] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


class Reader(ABC):
    """One source layout. Subclasses set ``name``/``classes`` and implement ``scan``; ``load`` decodes
    an image/mask file pair and only needs overriding for sources that are not files (video, synthetic)."""

    name: ClassVar[str]
    classes: ClassVar[Mapping[int, str]] = PSFHS_CLASSES
    require_masks: ClassVar[bool] = True
    mask_remap: ClassVar[dict[int, int] | None] = None

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def check_root(self, *required: str) -> None:
        """Fail with one clear message when the folder (or a required sub-folder) is missing or unreadable."""
        for folder in (self.root, *(self.root / name for name in required)):
            if not folder.is_dir():
                raise SourceError(
                    f"The {self.name} source needs the folder '{folder}', which does not exist or is not a folder. "
                    f"Point ingestion.path at a folder in the {self.name} layout (see DESIGN.md §3)."
                )
            try:
                next(folder.iterdir(), None)
            except PermissionError as err:
                raise SourceError(f"The {self.name} source folder '{folder}' cannot be read: {err.strerror}.") from err

    @abstractmethod
    def scan(self) -> ScanResult:
        """List the samples without decoding pixels."""

    def load(self, ref: SampleRef) -> RawSample:
        """Decode one sample. Raises ``SampleError`` naming the bad file."""
        raw_image, file_spacing = read_array(Path(ref.image_file))
        image = to_grey_2d(raw_image, ref.image_file)
        mask = None
        if ref.mask_file is not None:
            raw_mask, _ = read_array(Path(ref.mask_file))
            mask = self.prepare_mask(to_label_2d(raw_mask, ref.mask_file, self.mask_remap), ref.mask_file)
        spacing = ref.spacing_mm if ref.spacing_mm is not None else file_spacing
        return RawSample(
            sample_id=ref.sample_id,
            image=image,
            mask=mask,
            source_image=ref.image_file,
            source_mask=ref.mask_file,
            subject_id=ref.subject_id,
            spacing_mm=spacing,
        )

    def prepare_mask(self, mask: np.ndarray, file: str) -> np.ndarray:
        """Hook for layouts whose masks need more than decoding (HC18 outlines)."""
        return mask


def _pair_by_stem(
    source: str, images: list[Path], masks: list[Path], mask_stem=stem
) -> tuple[list[tuple[Path, Path | None]], list[Rejected]]:
    """Pair image files with mask files by stem. Masks without an image are rejected; images without
    a mask are returned unpaired (validation decides whether that is allowed)."""
    masks_by_stem = {mask_stem(m): m for m in masks}
    pairs = [(image, masks_by_stem.pop(stem(image), None)) for image in images]
    rejected = [Rejected(str(m), f"{source}: mask has no matching image") for m in masks_by_stem.values()]
    return pairs, rejected


def _list_files(folder: Path, extensions: tuple[str, ...], source: str) -> tuple[list[Path], list[Rejected]]:
    """Files in one folder, sorted; files of other types are rejected rather than ignored."""
    files, rejected = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if file_extension(path) in extensions:
            files.append(path)
        else:
            rejected.append(Rejected(str(path), f"{source}: unsupported file type '{file_extension(path) or path.name}'"))
    return files, rejected


class PsfhsReader(Reader):
    """PSFHS: ``image_mha/NNNNN.mha`` (3 identical planes) + ``label_mha/NNNNN.mha`` (0/1/2).
    The release's MetaImage spacing is ITK's placeholder of 1, which ``read_array`` reports as unknown."""

    name = "psfhs"

    def scan(self) -> ScanResult:
        self.check_root("image_mha", "label_mha")
        images, rejected_images = _list_files(self.root / "image_mha", (".mha", ".mhd"), self.name)
        masks, rejected_masks = _list_files(self.root / "label_mha", (".mha", ".mhd"), self.name)
        pairs, orphans = _pair_by_stem(self.name, images, masks)
        refs = [SampleRef(f"psfhs-{stem(i)}", str(i), str(m) if m else None) for i, m in pairs]
        return ScanResult(refs, rejected_images + rejected_masks + orphans)


class Hc18Reader(Reader):
    """HC18: ``training_set/NNN_HC.png`` (+ ``NNN_2HC.png`` ...), ``NNN_HC_Annotation.png`` ellipse
    outlines, and ``training_set_pixel_size_and_HC.csv`` for the pixel size. Grouped by subject NNN."""

    name = "hc18"
    classes = {0: "background", 1: "fetal_head"}
    csv_name = "training_set_pixel_size_and_HC.csv"
    image_pattern = re.compile(r"^(?P<subject>\d+)_(?P<repeat>\d*)HC$")

    def scan(self) -> ScanResult:
        self.check_root("training_set")
        pixel_size = self._read_pixel_sizes()
        files, rejected = _list_files(self.root / "training_set", (".png",), self.name)
        images = [f for f in files if not stem(f).endswith("_Annotation")]
        annotations = [f for f in files if stem(f).endswith("_Annotation")]
        pairs, orphans = _pair_by_stem(
            self.name, images, annotations, mask_stem=lambda p: stem(p).removesuffix("_Annotation")
        )
        refs = []
        for image, annotation in pairs:
            match = self.image_pattern.match(stem(image))
            if match is None:
                rejected.append(Rejected(str(image), "hc18: file name is not NNN_HC.png or NNN_kHC.png"))
                if annotation is not None:
                    rejected.append(Rejected(str(annotation), "hc18: annotation of an unrecognised image name"))
                continue
            size = pixel_size.get(image.name)
            refs.append(
                SampleRef(
                    sample_id=f"hc18-{stem(image)}",
                    image_file=str(image),
                    mask_file=str(annotation) if annotation else None,
                    subject_id=f"hc18-{match['subject']}",
                    spacing_mm=(size, size) if size else None,
                )
            )
        return ScanResult(refs, rejected + orphans)

    def _read_pixel_sizes(self) -> dict[str, float]:
        path = self.root / self.csv_name
        if not path.is_file():
            raise SourceError(f"The hc18 source needs '{path}' (filename, pixel size(mm), ...): it is missing.")
        sizes = {}
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                try:
                    sizes[row["filename"]] = float(row["pixel size(mm)"])
                except (KeyError, TypeError, ValueError) as err:
                    raise SourceError(f"'{path}' has a malformed row {row}: expected filename and pixel size(mm).") from err
        return sizes

    def prepare_mask(self, mask: np.ndarray, file: str) -> np.ndarray:
        return fill_outline(mask, file)


def fill_outline(outline: np.ndarray, file: str) -> np.ndarray:
    """Fill a closed ellipse outline (HC18's 1-pixel annotation, 0/255) into a 0/1 head mask.
    An outline with gaps is closed by fitting an ellipse to its pixels."""
    import cv2
    from scipy import ndimage

    edge = outline > 0
    if not edge.any():
        raise SampleError(file, "annotation is empty: no outline pixels")
    filled = ndimage.binary_fill_holes(edge)
    if filled.sum() < 2 * edge.sum():  # the fill leaked out or found nothing: the outline is open
        points = np.column_stack(np.nonzero(edge)[::-1]).astype(np.float32)
        if len(points) < 5:
            raise SampleError(file, "annotation outline has fewer than 5 pixels: cannot fit an ellipse")
        filled = np.zeros(edge.shape, np.uint8)
        cv2.ellipse(filled, cv2.fitEllipse(points), 1, thickness=-1)
        filled = filled.astype(bool) | edge
    return filled.astype(np.uint8)


class FugcReader(Reader):
    """FUGC 2025: ``train/labeled_data/{images,labels}/<id>.png`` and ``train/unlabeled_data/images``.
    RGB frames become grey; labels 1 = anterior lip, 2 = posterior lip."""

    name = "fugc"
    classes = {0: "background", 1: "anterior_lip", 2: "posterior_lip"}
    require_masks = False

    def scan(self) -> ScanResult:
        train = self.root / "train" if (self.root / "train").is_dir() else self.root
        self.root = train
        self.check_root("labeled_data/images", "labeled_data/labels")
        images, rejected = _list_files(train / "labeled_data" / "images", IMAGE_EXTENSIONS, self.name)
        labels, rejected_labels = _list_files(train / "labeled_data" / "labels", IMAGE_EXTENSIONS, self.name)
        pairs, orphans = _pair_by_stem(self.name, images, labels)
        refs = [SampleRef(f"fugc-{stem(i)}", str(i), str(m) if m else None) for i, m in pairs]
        unlabelled_dir = train / "unlabeled_data" / "images"
        if unlabelled_dir.is_dir():
            unlabelled, rejected_unlabelled = _list_files(unlabelled_dir, IMAGE_EXTENSIONS, self.name)
            refs += [SampleRef(f"fugc-u-{stem(i)}", str(i)) for i in unlabelled]
            rejected += rejected_unlabelled
        return ScanResult(refs, rejected + rejected_labels + orphans)


class IugcReader(Reader):
    """IUGC 2024: ``pos/<case>/<case>.avi`` with ``pos/<case>/mask/*_<frame>_*.png`` for annotated
    frames (7 = PS, 8 = FH, remapped to 1/2), and ``neg/*.avi``. Annotated frames are labelled samples;
    every ``unlabelled_stride``-th other frame is an unlabelled one (0 = none). Grouped by case."""

    name = "iugc"
    require_masks = False
    mask_remap = {7: 1, 8: 2}
    frame_pattern = re.compile(r"_(\d+)_[^_]*$")

    def __init__(self, root: Path | str, unlabelled_stride: int = 0, include_negatives: bool = False) -> None:
        super().__init__(root)
        if unlabelled_stride < 0:
            raise ValueError(f"unlabelled_stride must be >= 0, got {unlabelled_stride}")
        self.unlabelled_stride = unlabelled_stride
        self.include_negatives = include_negatives

    def scan(self) -> ScanResult:
        self.check_root("pos")
        result = ScanResult()
        for case_dir in sorted(p for p in (self.root / "pos").iterdir() if p.is_dir()):
            self._scan_video(case_dir / f"{case_dir.name}.avi", case_dir.name, case_dir / "mask", result)
        negatives = self.root / "neg"
        if self.include_negatives and negatives.is_dir():
            for video in sorted(negatives.glob("*.avi")):
                self._scan_video(video, f"neg-{video.stem}", None, result)
        return result

    def _scan_video(self, video: Path, case: str, mask_dir: Path | None, result: ScanResult) -> None:
        masks: dict[int, Path] = {}
        if mask_dir is not None and mask_dir.is_dir():
            for mask in sorted(mask_dir.iterdir()):
                match = self.frame_pattern.search(stem(mask)) if file_extension(mask) == ".png" else None
                if match is None:
                    result.rejected.append(Rejected(str(mask), "iugc: mask name has no _<frame>_ number"))
                else:
                    masks[int(match.group(1))] = mask
        if not video.is_file():
            result.rejected += [Rejected(str(m), f"iugc: video {video.name} is missing") for m in masks.values()]
            return
        n_frames = _video_frame_count(video)
        if n_frames <= 0:
            result.rejected.append(Rejected(str(video), "iugc: video cannot be decoded (no frames)"))
            result.rejected += [Rejected(str(m), f"iugc: video {video.name} cannot be decoded") for m in masks.values()]
            return
        subject = f"iugc-{case}"
        for frame, mask in masks.items():
            result.refs.append(SampleRef(f"iugc-{case}-f{frame:05d}", str(video), str(mask), subject, frame=frame))
        if self.unlabelled_stride:
            for frame in range(0, n_frames, self.unlabelled_stride):
                if frame not in masks:
                    result.refs.append(SampleRef(f"iugc-{case}-f{frame:05d}", str(video), None, subject, frame=frame))

    def load(self, ref: SampleRef) -> RawSample:
        image = to_grey_2d(_read_video_frame(Path(ref.image_file), ref.frame), ref.image_file)
        mask = None
        if ref.mask_file is not None:
            raw_mask, _ = read_array(Path(ref.mask_file))
            mask = to_label_2d(raw_mask, ref.mask_file, self.mask_remap)
        return RawSample(ref.sample_id, image, mask, f"{ref.image_file}#frame={ref.frame}", ref.mask_file, ref.subject_id)


def _video_frame_count(video: Path) -> int:
    import cv2

    capture = cv2.VideoCapture(str(video))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    finally:
        capture.release()


def _read_video_frame(video: Path, frame: int | None) -> np.ndarray:
    import cv2

    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            raise SampleError(str(video), "video cannot be opened")
        capture.set(cv2.CAP_PROP_POS_FRAMES, frame or 0)
        ok, bgr = capture.read()
    finally:
        capture.release()
    if not ok:
        raise SampleError(str(video), f"frame {frame} cannot be decoded")
    return np.moveaxis(bgr[..., ::-1], -1, 0)  # RGB planes first


class FolderReader(Reader):
    """A generic folder: ``images/`` and optional ``masks/`` paired by stem, in any format SimpleITK
    reads (PNG, JPEG, TIFF, BMP, MetaImage, NIfTI, NRRD) or ``.npy``. Masks are optional."""

    name = "folder"
    require_masks = False

    def __init__(self, root: Path | str, classes: Mapping[int, str] | None = None) -> None:
        super().__init__(root)
        self.classes = dict(classes) if classes else {0: "background", 1: "foreground"}
        self.classes.setdefault(0, "background")

    def scan(self) -> ScanResult:
        self.check_root("images")
        images, rejected = _list_files(self.root / "images", IMAGE_EXTENSIONS, self.name)
        masks: list[Path] = []
        if (self.root / "masks").is_dir():
            masks, rejected_masks = _list_files(self.root / "masks", IMAGE_EXTENSIONS, self.name)
            rejected += rejected_masks
        pairs, orphans = _pair_by_stem(self.name, images, masks)
        refs = [SampleRef(f"folder-{stem(i)}", str(i), str(m) if m else None) for i, m in pairs]
        return ScanResult(refs, rejected + orphans)


class SyntheticReader(Reader):
    """The embedded synthetic generator, as a source: ``n_images`` seeded samples."""

    name = "synthetic"

    def __init__(self, n_images: int, generator_params: Mapping[str, Any]) -> None:
        from sonoseg.synthetic.generator import SyntheticConfig

        super().__init__(Path("synthetic"))
        if n_images < 1:
            raise ValueError(f"ingestion.synthetic.n_images must be >= 1, got {n_images}")
        self.n_images = n_images
        self.config = SyntheticConfig.from_dict(dict(generator_params))

    def scan(self) -> ScanResult:
        return ScanResult([SampleRef(f"syn-{i:06d}", f"synthetic://{i}") for i in range(self.n_images)])

    def load(self, ref: SampleRef) -> RawSample:
        from sonoseg.synthetic.generator import generate

        sample = generate(int(ref.image_file.removeprefix("synthetic://")), self.config)
        return RawSample(ref.sample_id, sample.image, sample.mask, ref.image_file, ref.image_file, sample.subject_id)


FILE_READERS: dict[str, type[Reader]] = {
    reader.name: reader for reader in (PsfhsReader, Hc18Reader, FugcReader, IugcReader, FolderReader)
}
