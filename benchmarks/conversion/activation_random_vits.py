"""Cosine of converted logits with the ANN's for the random-weight torchvision and timm ViTs of the levels test
(tests/conversion/test_spiking_levels.py: same models, seeds, inputs and calibration), for each few-spike
activation fit (``shipped`` / ``range`` / ``polish``) and activation K, side by side in one run.

Rows: the ANN with only its GELUs replaced by few-spike neurons, and ``spiking="all"`` with rate and few-spike
coding; plus the activation neurons' RMSE on their calibrated inputs.  Under a minute of CPU.

    python benchmarks/conversion/activation_random_vits.py --out results/conversion/fewspike/activation_fit_random_vits.json
"""
from __future__ import annotations

import argparse
import shlex
import sys

import torch
import torch.nn.functional as F
from torch import nn

from spikevit.conversion import convert
from spikevit.conversion.params import available
from spikevit.reports import write_report

FITS = ("shipped", "range", "polish")


def tv_vit() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=10).eval()
    nn.init.normal_(model.heads.head.weight, std=0.5)          # torchvision zero-initialises the head
    return model


def timm_vit() -> nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                             num_classes=10).eval()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), 0))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="report JSON (markdown and CSVs beside it)")
    ap.add_argument("--ks", default=",".join(str(k) for k in available("gelu")),
                    help="activation K values (shipped GELU fits)")
    args = ap.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",") if k]
    rows, layers = [], []
    for name, make in (("torchvision", tv_vit), ("timm", timm_vit)):
        model = make()
        g = torch.Generator().manual_seed(1)
        x = torch.randn(6, 3, 32, 32, generator=g)
        cal = torch.randn(24, 3, 32, 32, generator=g)
        with torch.no_grad():
            ref = model(x)
            for k in ks:
                for fit in FITS:
                    act = convert(model, 12, activations="all", calibration=cal, activation_fit=fit,
                                  activation_steps=k)
                    row = {"model": name, "activation_steps": k, "activation_fit": fit,
                           "cos_gelu_only": cosine(act(x), ref)}
                    for coding in ("rate", "fewspike"):
                        snn = convert(model, 12, spiking="all", calibration=cal, coding=coding, activation_fit=fit,
                                      activation_steps=k)
                        row[f"cos_all_{coding}"] = cosine(snn(x), ref)
                    rows.append(row)
                    for lname, v in ((act.sit_conversion.get("activation_fit") or {}).get("layers") or {}).items():
                        layers.append({"model": name, "activation_steps": k, "activation_fit": fit, "layer": lname,
                                       "rmse_shipped": v["rmse_before"], "rmse": v["rmse"],
                                       "domain_lo": v["domain"][0], "domain_hi": v["domain"][1]})
                    print(row, flush=True)
    command = "python benchmarks/conversion/activation_random_vits.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    worst = {fit: min(min(r["cos_all_rate"], r["cos_all_fewspike"]) for r in rows
                      if r["activation_fit"] == fit and r["activation_steps"] == 12) for fit in FITS}
    notes = ("The levels test's models (random weights; torchvision's head re-initialised with std 0.5), inputs "
             "`randn(6, 3, 32, 32)` and calibration `randn(24, 3, 32, 32)` (generator seed 1).  Cosine of the "
             "flattened logits with the ANN's.  `cos_gelu_only`: only the GELUs are few-spike neurons (spiking "
             "softmax included); `cos_all_*`: `spiking=\"all\"` with rate / few-spike coding.  Layer RMSEs are "
             "against the exact GELU on each layer's recorded calibration inputs.  SI-exp K = 12 throughout; "
             "`activation_steps` is the few-spike GELU's K.")
    write_report(args.out, command, vars(args), {f"worst_cos_all_k12_{fit}": v for fit, v in worst.items()},
                 {"cosine": rows, "activation_layers": layers},
                 title="Few-spike GELU fits on the random-weight ViTs of the levels test", notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
