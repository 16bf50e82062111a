"""Prediction with a trained checkpoint at the original resolution of each image.

The checkpoint alone is enough: it names the method, its settings, the network and the input size, so
the method is rebuilt and its deployed network (``Method.inference_network``) predicts. Images are
preprocessed exactly as in training (grey, scaled to [0, 1], area-resized to the input size) and the
label map is resized back with nearest neighbour (DESIGN.md §5).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from sonoseg.io.decode import to_grey_2d
from sonoseg.training.data import normalise_image


def resize_labels(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A label map resized to ``shape`` (rows, cols) by nearest neighbour."""
    import cv2

    if mask.shape == tuple(shape):
        return mask
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


class Predictor:
    """Segments 2-D images of any size with one network.

    Args:
        network: maps (N, 1, S, S) images in [0, 1] to (N, C, S, S) logits.
        input_size: S, the network input size it was trained at.
        num_classes: C, background included.
        device: where the network runs.
    """

    def __init__(self, network: torch.nn.Module, input_size: int, num_classes: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.input_size = input_size
        self.num_classes = num_classes

    @classmethod
    def from_checkpoint(cls, path: Path | str, device: torch.device | str = "cpu") -> Predictor:
        """The deployed network of a trainer checkpoint (``best.pt`` or ``last.pt``)."""
        from sonoseg.ssl.base import build_method

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such checkpoint")
        state = torch.load(path, map_location="cpu", weights_only=False)
        missing = {"method", "networks", "model", "settings", "num_classes", "input_size"} - set(state)
        if missing:
            raise ValueError(f"{path} is not a sonoseg checkpoint with everything needed to predict (missing {sorted(missing)})")
        method = build_method(state["method"], state["settings"], state["model"], state["num_classes"])
        for role, weights in state["networks"].items():
            method.inner(role).load_state_dict(weights)
        return cls(method.inference_network(), int(state["input_size"]), int(state["num_classes"]), device)

    def preprocess(self, grey: np.ndarray) -> torch.Tensor:
        """(1, S, S) float tensor from a 2-D grey image of any dtype."""
        import cv2

        grey = normalise_image(grey)
        size = self.input_size
        if grey.shape != (size, size):
            grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(np.ascontiguousarray(grey))[None]

    @torch.no_grad()
    def predict_many(self, images: Iterable[np.ndarray], batch_size: int = 16) -> Iterator[np.ndarray]:
        """Label maps (uint8) at each image's own size, in order, ``batch_size`` at a time."""
        pending: list[np.ndarray] = []
        for image in images:
            pending.append(np.asarray(image))
            if len(pending) == batch_size:
                yield from self._predict_batch(pending)
                pending = []
        if pending:
            yield from self._predict_batch(pending)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """The label map (uint8) of one image, at its own size."""
        return next(self.predict_many([image], batch_size=1))

    def _predict_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        greys = [to_grey_2d(image, "image") for image in images]
        batch = torch.stack([self.preprocess(grey) for grey in greys]).to(self.device)
        labels = self.network(batch).argmax(1).to(torch.uint8).cpu().numpy()
        return [resize_labels(label, grey.shape) for label, grey in zip(labels, greys)]
