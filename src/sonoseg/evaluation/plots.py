"""Figures where a picture beats a table: mask overlays, learning curves, metric distributions and
Bland–Altman plots of the clinical measurements."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Label colours (RGBA) for overlays: 1 = PS (orange), 2 = FH (cyan), further labels cycle.
LABEL_COLOURS = np.array([[1.0, 0.55, 0.0, 0.45], [0.0, 0.8, 1.0, 0.35], [0.6, 1.0, 0.2, 0.4], [1.0, 0.2, 0.6, 0.4]])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colour(label: int) -> np.ndarray:
    return LABEL_COLOURS[(int(label) - 1) % len(LABEL_COLOURS)]


def overlay_montage(panels: Sequence[tuple[np.ndarray, np.ndarray | None, str]], columns: int = 4, title: str = ""):
    """A matplotlib figure with one panel per (image, mask or None, caption): the grey image with the
    mask's labels overlaid in colour. An empty ``panels`` gives a figure that says so."""
    plt = _pyplot()
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
                overlay[mask == label] = _colour(label)
            ax.imshow(overlay)
        ax.set_title(caption, fontsize=7, wrap=True)
    if title:
        figure.suptitle(title)
    figure.tight_layout(h_pad=1.5)
    return figure


def learning_curves(history: Sequence[dict[str, float]], val_history: Sequence[dict[str, float]], title: str = ""):
    """Training loss terms per iteration (left) and val Dice per validation (right)."""
    plt = _pyplot()
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


def contour_comparison(
    panels: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, str]], labels: Sequence[int], title: str = ""
):
    """One panel per (image, truth, prediction, caption): the grey image with each label's truth contour as a
    solid line and its predicted contour dashed, in the label's colour, so misses and spills both show."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    columns = max(1, len(panels))
    figure, axes = plt.subplots(1, columns, figsize=(3.6 * columns, 3.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if not panels:
        axes.flat[0].text(0.0, 0.5, "no cases", fontsize=12)
    for ax, (image, truth, prediction, caption) in zip(axes.flat, panels):
        ax.imshow(np.nan_to_num(np.asarray(image, np.float32)), cmap="gray")
        for label in labels:
            colour = _colour(label)[:3]
            for mask, style in ((truth, "solid"), (prediction, "dashed")):
                region = (np.asarray(mask) == label).astype(np.float32)
                if region.any():
                    ax.contour(region, levels=[0.5], colors=[colour], linestyles=style, linewidths=1.2)
        ax.set_title(caption, fontsize=8)
    handles = [Line2D([], [], color="white", linestyle="solid", label="truth"),
               Line2D([], [], color="white", linestyle="dashed", label="prediction")]  # fmt: skip
    axes.flat[0].legend(handles=handles, loc="lower left", fontsize=7, facecolor="black", labelcolor="white")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def metric_distributions(table, metrics: Sequence[str] = ("dice", "iou", "hd95", "assd"), title: str = ""):
    """Per-class distributions over cases (box plot plus every case as a dot), one panel per metric.

    Args:
        table: per-case metrics with the columns ``class``, ``unit`` and each metric.
    """
    plt = _pyplot()
    classes = list(dict.fromkeys(table["class"]))
    unit = table["unit"].iloc[0] if len(table) else "px"
    figure, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.6), squeeze=False)
    jitter = np.random.default_rng(0)
    for ax, metric in zip(axes.flat, metrics):
        values = [table.loc[table["class"] == c, metric].to_numpy(float) for c in classes]
        ax.boxplot(values, tick_labels=classes, showfliers=False)
        for position, column in enumerate(values, start=1):
            ax.scatter(position + jitter.uniform(-0.12, 0.12, len(column)), column, s=6, alpha=0.6)
        distance = metric in ("hd95", "assd")
        ax.set(title=metric.upper() if distance else metric.capitalize(), ylabel=unit if distance else "")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def bland_altman(measures: Sequence[tuple[str, np.ndarray, np.ndarray, str]], title: str = ""):
    """One Bland–Altman panel per (name, predicted, truth, unit): the difference against the mean of each
    pair, with the bias and the 95 % limits of agreement. Pairs with a NaN on either side are left out and
    counted in the panel's title."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, max(1, len(measures)), figsize=(4.2 * max(1, len(measures)), 3.8), squeeze=False)
    if not measures:
        axes.flat[0].axis("off")
        axes.flat[0].text(0.0, 0.5, "no measurements", fontsize=12)
    for ax, (name, predicted, truth, unit) in zip(axes.flat, measures):
        predicted, truth = np.asarray(predicted, float), np.asarray(truth, float)
        valid = np.isfinite(predicted) & np.isfinite(truth)
        mean, difference = (predicted[valid] + truth[valid]) / 2, predicted[valid] - truth[valid]
        ax.scatter(mean, difference, s=10, alpha=0.7)
        if difference.size:
            bias, spread = float(difference.mean()), 1.96 * float(difference.std(ddof=1)) if difference.size > 1 else 0.0
            for level, style in ((bias, "solid"), (bias - spread, "dashed"), (bias + spread, "dashed")):
                ax.axhline(level, color="grey", linestyle=style, linewidth=1)
            ax.text(0.02, 0.95, f"bias {bias:.2f}, LoA ±{spread:.2f}", transform=ax.transAxes, fontsize=7, va="top")
        skipped = int((~valid).sum())
        ax.set(xlabel=f"mean of predicted and truth ({unit})", ylabel=f"predicted − truth ({unit})",
               title=f"{name} (n={int(valid.sum())}" + (f", {skipped} unmeasurable)" if skipped else ")"))  # fmt: skip
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
