"""FixMatch, with UniMatch's extras as settings: the weak view's confident predictions are pseudo
labels for ``strong_views`` photometric strong views, and (UniMatch) for a feature-dropout view.
Each view learns them by a confidence-masked CE plus ``dice_weight`` times a confidence-masked soft
Dice (DESIGN.md §4: "CE/Dice"); with the CE alone, background pixels outweigh the pubic symphysis.
``class_ceiling_threshold`` scales the threshold per class by the class's confidence ceiling in the
batch, so a class whose confidence the network caps below it is still pseudo-labelled; ``class_keep_share``
lowers each class's threshold, where needed, to let that share of the class's own pixels through (CBST), so a
class the network labels right but unsurely is still taught."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sonoseg.ssl.augment import strong_augment, weak_augment
from sonoseg.ssl.base import Batch, Method, StepContext, register_method
from sonoseg.ssl.losses import (
    confidence_masked_ce,
    confidence_masked_dice,
    pseudo_label_shares,
    pseudo_label_threshold,
)
from sonoseg.ssl.ramps import consistency_weight


@register_method
class FixMatch(Method):
    name = "fixmatch"
    # strong_views 1 and feature_dropout 0 is FixMatch; 2 and 0.5 is UniMatch.
    DEFAULTS = {
        "threshold": 0.95,
        "unsup_weight": 1.0,
        "strong_views": 2,
        "feature_dropout": 0.5,
        "dice_weight": 1.0,
        "dice_only_confident_classes": False,
        "rampup_fraction": 0.0,
        "class_ceiling_threshold": False,
        "class_keep_share": 0.0,
    }

    def build_networks(self) -> dict[str, nn.Module]:
        return {"student": self.network()}

    def losses(self, labelled: Batch, unlabelled: Batch | None, context: StepContext) -> dict[str, Tensor]:
        s = self.settings
        _, sup = self.supervised(labelled, context)
        if unlabelled is None:
            return {"total": sup, "sup": sup}
        weak, _ = weak_augment(unlabelled.images, None, generator=context.generator)
        with torch.no_grad():
            pseudo = torch.softmax(self.run("student", weak), 1)
        threshold = pseudo_label_threshold(pseudo, s["threshold"], s["class_ceiling_threshold"], s["class_keep_share"])
        terms = pseudo_label_shares(pseudo, threshold)
        strong = [
            self._pseudo_label_loss(
                self.run("student", strong_augment(weak, generator=context.generator)), pseudo, threshold
            )
            for _ in range(s["strong_views"])
        ]
        unsup = torch.stack(strong).mean()
        terms["strong"] = unsup
        if s["feature_dropout"] > 0:
            features = self.run("student", weak, route="encode")
            dropped = [F.dropout2d(f, p=s["feature_dropout"], training=True) for f in features]
            logits = self.run("student", self.run("student", dropped, route="decode"), route="head")
            terms["feature_dropout"] = self._pseudo_label_loss(logits, pseudo, threshold)
            unsup = 0.5 * unsup + 0.5 * terms["feature_dropout"]
        weight = consistency_weight(context.iteration, s["unsup_weight"], s["rampup_fraction"] * context.total_iterations)
        return {"total": sup + weight * unsup, "sup": sup, **terms}

    def _pseudo_label_loss(self, logits: Tensor, pseudo: Tensor, threshold: float | Tensor) -> Tensor:
        """Confidence-masked CE, plus ``dice_weight`` times the confidence-masked soft Dice, against ``pseudo``."""
        s = self.settings
        loss = confidence_masked_ce(logits, pseudo, threshold)[0]
        if s["dice_weight"] > 0:
            dice = confidence_masked_dice(logits, pseudo, threshold, s["dice_only_confident_classes"])
            loss = loss + s["dice_weight"] * dice
        return loss
