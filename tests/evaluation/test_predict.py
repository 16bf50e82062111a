import numpy as np
import pytest
import torch

from sonoseg.evaluation.predict import Predictor, resize_labels
from support.training import train


def test_resize_labels_is_nearest_neighbour_and_keeps_label_values():
    mask = np.array([[0, 1], [2, 0]], np.uint8)
    big = resize_labels(mask, (4, 6))
    assert big.shape == (4, 6)
    assert set(np.unique(big)) == {0, 1, 2}
    np.testing.assert_array_equal(big[:2, :3], 0)
    np.testing.assert_array_equal(big[:2, 3:], 1)
    np.testing.assert_array_equal(big[2:, :3], 2)


@pytest.mark.parametrize("method", ["supervised", "hdc", "cotrain"])
def test_a_checkpoint_alone_predicts_at_each_images_own_size(tmp_path, method):
    _, result = train(method, tmp_path / "store", tmp_path / "models")
    predictor = Predictor.from_checkpoint(result.best_checkpoint)
    assert predictor.input_size == 32 and predictor.num_classes == 3
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (50, 70), dtype=np.uint8),
        rng.random((3, 40, 40)).astype(np.float32),  # three identical planes are one grey image
        rng.integers(0, 256, (32, 32), dtype=np.uint8),
    ]
    images[1][1:] = images[1][0]
    masks = list(predictor.predict_many(images, batch_size=2))
    assert [m.shape for m in masks] == [(50, 70), (40, 40), (32, 32)]
    assert all(m.dtype == np.uint8 and m.max() < 3 for m in masks)
    # at the input size no resizing happens: the mask is the network's own argmax
    with torch.no_grad():
        logits = predictor.network(torch.from_numpy(images[2].astype(np.float32) / 255)[None, None])
    np.testing.assert_array_equal(masks[2], logits.argmax(1)[0].numpy())
    np.testing.assert_array_equal(predictor.predict(images[0]), masks[0])


def test_an_old_or_foreign_checkpoint_is_refused_with_its_path(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"method": "hdc", "networks": {}}, path)
    with pytest.raises(ValueError, match="foreign.pt.*input_size"):
        Predictor.from_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        Predictor.from_checkpoint(tmp_path / "missing.pt")
