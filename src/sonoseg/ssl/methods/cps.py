"""Cross pseudo supervision: two differently initialised networks, each learning from the other's
argmax on unlabelled images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sonoseg.ssl.base import Batch, Method, StepContext, register_method
from sonoseg.ssl.ramps import consistency_weight


@register_method
class CrossPseudoSupervision(Method):
    name = "cps"
    DEFAULTS = {"cps_weight": 0.1, "rampup_fraction": 0.4, "second_init_seed": 1}

    def build_networks(self) -> dict[str, nn.Module]:
        first = self.network()
        with torch.random.fork_rng():
            torch.manual_seed(self.settings["second_init_seed"])
            second = self.network()
        return {"student": first, "peer": second}

    def losses(self, labelled: Batch, unlabelled: Batch | None, context: StepContext) -> dict[str, Tensor]:
        s = self.settings
        labelled, sup = self.supervised(labelled, context, "student", "peer")
        if unlabelled is None:
            return {"total": sup, "sup": sup}
        images = torch.cat([labelled.images, unlabelled.images])
        a, b = self.run("student", images), self.run("peer", images)
        cross = F.cross_entropy(a, b.argmax(1).detach()) + F.cross_entropy(b, a.argmax(1).detach())
        weight = consistency_weight(context.iteration, s["cps_weight"], s["rampup_fraction"] * context.total_iterations)
        return {"total": sup + weight * cross, "sup": sup, "cps": cross}
