"""Original LCA dictionary learning (D-SELD Eq. 7) as a baseline to the exemplar dictionary of equal size.

Learned: M atoms from N(0, 1), trained by alternating LCA codes and
phi_i += eta (S - S_hat) a_i (:func:`spikevit.lca.learning.learn_dictionary`)
on training images.  Exemplar: M random training images (D-SELD).  Both
(and, for reference, a random N(0, 1) dictionary) are compared on

* reconstruction of unseen test images (settings of the ``reconstruction``
  study: MSE / PSNR / SSIM by scikit-image, iterations to converge);
* classification with lam = 2, tau = 100, K = 100 and the three decoders.
  Learned atoms have no class, so for max-activation / max-sum each atom gets
  the class whose training codes use it most (:func:`label_atoms`); the
  shallow NN needs no atom labels.

The learned dictionary is checkpointed after every epoch (resumable).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from spikevit.data.datasets import dataset_spec
from spikevit.errors import require
from spikevit.lca import Dictionary, encode_batches
from spikevit.lca.learning import label_atoms, learn_dictionary
from spikevit.lca.params import LCA_DEFAULTS, LCAParams
from spikevit.lca.pipeline import evaluate
from spikevit.reproduce import reconstruction as rec
from spikevit.reproduce.common import Context, Partial, features, pyplot, report, save_figure

PARAMS = {
    "dataset": "mnist",
    "atoms_per_dim": 2.0,            # M = 2 N = 1568 on MNIST
    "learn_images": 10000,           # training images the dictionary is learned from
    "epochs": 5,
    # learning codes at tau = 100: the explicit-Euler LCA step needs lambda_max(G_AA) < 2 tau, and learned atoms
    # grow correlated (lambda_max(G) ~ 80 after one epoch on MNIST), so tau = 10 diverged (NaN atoms) on MNIST
    "eta": 0.5, "learn_lam": 0.5, "learn_tau": 100.0, "learn_steps": 100, "learn_batch": 100,
    "recon_images": 100,             # test images for the reconstruction comparison
    "recon_lam": rec.PARAMS["lam"], "recon_tau": rec.PARAMS["tau"], "recon_steps": rec.PARAMS["steps"],
    "test_images": 2000,             # test images for classification
    "shallow_train_size": 2000,
    "lam": LCA_DEFAULTS.lam, "tau": LCA_DEFAULTS.tau, "steps": LCA_DEFAULTS.steps,
    "batch": 250,
    "backend": LCA_DEFAULTS.backend,
    "seed": 0,
}
QUICK = {"epochs": 3, "recon_images": 20, "recon_steps": rec.QUICK["steps"], "test_images": 1000,
         "shallow_train_size": 1000}


def _image_shape(dataset: str, n: int) -> tuple[int, int, int]:
    c = len(dataset_spec(dataset).mean)
    side = int(round(math.sqrt(n / c)))
    require(c * side * side == n, f"{dataset}: {n} pixel features are not a square image")
    return (c, side, side)


def _to_images(vectors: torch.Tensor, dataset: str, shape) -> np.ndarray:
    """Normalised pixel vectors (B, N) -> (B, H, W[, C]) on the 0..255 scale."""
    spec = dataset_spec(dataset)
    mean, std = torch.tensor(spec.mean)[None, :, None, None], torch.tensor(spec.std)[None, :, None, None]
    return rec.to_uint8_range(vectors.view(-1, *shape) * std + mean)


def reconstruction_rows(phis: dict, test_x: torch.Tensor, dataset: str, shape, p: dict,
                        device=None) -> tuple[list, dict]:
    rp = dict(rec.PARAMS) | {"lam": p["recon_lam"], "tau": p["recon_tau"], "steps": p["recon_steps"]}
    originals = _to_images(test_x, dataset, shape)
    e0 = 0.5 * (test_x * test_x).sum(1)
    rows, recon_images = [], {}
    for name, phi in phis.items():
        codes, energy, _, _, active = rec._code(phi, test_x, rp, device)
        images = _to_images(codes @ phi.T, dataset, shape)
        finite = torch.isfinite(energy).all(0)
        metrics = [rec.image_metrics(o, r) for o, r, f in zip(originals, images, finite) if bool(f)]
        it = rec.iterations_to_converge(energy, e0, rp["window"], rp["rel_tol"])
        rows.append({"dictionary": name, "M": phi.shape[1], "images": test_x.shape[0],
                     "MSE": float(np.mean([m["MSE"] for m in metrics])) if metrics else None,
                     "PSNR_dB": float(np.mean([m["PSNR_dB"] for m in metrics])) if metrics else None,
                     "SSIM": float(np.mean([m["SSIM"] for m in metrics])) if metrics else None,
                     "iterations_median": rec.median_iterations(it, rp["steps"]),
                     f"settling_median_{rp['settle']:g}": rec.median_iterations(
                         rec.settling_iterations(energy, e0, rp["settle"]), rp["steps"]),
                     "not_converged": int((it < 0).sum()) - int((~finite).sum()), "diverged": int((~finite).sum()),
                     "active_final_mean": float(active[-1].double().mean())})
        recon_images[name] = images
    return rows, {"originals": originals, **recon_images}


def plot_atoms(phis: dict, dataset: str, shape, path, count: int = 32):
    plt = pyplot()
    fig, axes = plt.subplots(len(phis), 1, figsize=(12, 1.9 * len(phis)), squeeze=False)
    for ax, (name, phi) in zip(axes[:, 0], phis.items()):
        atoms = phi[:, :count].T.reshape(-1, *shape)
        lo, hi = atoms.amin((1, 2, 3), keepdim=True), atoms.amax((1, 2, 3), keepdim=True)
        tiles = ((atoms - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()
        strip = np.concatenate([np.pad(t, ((1, 1), (1, 1), (0, 0)), constant_values=1) for t in tiles], 1)
        ax.imshow(strip[..., 0] if strip.shape[-1] == 1 else strip, cmap="gray")
        ax.set_title(f"{name} dictionary: first {count} atoms (each rescaled to [0, 1])", fontsize=8)
        ax.axis("off")
    return save_figure(fig, path)


def plot_learning(history: list[dict], images: dict, path, count: int = 8):
    plt = pyplot()
    rows = len(images)
    fig = plt.figure(figsize=(12, 1.5 * rows + 2.5))
    grid = fig.add_gridspec(rows, count + 4)
    ax = fig.add_subplot(grid[:, :4])
    ep = [h["epoch"] for h in history]
    for key, label in (("energy", "E"), ("residual", "1/2 ||S - Phi a||^2"), ("l1", "lam ||a||_1")):
        ax.plot(ep, [h[key] for h in history], marker="o", label=label)
    ax.set_xlabel("epoch"); ax.set_ylabel("mean per training image"); ax.legend(fontsize=7)
    ax.set_title("Dictionary learning (Eq. 7)", fontsize=9)
    for r, (name, imgs) in enumerate(images.items()):
        for c in range(min(count, len(imgs))):
            a = fig.add_subplot(grid[r, 4 + c])
            img = np.clip(imgs[c], 0, 255).astype(np.uint8)
            a.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            a.axis("off")
            if c == 0:
                a.set_title(name, fontsize=7, loc="left")
    return save_figure(fig, path)


def run(ctx: Context, p: dict):
    train = features(ctx, p["dataset"], "pixels", "train")
    test = features(ctx, p["dataset"], "pixels", "test", limit=p["test_images"])
    n = train.features.shape[1]
    shape = _image_shape(p["dataset"], n)
    m = int(round(p["atoms_per_dim"] * n))
    gen = torch.Generator().manual_seed(p["seed"])
    learn_rows = torch.randperm(train.features.shape[0], generator=gen)[:p["learn_images"]]
    learn_keys = ("atoms_per_dim", "learn_images", "eta", "learn_lam", "learn_tau", "learn_steps", "learn_batch", "seed")
    tag = hashlib.sha1(json.dumps({k: p[k] for k in learn_keys}, sort_keys=True).encode()).hexdigest()[:10]
    # one checkpoint per learning setting (epochs excluded: more epochs resume from fewer)
    checkpoint = Path(ctx.cache).parent / "reproduce" / f"{ctx.name}-{p['dataset']}-learned-{tag}.safetensors"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    learned = learn_dictionary(train.features[learn_rows], m, lam=p["learn_lam"], tau=p["learn_tau"],
                               steps=p["learn_steps"], eta=p["eta"], epochs=p["epochs"], batch_size=p["learn_batch"],
                               init="random", rectify=True, seed=p["seed"], device=ctx.device,
                               checkpoint=checkpoint)
    exemplar = Dictionary.from_features(train.features, train.labels, m, seed=p["seed"], backbone="pixels",
                                        dataset=p["dataset"], index=train.index)
    phis = {"exemplar": exemplar.atoms, "learned": learned.atoms, "random": rec.random_dictionary(n, m, p["seed"] + 1)}

    partial = Partial(ctx, p)
    done = partial.get("reconstruction")
    recon_x = test.features[: p["recon_images"]]
    if done is None:
        rows, images = reconstruction_rows(phis, recon_x, p["dataset"], shape, p, ctx.device)
        done = {"rows": rows, "images": {k: v[:8] for k, v in images.items()}}
        partial.put("reconstruction", done)
    recon_rows, shown = done["rows"], {k: np.asarray(v) for k, v in done["images"].items()}

    acc_rows = partial.get("classification")
    if acc_rows is None:
        lca = LCAParams.from_mapping(p)
        kw = dict(batch_size=p["batch"], device=ctx.device, shallow_train_size=p["shallow_train_size"], seed=p["seed"])
        ev_ex = evaluate(exemplar, test, train, lca, **kw)
        # label the learned atoms from the codes of training images outside the learning set's dictionary role
        label_rows = torch.randperm(train.features.shape[0], generator=gen)[:p["shallow_train_size"] or 1000]
        codes = torch.cat([o.codes for _, o in encode_batches(learned.atoms, train.features[label_rows],
                                                               batch_size=p["batch"], show_progress=False,
                                                               **lca.kwargs())])
        labels = label_atoms(codes, train.labels[label_rows], exemplar.num_classes, learned.atoms,
                             train.features[label_rows])
        d_learned = Dictionary(learned.atoms, labels, torch.full((m,), -1, dtype=torch.long),
                               {"backbone": "pixels", "dataset": p["dataset"], "num_classes": exemplar.num_classes,
                                "split": "train"})                # learned from training images only
        ev_le = evaluate(d_learned, test, train, lca, **kw)
        acc_rows = [{"dictionary": name, "M": d.size, **ev.accuracy, "M_hat": ev.m_hat,
                     "silent_%": 100 * ev.silent_fraction, "atoms_never_used_by_label_codes_%":
                     100 * float((codes.abs().sum(0) == 0).double().mean()) if name == "learned" else 0.0}
                    for name, d, ev in (("exemplar", exemplar, ev_ex), ("learned", d_learned, ev_le))]
        partial.put("classification", acc_rows)

    figures = [plot_learning(learned.history, shown, ctx.path("-learning.png")),
               plot_atoms(phis, p["dataset"], shape, ctx.path("-atoms.png"))]
    notes = (f"{p['dataset']} pixels normalised with mean/std; M = {m} atoms for every dictionary. Learned: N(0,1) "
             f"init, {p['epochs']} epochs over {len(learn_rows)} training images, batches of {p['learn_batch']}, "
             f"eta = {p['eta']}, codes by LCA with lam = {p['learn_lam']}, tau = {p['learn_tau']}, "
             f"K = {p['learn_steps']} (rectified), atoms renormalised after each step. Reconstruction: "
             f"{recon_x.shape[0]} test images, signed threshold, lam = {p['recon_lam']}, tau = {p['recon_tau']}, "
             f"{p['recon_steps']} steps (rule of the reconstruction study). Classification: {test.features.shape[0]} "
             f"test images, lam = {p['lam']}, tau = {p['tau']}, K = {p['steps']}; learned atoms labelled by the class "
             "whose training codes use them most.")
    results = {"learning_history": learned.history, "reconstruction": recon_rows, "classification": acc_rows,
               "learned_dictionary": str(checkpoint)}
    path = report(ctx, p, results, {"reconstruction (equal size)": recon_rows, "classification": acc_rows,
                                    "learning history": learned.history},
                  title="Dictionary learning (D-SELD Eq. 7) vs exemplar dictionary", notes=notes, figures=figures)
    partial.finish()
    return path
