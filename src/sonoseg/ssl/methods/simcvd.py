"""SimCVD adapted to 2D (DESIGN.md §4): an EMA mean teacher whose networks add a signed-distance-map
head. The boundary-aware input (image + predicted SDM) is projected into pooled-patch embeddings;
losses are symmetric InfoNCE between teacher and student patches, pair-wise similarity distillation
on encoder features, MSE consistency, and the SDM regression on labelled images. ``teacher_norm`` (see
``EmaTeacherMethod``) picks the statistics the teacher's BatchNorm normalises with."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sonoseg.ssl.base import Batch, StepContext, register_method
from sonoseg.ssl.ema import EmaTeacherMethod, ema_update, make_ema_copy
from sonoseg.ssl.losses import (
    info_nce,
    pairwise_similarity_distillation,
    sdm_ground_truth,
    softmax_mse,
    supervised_loss,
)
from sonoseg.ssl.noise import gaussian_input_noise
from sonoseg.ssl.ramps import consistency_weight


@register_method
class SimCVD(EmaTeacherMethod):
    name = "simcvd"
    DEFAULTS = {
        "ema_decay": 0.99,
        "sdm_weight": 0.1,
        "contrastive_weight": 0.5,
        "nce_temperature": 0.5,
        "distill_weight": 0.1,
        "consistency_weight": 0.1,
        "rampup_fraction": 0.4,
        "noise_sigma": 0.1,
        "noise_clip": 0.2,
        "patch_grid": 4,
        "projection_dropout": 0.1,  # AlphaDropout p in the projection head
    }

    def build_networks(self) -> dict[str, nn.Module]:
        from sonoseg.models import ProjectionHead, with_sdm_head

        student = with_sdm_head(self.network())
        projector = ProjectionHead(
            student.in_channels + self.num_classes - 1,
            patch_grid=self.settings["patch_grid"],
            alpha_dropout=self.settings["projection_dropout"],
        )
        return {
            "student": student,
            "projector": projector,
            "teacher": make_ema_copy(student),
            "teacher_projector": make_ema_copy(projector),
        }

    def _embed(self, role: str, projector: str, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Logits, patch embeddings (N·P, D) of the boundary-aware input, and the bottleneck features."""
        logits, sdm, features = self.run(role, images, route="forward_with_sdm")
        patches = self.run(projector, torch.cat([images, sdm], 1))
        return logits, patches.flatten(0, 1), features[-1]

    def losses(self, labelled: Batch, unlabelled: Batch | None, context: StepContext) -> dict[str, Tensor]:
        s = self.settings
        labelled = self.weak_view(labelled, context)
        logits, sdm, _ = self.run("student", labelled.images, route="forward_with_sdm")
        sup = supervised_loss(logits, labelled.masks)
        target_sdm = torch.as_tensor(
            sdm_ground_truth(labelled.masks.cpu().numpy(), self.num_classes), dtype=sdm.dtype, device=sdm.device
        )
        sdm_loss = F.mse_loss(sdm, target_sdm)
        terms = {"sup": sup, "sdm": sdm_loss}
        total = sup + s["sdm_weight"] * sdm_loss
        if unlabelled is not None:
            images = torch.cat([labelled.images, unlabelled.images])
            student_logits, student_patches, student_features = self._embed("student", "projector", images)
            noisy = gaussian_input_noise(images, s["noise_sigma"], s["noise_clip"], generator=context.generator)
            with torch.no_grad(), self.teacher_normalisation("teacher"):
                teacher_logits, teacher_patches, teacher_features = self._embed("teacher", "teacher_projector", noisy)
            terms["contrastive"] = info_nce(student_patches, teacher_patches, s["nce_temperature"])
            terms["distill"] = pairwise_similarity_distillation(student_features, teacher_features)
            terms["consistency"] = softmax_mse(student_logits, teacher_logits)
            unsup = (
                s["contrastive_weight"] * terms["contrastive"]
                + s["distill_weight"] * terms["distill"]
                + s["consistency_weight"] * terms["consistency"]
            )
            total = total + consistency_weight(context.iteration, 1.0, s["rampup_fraction"] * context.total_iterations) * unsup
        return {"total": total, **terms}

    def after_step(self, context: StepContext) -> None:
        decay = self.settings["ema_decay"]
        ema_update(self.inner("teacher"), self.inner("student"), context.iteration, decay)
        ema_update(self.inner("teacher_projector"), self.inner("projector"), context.iteration, decay)
