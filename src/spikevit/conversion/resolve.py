"""Model and data loading for SIT-conversion: one resolver for every way of naming a model, with one-line
errors, and the seeded image sets every conversion measurement uses (:func:`evaluation_split`: test images,
:func:`calibration_images`: training images that set the neurons' thresholds).

Model names (:func:`resolve_model`): a registry name (``vit-cifar-tiny``) with a spikevit model file,
``torchvision:NAME`` / ``timm:NAME`` with a state dict (``.safetensors``, or ``.pth`` read with
``weights_only=True``), or ``file:PATH`` / a path to a spikevit model file (the registry name is read
from the file).  :func:`check_model_takes` runs the model once on a sample before any work.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from spikevit.errors import SpikevitError, require
from spikevit.validation import check_input_file


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _read_state_dict(path: Path) -> dict:
    """A state dict from ``.safetensors`` or a weights-only ``.pth``; any unreadable file -> SpikevitError."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  SafetensorError, UnpicklingError, RuntimeError, EOFError, ...
        raise SpikevitError(f"--checkpoint {path}: not a readable state dict ({type(exc).__name__}: "
                            f"{_first_line(exc)})") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    require(isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()),
            f"--checkpoint {path}: does not hold a state dict of tensors")
    return state


def check_finite_weights(model: nn.Module, what: str) -> None:
    """Refuse a model with NaN / infinite parameters or buffers (it would evaluate to nonsense)."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise SpikevitError(f"{what}: weight {name!r} holds NaN or infinite values")


def resolve_model(name: str, checkpoint: str | None = None, *, num_classes: int | None = None,
                  img_size: int | None = None) -> tuple[nn.Module, dict]:
    """``(model in eval mode, description)`` for a model name and checkpoint; clear errors for bad ones.

    ``torchvision:NAME`` / ``timm:NAME`` need ``checkpoint`` (a state dict of the same architecture, built
    with ``num_classes`` and ``img_size``); registry names need a spikevit model file holding that model.
    """
    require(isinstance(name, str) and name.strip() != "", "--model: give a model name")
    if checkpoint is not None:
        check_input_file(checkpoint, "--checkpoint")
    if name.startswith(("torchvision:", "timm:")):
        lib, arch = name.split(":", 1)
        kw = {"num_classes": num_classes} if num_classes else {}
        if lib == "torchvision":
            import torchvision

            require(arch in torchvision.models.list_models(), f"--model {name}: torchvision has no model {arch!r} "
                    "(see torchvision.models.list_models())")
            if img_size:
                kw["image_size"] = img_size
            try:
                model = torchvision.models.get_model(arch, weights=None, **kw)
            except TypeError as exc:
                raise SpikevitError(f"--model {name}: cannot build it with {kw}: {_first_line(exc)}") from None
        else:
            try:
                import timm
            except ImportError:
                raise SpikevitError("timm is not installed (pip install 'spikevit[timm]')") from None
            require(timm.is_model(arch), f"--model {name}: timm has no model {arch!r} (see timm.list_models())")
            if img_size:
                kw["img_size"] = img_size
            try:
                model = timm.create_model(arch, pretrained=False, **kw)
            except TypeError:
                kw.pop("img_size", None)            # convolutional hybrids take any input size
                model = timm.create_model(arch, pretrained=False, **kw)
        require(checkpoint is not None, f"--model {name}: --checkpoint (trained weights) is required; random "
                "weights give meaningless accuracies")
        state = _read_state_dict(Path(checkpoint))
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:                 # size mismatches
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            detail = next((ln for ln in lines if "size mismatch" in ln), lines[0] if lines else "")
            raise SpikevitError(f"--checkpoint {checkpoint}: does not fit {name}: {detail[:200]}") from None
        require(not missing and not unexpected, f"--checkpoint {checkpoint}: does not fit {name}: missing "
                f"{list(missing)[:3]}, unexpected {list(unexpected)[:3]}")
        check_finite_weights(model, f"--checkpoint {checkpoint}")
        return model.eval(), {"model": name, "checkpoint": str(checkpoint)}
    from spikevit.models import list_models
    from spikevit.train import load_trained_model

    registry = name not in ("file",) and not name.startswith("file:")
    if registry:
        require(name in list_models(), f"--model {name!r}: not a registry model ({', '.join(list_models())}), "
                "and not torchvision:NAME or timm:NAME")
        require(checkpoint is not None, f"--model {name}: --checkpoint is required (train one with "
                f"`spikevit train --model {name} ...`)")
    else:
        checkpoint = checkpoint or name.split(":", 1)[1]
        check_input_file(checkpoint, "--checkpoint")
    try:
        model, run = load_trained_model(checkpoint)
    except SpikevitError as exc:
        raise SpikevitError(f"--checkpoint {checkpoint}: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001  any unreadable file is the user's input problem
        raise SpikevitError(f"--checkpoint {checkpoint}: not a readable spikevit model file "
                            f"({type(exc).__name__}: {_first_line(exc)})") from None
    if registry:
        require(run.get("model") == name, f"--checkpoint {checkpoint} holds a {run.get('model')!r} model, not {name!r}")
    check_finite_weights(model, f"--checkpoint {checkpoint}")
    return model.eval(), {"model": run.get("model", name), "checkpoint": str(checkpoint), "run": run}


def check_model_takes(model: nn.Module, sample: torch.Tensor, what: str) -> None:
    """Run ``model`` on one sample ``[1, C, H, W]``; a mismatch (channels, size) -> SpikevitError."""
    try:
        with torch.no_grad():
            out = model(sample)
    except SpikevitError as exc:
        raise SpikevitError(f"{what}: {_first_line(exc)}") from None
    except (RuntimeError, ValueError, IndexError, AssertionError) as exc:
        raise SpikevitError(f"{what}: the model cannot take inputs of shape {tuple(sample.shape)} "
                            f"({_first_line(exc)})") from None
    require(isinstance(out, torch.Tensor) and out.dim() == 2, f"{what}: the model should return logits [B, classes]")


def evaluation_split(dataset: str, data_root, subset: int | None, seed: int, *, img_size: int | None = None,
                     download: bool = False, skip_bad_images: bool = False):
    """The test split without augmentation, or its seeded class-balanced subset of ``subset`` images
    (subset seed ``seed + 1``)."""
    from spikevit.data import load_dataset
    from spikevit.train import build_transforms, seeded_subset

    test = load_dataset(dataset, data_root, "test", build_transforms(dataset, False, False, img_size), download,
                        skip_bad_images=skip_bad_images)
    return seeded_subset(test, subset, seed + 1)


def calibration_images(dataset: str, data_root, count: int, seed: int, *, img_size: int | None = None,
                       download: bool = False, skip_bad_images: bool = False) -> torch.Tensor:
    """``count`` seeded, class-balanced training images without augmentation (subset seed ``seed + 2``),
    stacked ``[count, C, H, W]`` (fewer if the split is smaller)."""
    from spikevit.data import load_dataset
    from spikevit.train import build_transforms, seeded_subset

    train = load_dataset(dataset, data_root, "train", build_transforms(dataset, False, False, img_size), download,
                         skip_bad_images=skip_bad_images)
    cal = seeded_subset(train, count, seed + 2)
    return torch.stack([cal[i][0] for i in range(len(cal))])
