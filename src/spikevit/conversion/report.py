"""What a conversion report says besides its tables: the notes (how each number was measured) and the
plots (spiking-softmax error vs K, energy per block)."""
from __future__ import annotations

from pathlib import Path

from spikevit.reports import pyplot, save_figure


def run_notes(samples: int, spiking: str, coding: str, coding_steps: int, profiled: int, calibration: int,
              sweep_rows) -> str:
    level = {"softmax": "the softmax of each converted block is the spiking softmax (SI-exp + SI-norm); Q, K, V "
                        "and every linear layer stay analog",
             "attention": f"the spiking softmax, and Q, K, V out of spiking neurons ({coding} coding, "
                          f"{coding_steps} steps): Q K^T and A V each take a spike operand",
             "all": f"the spiking softmax, spiking Q, K, V, and every linear layer / convolution inside each "
                    f"converted block takes spike-coded input ({coding} coding, {coding_steps} steps; GELU / "
                    "SiLU / sigmoid as few-spike neurons whose spikes feed the next layer)"}[spiking]
    return (f"Accuracy: top-1 on the test split ({samples} images).  Layer-by-layer: the first n attention "
            f"blocks (module order) are converted, the others stay exact.  Level '{spiking}': {level}.  "
            + ("" if spiking == "softmax" else
               f"Neuron thresholds: per channel, calibrated on {calibration} seeded training images.  ")
            + f"Energy (SIT Eqs. 16-19, per image) from spikevit.energy.profile of the ANN and of the fully "
            f"converted model on the first {profiled} test images: every product with a spike or graded "
            "(spike-count) operand costs its accumulates at E_AC, every other product its MACs at E_MAC; "
            "neuron-internal updates are not counted (as in the paper).  Spike purity: the operand kinds of "
            "every product (tables purity / purity_summary).  " + sweep_notes(sweep_rows))


def sweep_notes(rows: list[dict] | None = None) -> str:
    """How the spiking-softmax error is measured; quotes the shipped K = 12 SI-exp RMSE and, when the
    sweep rows hold it, the measured K = 12 rel_rmse on U[-1, 1] rows (no number is hard-coded)."""
    from spikevit.conversion.params import few_spike_parameters

    fit = few_spike_parameters("exp", 12)["rmse"]
    rel = [r["rel_rmse"] for r in (rows or []) if r.get("K") == 12 and r.get("logits", "U[-1, 1]") == "U[-1, 1]"]
    rel_txt = f"rel_rmse {min(rel):.4f}-{max(rel):.4f} at K = 12 in this report" if rel else "rel_rmse at K = 12"
    return ("Error measure: rows of n logits drawn i.i.d. from U[-1, 1] (the paper's Sec. 4.2 setting; the "
            "paper does not state n); mse = mean over all elements of (SpikingSoftmax(x) - softmax(x))^2; "
            "max_abs = largest elementwise error; rel_rmse = ||spiking - exact||_2 / ||exact||_2 over all "
            "elements; mean_row_l1 = mean over rows of sum_i |spiking_i - exact_i|.  SI-norm in its "
            "real-valued fast form (Eq. 10).  Softmax values are ~1/n, so the elementwise MSE shrinks ~1/n^2 "
            "while rel_rmse and mean_row_l1 hardly depend on n.  The paper's Fig. 7 value 0.013991 (K = 12) "
            "cannot be an elementwise MSE of softmax outputs of this size (it would be an RMSE of 0.118 per "
            "value, larger than the values themselves for n >= 9); its size matches the relative measures "
            f"({rel_txt}) and the shipped SI-exp fit's RMSE ({fit:.4g} at K = 12), so the paper's 'MSE' "
            "is most likely a differently normalised error; compare it with rel_rmse.")


def sweep_plot(rows: list[dict], png: Path, title: str) -> str | None:
    """Two panels over K: elementwise MSE (with the paper's Fig. 7 point) and relative RMSE / mean row L1."""
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    for n, src in sorted({(r["row_length"], r.get("logits", "U[-1, 1]")) for r in rows}):
        pts = sorted((r["K"], r["mse"], r["rel_rmse"], r["mean_row_l1"]) for r in rows
                     if r["row_length"] == n and r.get("logits", "U[-1, 1]") == src)
        ks = [p[0] for p in pts]
        tag = f"n = {n}" + ("" if src == "U[-1, 1]" else f", {src} logits")
        line, = ax.semilogy(ks, [p[1] for p in pts], "o-", label=tag)
        bx.semilogy(ks, [p[2] for p in pts], "o-", color=line.get_color(), label=f"relative RMSE, {tag}")
        bx.semilogy(ks, [p[3] for p in pts], "s--", color=line.get_color(), alpha=0.6, label=f"mean row L1, {tag}")
    for a in (ax, bx):
        a.plot([12], [0.013991], "rx", ms=10, mew=2, label="paper Fig. 7, K = 12: 'MSE' 0.013991")
        a.set_xlabel("SI-exp time steps K")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    ax.set_ylabel("mean over elements of (spiking - softmax)^2")
    bx.set_ylabel("relative RMSE (solid), mean row L1 (dashed)")
    ax.set_title("elementwise MSE", fontsize=9)
    bx.set_title("||err||_2 / ||softmax||_2 and mean_rows sum_i |err_i|", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return str(save_figure(fig, png))


def energy_plot(rows: list[dict], png: Path, title: str) -> str | None:
    """Bars per block: energy of the ANN and of the converted model (mJ per image)."""
    plt = pyplot()
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(rows) + 3), 4))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["energy_ann_mJ"] for r in rows], 0.4, label="ANN (MACs x E_MAC)")
    ax.bar([x + 0.2 for x in xs], [r["energy_snn_mJ"] for r in rows], 0.4, label="converted (MACs + ACs)")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["block"] for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("mJ per image")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return str(save_figure(fig, png))
