"""Each reader on a small fixture in its layout, and on the real data when ../shared/data is present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.layouts import (
    write_fugc,
    write_hc18,
    write_iugc,
    write_folder,
    write_mha,
    write_png,
    write_psfhs,
)

from sonoseg.io.readers import FolderReader, FugcReader, Hc18Reader, IugcReader, PsfhsReader, fill_outline
from sonoseg.io.samples import SampleError, SourceError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def load_all(reader):
    scan = reader.scan()
    return [reader.load(ref) for ref in scan.refs], scan.rejected


def test_psfhs_reads_pairs_keeps_one_plane_and_reports_no_spacing(tmp_path):
    write_psfhs(tmp_path, n=3, size=32)
    samples, rejected = load_all(PsfhsReader(tmp_path))
    assert rejected == []
    assert [s.sample_id for s in samples] == ["psfhs-00001", "psfhs-00002", "psfhs-00003"]
    for sample in samples:
        assert sample.image.shape == (32, 32) and sample.image.dtype == np.uint8
        assert set(np.unique(sample.mask)) <= {0, 1, 2} and sample.mask.shape == (32, 32)
        assert sample.spacing_mm is None  # the release's 1,1,1 is a placeholder


def test_psfhs_orphan_label_and_stray_file_are_rejected_not_ignored(tmp_path):
    write_psfhs(tmp_path, n=2, size=32)
    write_mha(tmp_path / "label_mha" / "09999.mha", np.zeros((32, 32), np.uint8))
    (tmp_path / "image_mha" / "notes.txt").write_text("x")
    scan = PsfhsReader(tmp_path).scan()
    assert len(scan.refs) == 2
    reasons = {Path(r.file).name: r.reason for r in scan.rejected}
    assert "no matching image" in reasons["09999.mha"]
    assert "unsupported file type" in reasons["notes.txt"]


def test_psfhs_image_without_label_is_kept_unpaired(tmp_path):
    write_psfhs(tmp_path, n=2, size=32)
    (tmp_path / "label_mha" / "00002.mha").unlink()
    scan = PsfhsReader(tmp_path).scan()
    assert [r.mask_file is None for r in scan.refs] == [False, True]


@pytest.mark.parametrize("missing", ["root", "image_mha"])
def test_missing_folder_is_a_clear_source_error(tmp_path, missing):
    root = tmp_path / "psfhs"
    if missing == "image_mha":
        (root / "label_mha").mkdir(parents=True)
    with pytest.raises(SourceError, match=r"needs the folder .*(psfhs|image_mha)"):
        PsfhsReader(root).scan()


def test_unreadable_folder_is_a_clear_source_error(tmp_path, monkeypatch):
    import os

    root = tmp_path / "images_root"
    write_folder(root)
    images = root / "images"
    images.chmod(0)
    if os.geteuid() == 0:  # root reads any folder: make listing this one fail as it would for a user
        real_iterdir = Path.iterdir

        def refuse(self):
            if self == images:
                raise PermissionError(13, "Permission denied", str(self))
            return real_iterdir(self)

        monkeypatch.setattr(Path, "iterdir", refuse)
    try:
        with pytest.raises(SourceError, match="cannot be read: Permission denied"):
            FolderReader(root).scan()
    finally:
        images.chmod(0o755)


def test_hc18_fills_outlines_groups_by_subject_and_takes_csv_spacing(tmp_path):
    sizes = write_hc18(tmp_path, {"000": 1, "003": 2}, size=48)
    samples, rejected = load_all(Hc18Reader(tmp_path))
    assert rejected == []
    by_id = {s.sample_id: s for s in samples}
    assert set(by_id) == {"hc18-000_HC", "hc18-003_HC", "hc18-003_2HC"}
    assert by_id["hc18-003_2HC"].subject_id == by_id["hc18-003_HC"].subject_id == "hc18-003"
    assert by_id["hc18-000_HC"].spacing_mm == (sizes["000_HC.png"], sizes["000_HC.png"])
    mask = by_id["hc18-000_HC"].mask
    # a filled ellipse with semi-axes 16 and 12 px: area pi*16*12 ~ 603 px, outline included
    assert set(np.unique(mask)) == {0, 1}
    assert 540 < mask.sum() < 700
    assert mask[24, 24] == 1 and mask[0, 0] == 0


def test_fill_outline_closes_an_open_outline_by_ellipse_fit():
    import cv2

    outline = np.zeros((64, 64), np.uint8)
    cv2.ellipse(outline, (32, 32), (20, 14), 0, 0, 330, 255, 1)  # a 30° gap
    filled = fill_outline(outline, "open.png")
    assert abs(int(filled.sum()) - np.pi * 20 * 14) < 0.12 * np.pi * 20 * 14
    with pytest.raises(SampleError, match="empty"):
        fill_outline(np.zeros((8, 8), np.uint8), "blank.png")


def test_hc18_without_csv_is_a_clear_source_error(tmp_path):
    write_hc18(tmp_path, {"000": 1})
    (tmp_path / "training_set_pixel_size_and_HC.csv").unlink()
    with pytest.raises(SourceError, match="training_set_pixel_size_and_HC.csv"):
        Hc18Reader(tmp_path).scan()


def test_fugc_turns_rgb_grey_and_keeps_unlabelled_frames(tmp_path):
    write_fugc(tmp_path, n_labelled=3, n_unlabelled=2, shape=(34, 54))
    samples, rejected = load_all(FugcReader(tmp_path))
    assert rejected == []
    labelled = [s for s in samples if s.mask is not None]
    assert len(labelled) == 3 and len(samples) == 5
    assert all(s.image.shape == (34, 54) and s.image.ndim == 2 for s in samples)
    assert set(np.unique(np.concatenate([s.mask.ravel() for s in labelled]))) == {0, 1, 2}


def test_iugc_reads_annotated_frames_remaps_7_8_and_adds_strided_unlabelled(tmp_path):
    write_iugc(tmp_path, {"case01": [2, 4]}, n_frames=6, size=32)
    samples, rejected = load_all(IugcReader(tmp_path, unlabelled_stride=3))
    assert rejected == []
    by_id = {s.sample_id: s for s in samples}
    assert set(by_id) == {"iugc-case01-f00002", "iugc-case01-f00004", "iugc-case01-f00000", "iugc-case01-f00003"}
    annotated = by_id["iugc-case01-f00002"]
    assert set(np.unique(annotated.mask)) == {0, 1, 2}
    assert annotated.image.shape == (32, 32) and annotated.subject_id == "iugc-case01"
    assert by_id["iugc-case01-f00003"].mask is None


def test_iugc_mask_for_a_frame_past_the_end_is_a_sample_error(tmp_path):
    write_iugc(tmp_path, {"case01": [40]}, n_frames=4)
    reader = IugcReader(tmp_path)
    (ref,) = reader.scan().refs
    with pytest.raises(SampleError, match="frame 40"):
        reader.load(ref)


def test_iugc_undecodable_video_rejects_it_and_its_masks(tmp_path):
    write_iugc(tmp_path, {"case01": [1]}, n_frames=3)
    (tmp_path / "pos" / "case01" / "case01.avi").write_bytes(b"not a video")
    scan = IugcReader(tmp_path).scan()
    assert scan.refs == []
    assert {Path(r.file).name for r in scan.rejected} == {"case01.avi", "case01_1_mask.png"}


def test_folder_pairs_by_stem_masks_optional_and_npy_supported(tmp_path):
    write_folder(tmp_path, n_with_masks=3, n_without=1)
    samples, rejected = load_all(FolderReader(tmp_path, classes={0: "bg", 1: "head"}))
    assert rejected == []
    by_id = {s.sample_id: s for s in samples}
    assert by_id["folder-case0"].image.dtype == np.float32  # the .npy keeps its dtype
    assert by_id["folder-case3"].mask is None
    assert sum(s.mask is not None for s in samples) == 3


def test_folder_reads_real_spacing_from_metaimage(tmp_path):
    write_mha(tmp_path / "images" / "a.mha", np.arange(64, dtype=np.uint8).reshape(8, 8), spacing=(0.2, 0.3))
    (sample,) = load_all(FolderReader(tmp_path))[0]
    assert sample.spacing_mm == pytest.approx((0.3, 0.2))  # (row, col) from ITK's (x, y)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"\x89PNG garbage", "cannot decode")],
    ids=["zero-byte", "corrupted"],
)
def test_bad_image_file_raises_sample_error_naming_the_file(tmp_path, content, reason):
    (tmp_path / "images").mkdir()
    bad = tmp_path / "images" / "bad.png"
    bad.write_bytes(content)
    reader = FolderReader(tmp_path)
    (ref,) = reader.scan().refs
    with pytest.raises(SampleError, match=reason) as excinfo:
        reader.load(ref)
    assert excinfo.value.file == str(bad)


def test_colour_mask_with_differing_planes_is_refused(tmp_path):
    write_png(tmp_path / "images" / "a.png", np.full((8, 8), 9, np.uint8))
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 0] = 1
    write_png(tmp_path / "masks" / "a.png", colour)
    reader = FolderReader(tmp_path)
    with pytest.raises(SampleError, match="differing planes"):
        reader.load(reader.scan().refs[0])


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "psfhs").is_dir(), reason="../shared/data/psfhs is absent")
def test_real_psfhs_first_pairs():
    reader = PsfhsReader(SHARED_DATA / "psfhs")
    scan = reader.scan()
    assert len(scan.refs) == 1050 and scan.rejected == []
    sample = reader.load(scan.refs[0])
    assert sample.image.shape == (256, 256) and sample.image.dtype == np.uint8
    assert set(np.unique(sample.mask)) == {0, 1, 2}


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "hc18").is_dir(), reason="../shared/data/hc18 is absent")
def test_real_hc18_filled_masks_and_subjects():
    reader = Hc18Reader(SHARED_DATA / "hc18")
    scan = reader.scan()
    assert len(scan.refs) == 344 and scan.rejected == []
    assert all(ref.spacing_mm is not None for ref in scan.refs)
    subjects = {ref.subject_id for ref in scan.refs}
    assert len(subjects) < len(scan.refs)  # repeats (NNN_2HC) share their subject
    sample = reader.load(scan.refs[0])
    # HC18 heads fill a sizeable, single region of the frame
    assert 0.02 < sample.mask.mean() < 0.6
