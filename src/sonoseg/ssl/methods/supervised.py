"""The bounds: ``supervised`` trains on the labelled samples only (the lower bound) and
``fully_supervised`` on every training-side mask (the upper bound), with the same code."""

from __future__ import annotations

from torch import Tensor, nn

from sonoseg.ssl.base import Batch, Method, StepContext, register_method


@register_method
class Supervised(Method):
    name = "supervised"
    uses_unlabelled = False

    def build_networks(self) -> dict[str, nn.Module]:
        return {"student": self.network()}

    def losses(self, labelled: Batch, unlabelled: Batch | None, context: StepContext) -> dict[str, Tensor]:
        _, loss = self.supervised(labelled, context)
        return {"total": loss, "sup": loss}


@register_method
class FullySupervised(Supervised):
    name = "fully_supervised"
    uses_all_labels = True
