"""Mean teacher: MSE between the student's and the EMA teacher's softmax on unlabelled images; the
teacher's input gets clipped Gaussian noise, in units of each image's std (DESIGN.md §4). ``teacher_norm``
(see ``EmaTeacherMethod``) picks the statistics the teacher's BatchNorm normalises with."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sonoseg.ssl.base import Batch, StepContext, register_method
from sonoseg.ssl.ema import EmaTeacherMethod, ema_update, make_ema_copy
from sonoseg.ssl.losses import softmax_mse
from sonoseg.ssl.noise import gaussian_input_noise
from sonoseg.ssl.ramps import consistency_weight


@register_method
class MeanTeacher(EmaTeacherMethod):
    name = "mean_teacher"
    DEFAULTS = {"ema_decay": 0.99, "consistency": 0.1, "rampup_fraction": 0.4, "noise_sigma": 0.1, "noise_clip": 0.2}

    def build_networks(self) -> dict[str, nn.Module]:
        student = self.network()
        return {"student": student, "teacher": make_ema_copy(student)}

    def losses(self, labelled: Batch, unlabelled: Batch | None, context: StepContext) -> dict[str, Tensor]:
        s = self.settings
        _, sup = self.supervised(labelled, context)
        if unlabelled is None:
            return {"total": sup, "sup": sup}
        noisy = gaussian_input_noise(unlabelled.images, s["noise_sigma"], s["noise_clip"], generator=context.generator)
        with torch.no_grad(), self.teacher_normalisation("teacher"):
            teacher_logits = self.run("teacher", noisy)
        consistency = softmax_mse(self.run("student", unlabelled.images), teacher_logits)
        weight = consistency_weight(context.iteration, s["consistency"], s["rampup_fraction"] * context.total_iterations)
        return {"total": sup + weight * consistency, "sup": sup, "consistency": consistency}

    def after_step(self, context: StepContext) -> None:
        ema_update(self.inner("teacher"), self.inner("student"), context.iteration, self.settings["ema_decay"])
