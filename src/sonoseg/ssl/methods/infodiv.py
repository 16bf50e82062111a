"""Information divergence (DESIGN.md §4): a light CNN and a transformer trained together. Each gets
the supervised loss and learns from the other's argmax (Dice cross-supervision); the transformer gets
mixup (ICT) consistency against its EMA copy; both get the divergence loss on all pixels. The light
CNN is deployed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sonoseg.ssl.augment import mixup, sample_beta
from sonoseg.ssl.base import Batch, Method, StepContext, register_method
from sonoseg.ssl.ema import ema_update, make_ema_copy
from sonoseg.ssl.losses import divergence_loss, soft_dice_loss, supervised_loss
from sonoseg.ssl.ramps import consistency_weight


@register_method
class InformationDivergence(Method):
    name = "infodiv"
    DEFAULTS = {
        "cnn": "unext",
        "transformer": "swin_unet",
        # constructor options of the transformer (e.g. {"patch_size": 4}); the CNN is the deployed network
        "transformer_options": {},
        "cross_weight": 1.0,
        "ict_weight": 0.1,
        "divergence_weight": 0.1,
        "mixup_alpha": 0.5,
        "ema_decay": 0.99,
        "rampup_fraction": 0.4,
    }

    def build_networks(self) -> dict[str, nn.Module]:
        cnn = self.network(name=self.settings["cnn"])
        transformer = self.network(name=self.settings["transformer"], **self.settings["transformer_options"])
        return {"student": cnn, "transformer": transformer, "transformer_teacher": make_ema_copy(transformer)}

    def losses(self, labelled: Batch, unlabelled: Batch | None, context: StepContext) -> dict[str, Tensor]:
        s = self.settings
        labelled = self.weak_view(labelled, context)
        n = len(labelled)
        images = labelled.images if unlabelled is None else torch.cat([labelled.images, unlabelled.images])
        cnn_logits, trans_logits = self.run("student", images), self.run("transformer", images)
        sup = supervised_loss(cnn_logits[:n], labelled.masks) + supervised_loss(trans_logits[:n], labelled.masks)
        p_cnn, p_trans = torch.softmax(cnn_logits.float(), 1), torch.softmax(trans_logits.float(), 1)
        divergence = divergence_loss(p_cnn, p_trans)
        terms = {"sup": sup, "divergence": divergence}
        unsup = s["divergence_weight"] * divergence
        if unlabelled is not None:
            onehot = lambda p: F.one_hot(p.argmax(1), p.shape[1]).permute(0, 3, 1, 2).float()  # noqa: E731
            cross = soft_dice_loss(p_cnn[n:], onehot(p_trans[n:]).detach()) + soft_dice_loss(
                p_trans[n:], onehot(p_cnn[n:]).detach()
            )
            lam = sample_beta(s["mixup_alpha"], context.generator)
            order = torch.randperm(len(unlabelled), generator=context.generator).to(images.device)
            mixed = mixup(unlabelled.images, unlabelled.images[order], lam)
            with torch.no_grad():
                target = torch.softmax(self.run("transformer_teacher", unlabelled.images).float(), 1)
                target = mixup(target, target[order], lam)
            ict = F.mse_loss(torch.softmax(self.run("transformer", mixed).float(), 1), target)
            terms.update(cross=cross, ict=ict)
            unsup = unsup + s["cross_weight"] * cross + s["ict_weight"] * ict
        weight = consistency_weight(context.iteration, 1.0, s["rampup_fraction"] * context.total_iterations)
        return {"total": sup + weight * unsup, **terms}

    def after_step(self, context: StepContext) -> None:
        ema_update(self.inner("transformer_teacher"), self.inner("transformer"), context.iteration, self.settings["ema_decay"])
