"""load_pretrained: local files only, round trips, encoder-only loading, mismatches, missing files."""

from __future__ import annotations

import logging

import pytest
import torch

from sonoseg.models import DualDecoderNet, build_network, load_pretrained


def _randomised(name: str = "unet_small", seed: int = 1, **options):
    torch.manual_seed(seed)
    net = build_network(name, **options)
    with torch.no_grad():  # move BatchNorm statistics off their defaults too
        for buffer_name, buffer in net.named_buffers():
            if "running" in buffer_name:
                buffer.uniform_(0.5, 1.5)
    return net.eval()


def test_round_trip_reproduces_the_outputs(tmp_path, image):
    source = _randomised(seed=1)
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    target = _randomised(seed=2)
    with torch.no_grad():
        assert not torch.allclose(target(image), source(image))
    keys = load_pretrained(target, path)
    assert sorted(keys) == sorted(source.state_dict())
    with torch.no_grad():
        assert torch.equal(target(image), source(image))


@pytest.mark.parametrize("wrap", ["state_dict", "trainer"])
def test_wrapped_state_dicts_load(tmp_path, image, wrap):
    source = _randomised(seed=1)
    state = source.state_dict()
    payload = {"state_dict": state, "epoch": 3} if wrap == "state_dict" else {"networks": {"student": state}}
    torch.save(payload, tmp_path / "w.pth")
    target = _randomised(seed=2)
    assert len(load_pretrained(target, tmp_path / "w.pth")) == len(state)
    with torch.no_grad():
        assert torch.equal(target(image), source(image))


def test_encoder_prefix_loads_only_the_encoder(tmp_path):
    source = _randomised(seed=1)
    torch.save(source.state_dict(), tmp_path / "full.pt")
    target = _randomised(seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    keys = load_pretrained(target, tmp_path / "full.pt", prefix="encoder.")
    assert keys and all(k.startswith("encoder.") for k in keys)
    assert sorted(keys) == sorted(k for k in before if k.startswith("encoder."))
    after = target.state_dict()
    for key in after:
        expected = source.state_dict()[key] if key.startswith("encoder.") else before[key]
        assert torch.equal(after[key], expected), key


def test_a_bare_encoder_file_fills_the_encoder(tmp_path):
    source = _randomised(seed=1)
    torch.save(source.encoder.state_dict(), tmp_path / "encoder.pt")  # keys without "encoder."
    target = _randomised(seed=2)
    keys = load_pretrained(target, tmp_path / "encoder.pt", prefix="encoder.")
    assert len(keys) == len(source.encoder.state_dict())
    assert torch.equal(target.encoder.levels[0][0].conv.weight, source.encoder.levels[0][0].conv.weight)


def test_missing_file_names_the_path_and_downloads_nothing(tmp_path):
    path = tmp_path / "nowhere" / "resnet50.pth"
    with pytest.raises(FileNotFoundError, match="never downloads") as info:
        load_pretrained(build_network("unet_small"), path)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="resnet50.pth"):
        build_network("unet_small", pretrained=path)


def test_shape_mismatch_is_skipped_and_reported(tmp_path, caplog):
    source = _randomised(seed=1, num_classes=3)
    torch.save(source.state_dict(), tmp_path / "three.pt")
    target = _randomised(seed=2, num_classes=2)
    head_before = target.head.weight.clone()
    with caplog.at_level(logging.WARNING, logger="sonoseg.models.pretrained"):
        keys = load_pretrained(target, tmp_path / "three.pt")
    assert "head.weight" not in keys and "head.bias" not in keys
    assert len(keys) == len(source.state_dict()) - 2
    assert torch.equal(target.head.weight, head_before)
    assert torch.equal(target.encoder.levels[0][0].conv.weight, source.encoder.levels[0][0].conv.weight)
    assert "head.weight" in caplog.text and "shape mismatch" in caplog.text
    with pytest.raises(RuntimeError, match="shape mismatch"):
        load_pretrained(target, tmp_path / "three.pt", strict=True)


def test_rgb_stem_is_summed_for_a_greyscale_network(tmp_path):
    rgb = _randomised(seed=1, in_channels=3)
    torch.save(rgb.state_dict(), tmp_path / "rgb.pt")
    grey = _randomised(seed=2, in_channels=1)
    keys = load_pretrained(grey, tmp_path / "rgb.pt")
    stem = "encoder.levels.0.0.conv.weight"
    assert stem in keys
    torch.testing.assert_close(grey.state_dict()[stem], rgb.state_dict()[stem].sum(1, keepdim=True))
    rgb_image = torch.randn(2, 1, 32, 32).expand(-1, 3, -1, -1)
    with torch.no_grad():  # the same response to a grey image as the RGB net to its 3-channel copy
        torch.testing.assert_close(grey(rgb_image[:, :1]), rgb(rgb_image))


def test_nothing_matching_is_an_error(tmp_path):
    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no parameter"):
        load_pretrained(build_network("unet_small"), tmp_path / "other.pt")


def test_build_network_and_dual_decoder_load_pretrained(tmp_path, image):
    source = _randomised("unext", seed=1)
    torch.save(source.state_dict(), tmp_path / "unext.pt")
    built = build_network("unext", pretrained=tmp_path / "unext.pt").eval()
    dual = DualDecoderNet("unext", perturbation=None, pretrained=str(tmp_path / "unext.pt")).eval()
    with torch.no_grad():
        expected = source(image)
        assert torch.equal(built(image), expected)
        assert torch.equal(dual(image), expected)  # the main path takes the single-decoder weights
        assert not torch.allclose(dual.forward_dual(image)[1], expected)  # the noisy one keeps its own
