"""Figures where a picture beats a table: mask overlays of samples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Label colours (RGBA) for overlays: 1 = PS (orange), 2 = FH (cyan), further labels cycle.
LABEL_COLOURS = np.array([[1.0, 0.55, 0.0, 0.45], [0.0, 0.8, 1.0, 0.35], [0.6, 1.0, 0.2, 0.4], [1.0, 0.2, 0.6, 0.4]])


def overlay_montage(panels: Sequence[tuple[np.ndarray, np.ndarray | None, str]], columns: int = 4, title: str = ""):
    """A matplotlib figure with one panel per (image, mask or None, caption): the grey image with the
    mask's labels overlaid in colour. An empty ``panels`` gives a figure that says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(panels) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if not panels:
        axes.flat[0].text(0.0, 0.5, "no samples", fontsize=12)
    for ax, (image, mask, caption) in zip(axes.flat, panels):
        finite = np.nan_to_num(np.asarray(image, np.float32))
        ax.imshow(finite, cmap="gray")
        if mask is not None:
            mask = np.asarray(mask)
            overlay = np.zeros((*mask.shape, 4))
            for label in np.unique(mask[mask > 0]):
                overlay[mask == label] = LABEL_COLOURS[(int(label) - 1) % len(LABEL_COLOURS)]
            ax.imshow(overlay)
        ax.set_title(caption, fontsize=7, wrap=True)
    if title:
        figure.suptitle(title)
    figure.tight_layout(h_pad=1.5)
    return figure


def learning_curves(history: Sequence[dict[str, float]], val_history: Sequence[dict[str, float]], title: str = ""):
    """Training loss terms per iteration (left) and val Dice per validation (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(11, 4))
    if history:
        steps = [h["iteration"] for h in history]
        for key in (k for k in history[0] if k not in ("iteration", "lr")):
            loss_ax.plot(steps, [h.get(key, np.nan) for h in history], label=key, linewidth=1)
        loss_ax.legend(fontsize=7)
    loss_ax.set(xlabel="iteration", ylabel="loss", title="training losses", yscale="symlog")
    if val_history:
        val_ax.plot([v["iteration"] for v in val_history], [v["val_dice"] for v in val_history], marker="o")
    val_ax.set(xlabel="iteration", ylabel="Dice", title="val Dice (foreground mean)", ylim=(0, 1))
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
