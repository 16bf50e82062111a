"""HDC, Hierarchical Distillation for multi-level noisy Consistency (DESIGN.md §4).

An EMA teacher and a student with one shared encoder and two decoders (main, noisy). Noise comes
at three levels: a weak view for the teacher, a strong view for the student (optionally with
Gaussian noise, ``input_noise_sigma``; 0 turns it off), and a feature perturbation before the noisy
decoder (uniform noise, Dropout2d, attention-guided dropout or a VAT direction found through the
noisy decoder; ``perturbation_strength`` is its amplitude, p or ε). Losses: supervised on both
decoders; confidence-masked CE of both decoders against the teacher's argmax (averaged over all
pixels, or per pseudo-class with ``pix_average: class``; plus a masked soft Dice when ``pix_dice`` > 0;
the teacher's confidence threshold is hdc's own ``threshold``, made per class as fixmatch's is, with
``class_ceiling_threshold`` or ``class_keep_share``);
correlation guidance (the student's feature affinity map, through a fixed random projection, follows
the teacher's); and IIC mutual information between the two decoders. ``teacher_norm`` (see
``EmaTeacherMethod``) picks the statistics the teacher's BatchNorm normalises with.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sonoseg.ssl.augment import strong_augment, weak_augment
from sonoseg.ssl.base import Batch, StepContext, register_method
from sonoseg.ssl.ema import EmaTeacherMethod, ema_update, make_ema_copy
from sonoseg.ssl.losses import (
    confidence_masked_ce,
    confidence_masked_dice,
    correlation_guidance_kl,
    iic_mutual_information,
    pseudo_label_shares,
    pseudo_label_threshold,
    supervised_loss,
)
from sonoseg.ssl.noise import gaussian_input_noise, make_perturbation
from sonoseg.ssl.ramps import consistency_weight


@register_method
class HierarchicalDistillation(EmaTeacherMethod):
    name = "hdc"
    DEFAULTS = {
        "ema_decay": 0.99,
        "threshold": 0.8,
        "class_ceiling_threshold": False,  # as fixmatch's: per-class thresholds, scaled by each class's ceiling
        "class_keep_share": 0.0,  # as fixmatch's: each class's bar lowered to keep that share of its pixels
        "pix_average": "all",  # all | class: see confidence_masked_ce; class keeps a small structure from shrinking
        "pix_dice": 0.0,  # weight of a confidence-masked soft Dice term added to L_pix (0: the CE alone)
        "w_max": 1.0,
        "rampup_fraction": 0.4,
        "lambda_pix": 1.0,
        "lambda_cg": 0.1,
        "lambda_mi": 0.1,
        "perturbation": "uniform",  # uniform | dropout | attention | vat | none
        "perturbation_strength": 0.3,  # uniform: amplitude; dropout: p; vat: ε (attention, none: unused)
        "input_noise_sigma": 0.0,  # Gaussian noise on the strong view, in image stds; 0 keeps the strong view as it is
        "input_noise_clip": 0.2,
        "cg_positions": 64,
        "cg_temperature": 0.1,
        "projection_dim": 32,
    }

    def build_networks(self) -> dict[str, nn.Module]:
        from sonoseg.models import DualDecoderNet

        s = self.settings
        options = dict(self.model_options)
        perturbation = make_perturbation(s["perturbation"], strength=s["perturbation_strength"])
        student = DualDecoderNet(options.pop("name"), perturbation=perturbation, num_classes=self.num_classes, **options)
        # A fixed random projection: trained by L_CG alone, a projector learns to map every position to one
        # vector, which makes both affinity maps uniform and L_CG zero (seen on PSFHS: cosine 0.998 between
        # positions). Fixed, it keeps the encoder's affinities (inner products are roughly preserved), so L_CG
        # trains the student's encoder. The teacher's copy stays equal to it.
        projector = nn.Conv2d(student.bottleneck_channels, s["projection_dim"], kernel_size=1)
        nn.init.zeros_(projector.bias)
        projector.requires_grad_(False)
        return {
            "student": student,
            "projector": projector,
            "teacher": make_ema_copy(student),
            "teacher_projector": make_ema_copy(projector),
        }

    def losses(self, labelled: Batch, unlabelled: Batch | None, context: StepContext) -> dict[str, Tensor]:
        s = self.settings
        labelled = self.weak_view(labelled, context)
        n = len(labelled)
        if unlabelled is None:
            main, noisy, _ = self.run("student", labelled.images, route="forward_dual")
            sup = supervised_loss(main, labelled.masks) + supervised_loss(noisy, labelled.masks)
            return {"total": sup, "sup": sup}

        weak, _ = weak_augment(unlabelled.images, None, generator=context.generator)
        strong = strong_augment(weak, generator=context.generator)  # photometric: aligned with the weak view
        if s["input_noise_sigma"] > 0:  # skipped at 0 so that the generator's draws stay as they were
            strong = gaussian_input_noise(strong, s["input_noise_sigma"], s["input_noise_clip"], generator=context.generator)
        # the teacher needs its main decoder and encoder features only; with teacher_norm: batch its BatchNorm
        # normalises the unlabelled batch alone, the student's the labelled and unlabelled images together
        with torch.no_grad(), self.teacher_normalisation("teacher"):
            teacher_features = self.run("teacher", weak, route="encode")
            teacher_logits = self.run("teacher", self.run("teacher", teacher_features, route="decode"), route="head")
            teacher_probs = torch.softmax(teacher_logits.float(), 1)
            teacher_proj = self.run("teacher_projector", teacher_features[-1])
        # one student pass over labelled and strong unlabelled images together
        main, noisy, features = self.run("student", torch.cat([labelled.images, strong]), route="forward_dual")
        sup = supervised_loss(main[:n], labelled.masks) + supervised_loss(noisy[:n], labelled.masks)
        main, noisy = main[n:], noisy[n:]
        threshold = pseudo_label_threshold(teacher_probs, s["threshold"], s["class_ceiling_threshold"], s["class_keep_share"])
        pix = sum(confidence_masked_ce(logits, teacher_probs, threshold, s["pix_average"])[0] for logits in (main, noisy))
        if s["pix_dice"] > 0:
            pix = pix + s["pix_dice"] * sum(confidence_masked_dice(logits, teacher_probs, threshold) for logits in (main, noisy))
        cg = correlation_guidance_kl(
            self.run("projector", features[-1][n:]), teacher_proj, s["cg_positions"], s["cg_temperature"], context.generator
        )
        mi = iic_mutual_information(torch.softmax(main.float(), 1), torch.softmax(noisy.float(), 1))
        weight = consistency_weight(context.iteration, s["w_max"], s["rampup_fraction"] * context.total_iterations)
        unsup = s["lambda_pix"] * pix + s["lambda_cg"] * cg + s["lambda_mi"] * mi
        shares = pseudo_label_shares(teacher_probs, threshold)
        return {"total": sup + weight * unsup, "sup": sup, "pix": pix, "cg": cg, "mi": mi, **shares}

    def after_step(self, context: StepContext) -> None:
        decay = self.settings["ema_decay"]
        ema_update(self.inner("teacher"), self.inner("student"), context.iteration, decay)
