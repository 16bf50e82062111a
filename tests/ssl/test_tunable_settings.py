"""Settings added so the tuning search spaces are real: HDC's input noise, VAT perturbation and
pixel-consistency variants, SimCVD's projection dropout, and FixMatch's pseudo-label Dice; and the
pseudo-label shares that FixMatch and HDC log beside their losses, with which those settings are judged."""

from __future__ import annotations

import math

import pytest
import torch

from sonoseg.models import DualDecoderNet
from sonoseg.ssl.base import Batch, StepContext, build_method, method_class
from sonoseg.ssl.methods import fixmatch as fixmatch_module
from sonoseg.ssl.methods import hdc as hdc_module
from sonoseg.ssl.noise import make_perturbation

MODEL = {"name": "unet_small"}


def batches(seed: int = 0) -> tuple[Batch, Batch]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(4, 1, 32, 32, generator=generator)
    masks = torch.randint(0, 3, (2, 32, 32), generator=generator)
    return Batch(images[:2], masks), Batch(images[2:])


def method_losses(name: str, settings: dict) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    method = build_method(name, settings, MODEL, num_classes=3)
    labelled, unlabelled = batches()
    return method.losses(labelled, unlabelled, StepContext(5, 10, torch.Generator().manual_seed(1)))


def hdc_losses(settings: dict) -> dict[str, torch.Tensor]:
    return method_losses("hdc", settings)


def test_hdc_input_noise_reaches_the_strong_view_only_when_sigma_is_positive(monkeypatch):
    calls = []
    original = hdc_module.gaussian_input_noise

    def recording(x, sigma, clip, generator=None):
        calls.append((tuple(x.shape), sigma, clip))
        return original(x, sigma, clip, generator=generator)

    monkeypatch.setattr(hdc_module, "gaussian_input_noise", recording)
    default = hdc_losses({})
    assert calls == []  # the default (0.0) leaves the strong view and the random draws as they were
    assert torch.equal(hdc_losses({"input_noise_sigma": 0.0})["total"], default["total"])
    noisy = hdc_losses({"input_noise_sigma": 0.15, "input_noise_clip": 0.3})
    assert calls == [((2, 1, 32, 32), 0.15, 0.3)]  # the unlabelled strong view
    assert not torch.equal(noisy["pix"], default["pix"])


def test_vat_perturbs_all_encoder_maps_jointly_with_norm_eps():
    torch.manual_seed(0)
    dual = DualDecoderNet("unet_small", perturbation=make_perturbation("vat", strength=2.0), num_classes=3)
    features = dual.encode(torch.rand(2, 1, 32, 32))
    perturbed = dual.perturb(features)
    assert [p.shape for p in perturbed] == [f.shape for f in features]
    difference = torch.cat([(p - f).flatten(1) for p, f in zip(perturbed, features)], 1)
    assert torch.allclose(difference.norm(dim=1), torch.full((2,), 2.0), atol=1e-4)
    assert all(float((p - f).detach().abs().max()) > 0 for p, f in zip(perturbed, features))  # every map moves
    assert all(p.grad is None for p in dual.parameters())  # finding the direction left no gradients
    perturbed[-1].sum().backward()
    assert any(p.grad is not None for p in dual.encoder.parameters())  # the encoder still learns through it


def test_hdc_trains_with_a_vat_perturbation():
    losses = hdc_losses({"perturbation": "vat", "perturbation_strength": 1.0})
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    assert not torch.equal(losses["mi"], hdc_losses({})["mi"])  # the noisy decoder saw other maps


def test_simcvd_projection_dropout_is_a_setting():
    method = build_method("simcvd", {"projection_dropout": 0.25}, MODEL, num_classes=3)
    assert method.inner("projector").dropout.p == 0.25
    assert build_method("simcvd", {}, MODEL, num_classes=3).inner("projector").dropout.p == 0.1


def test_hdc_pix_average_class_changes_only_the_pixel_consistency_term():
    default, balanced = hdc_losses({}), hdc_losses({"pix_average": "class"})
    assert torch.equal(balanced["sup"], default["sup"]) and torch.equal(balanced["cg"], default["cg"])
    assert not torch.isclose(balanced["pix"], default["pix"])


def test_hdc_correlation_projection_is_fixed_so_it_cannot_collapse_to_one_vector():
    torch.manual_seed(0)
    method = build_method("hdc", {}, MODEL, num_classes=3)
    projector = method.inner("projector")
    assert not any(p.requires_grad for p in projector.parameters())
    assert not any(p is q for p in projector.parameters() for q in method.trainable_parameters())
    assert torch.all(projector.bias == 0)
    assert torch.equal(method.inner("teacher_projector").weight, projector.weight)
    losses = method.losses(*batches(), StepContext(5, 10, torch.Generator().manual_seed(1)))
    assert losses["cg"].item() > 0
    losses["cg"].backward()  # L_CG alone trains the student's encoder, not the projection
    encoder = [p.grad for name, p in method.inner("student").named_parameters() if name.startswith("encoder")]
    assert encoder and any(g is not None and g.abs().sum() > 0 for g in encoder)
    assert projector.weight.grad is None


def test_hdc_pix_dice_adds_a_masked_dice_term_to_the_pixel_consistency():
    default, with_dice = hdc_losses({}), hdc_losses({"pix_dice": 0.5})
    assert torch.equal(with_dice["sup"], default["sup"])
    assert with_dice["pix"] > default["pix"]


def test_fixmatch_dice_weight_adds_a_masked_dice_to_every_pseudo_label_term():
    # threshold 0 makes every pixel confident, so both terms are live on an untrained network
    with_dice = method_losses("fixmatch", {"threshold": 0.0})
    ce_only = method_losses("fixmatch", {"threshold": 0.0, "dice_weight": 0.0})
    assert torch.equal(with_dice["sup"], ce_only["sup"])
    for term in ("strong", "feature_dropout"):
        assert with_dice[term] > ce_only[term] > 0
    assert with_dice["total"] - ce_only["total"] > 0
    nothing_confident = method_losses("fixmatch", {"threshold": 1.01})
    assert nothing_confident["strong"] == 0 and nothing_confident["feature_dropout"] == 0


def test_fixmatch_dice_only_confident_classes_reaches_the_masked_dice(monkeypatch):
    calls = []
    original = fixmatch_module.confidence_masked_dice

    def recording(logits, probs, threshold, only_confident_classes=False):
        calls.append(only_confident_classes)
        return original(logits, probs, threshold, only_confident_classes)

    monkeypatch.setattr(fixmatch_module, "confidence_masked_dice", recording)
    default = method_losses("fixmatch", {"threshold": 0.5})
    assert calls and not any(calls)
    calls.clear()
    only = method_losses("fixmatch", {"threshold": 0.5, "dice_only_confident_classes": True})
    assert calls and all(calls)
    assert torch.equal(only["sup"], default["sup"]) and not torch.equal(only["strong"], default["strong"])


def test_fixmatch_rampup_scales_the_pseudo_label_terms_and_leaves_them_whole_at_0():
    # method_losses runs iteration 5 of 10; a ramp over 0.8 of them gives exp(-5 (1 - 5/8)^2)
    flat, ramped = method_losses("fixmatch", {"threshold": 0.0}), method_losses("fixmatch", {"threshold": 0.0, "rampup_fraction": 0.8})
    unsup = 0.5 * flat["strong"] + 0.5 * flat["feature_dropout"]
    assert torch.allclose(flat["total"], flat["sup"] + unsup)
    assert torch.equal(ramped["strong"], flat["strong"])
    assert torch.allclose(ramped["total"], flat["sup"] + math.exp(-5 * (1 - 5 / 8) ** 2) * unsup)


PSEUDO_LABEL_TERMS = [("fixmatch", ("strong", "feature_dropout")), ("hdc", ("pix",))]  # each method's loss terms on its pseudo-labels


@pytest.mark.parametrize("name, pseudo_label_terms", PSEUDO_LABEL_TERMS)
def test_class_ceiling_threshold_teaches_from_a_network_that_is_never_sure(name, pseudo_label_terms):
    # an untrained network is never as sure of class 1 as the fixed threshold, so it teaches none of it
    threshold = method_class(name).DEFAULTS["threshold"]
    fixed = method_losses(name, {})
    assert fixed["pseudo_class1_share"] == 0 and "threshold_class1" not in fixed
    scaled = method_losses(name, {"class_ceiling_threshold": True})
    assert torch.equal(scaled["sup"], fixed["sup"])
    assert fixed["confident_share"] < scaled["confident_share"] < 1 and scaled["pseudo_class1_share"] > 0
    assert all(scaled[term] > fixed[term] for term in pseudo_label_terms)
    for c in (1, 2):
        assert 0 < scaled[f"threshold_class{c}"] < threshold


@pytest.mark.parametrize("name, pseudo_label_terms", PSEUDO_LABEL_TERMS)
def test_class_keep_share_teaches_at_least_that_share_of_each_class_of_a_network_that_is_never_sure(name, pseudo_label_terms):
    threshold = method_class(name).DEFAULTS["threshold"]
    fixed = method_losses(name, {})
    kept = method_losses(name, {"class_keep_share": 0.5})
    assert torch.equal(kept["sup"], fixed["sup"])
    # half of each class's pixels, at least, pass its bar: half of all pixels
    assert kept["confident_share"] >= 0.5 and kept["pseudo_class1_share"] > 0
    assert all(kept[term] > fixed[term] for term in pseudo_label_terms)
    for c in (1, 2):
        assert 0 < kept[f"threshold_class{c}"] < threshold


@pytest.mark.parametrize("name, module", [("fixmatch", fixmatch_module), ("hdc", hdc_module)])
def test_pseudo_label_methods_report_what_their_pseudo_labels_teach(name, module, monkeypatch):
    everything = method_losses(name, {"threshold": 0.0})
    assert everything["confident_share"] == 1
    foreground = everything["pseudo_class1_share"] + everything["pseudo_class2_share"]
    assert 0 <= foreground <= 1
    nothing = method_losses(name, {"threshold": 1.01})
    assert nothing["confident_share"] == nothing["pseudo_class1_share"] == nothing["pseudo_class2_share"] == 0
    # diagnostics only: without them, the loss the trainer backpropagates and every random draw are the same
    monkeypatch.setattr(module, "pseudo_label_shares", lambda probs, threshold: {})
    without = method_losses(name, {"threshold": 0.0})
    assert "confident_share" not in without and torch.equal(without["total"], everything["total"])
