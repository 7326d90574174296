"""Workload and energy of the exemplar LCA network (ViT-LCA Eq. 8-10, D-SELD Eq. 11)."""
from __future__ import annotations

from spikevit.energy.models import EnergyModel, get_energy_model


def lca_training_flops(m: int, n: int) -> float:
    """FLOPs to form the Gramian G = Phi^T Phi: M (M + 1) (2N - 1) / 2 (symmetric half)."""
    return m * (m + 1) * (2 * n - 1) / 2


def lca_inference_flops(m: int, n: int, steps: int, m_hat: float | None = None) -> float:
    """FLOPs of one LCA inference: K ((2N - 1) M / K + 2 M Mhat + M).

    ``m_hat`` is the mean number of active neurons per step; ``None`` gives the
    dense form (Mhat = M).
    """
    m_hat = m if m_hat is None else m_hat
    return steps * ((2 * n - 1) * m / steps + 2 * m * m_hat + m)


def lca_workload(m: int, n: int, steps: int, m_hat: float | None,
                 energy: EnergyModel | None = None) -> dict:
    """Training TFLOPs, inference GFLOPs and energies (J) for one configuration."""
    energy = energy or get_energy_model("crossbar")
    train = lca_training_flops(m, n)
    infer = lca_inference_flops(m, n, steps, m_hat)
    return {
        "M": m, "N": n, "K": steps, "M_hat": m_hat,
        "training_TFLOPs": train / 1e12, "inference_GFLOPs": infer / 1e9,
        "training_energy_J": train * energy.e_flop, "inference_energy_mJ": infer * energy.e_flop * 1e3,
        "energy_model": energy.name,
    }
