"""Energy constants of the three papers, as named, swappable models."""
from __future__ import annotations

from dataclasses import dataclass, replace

from spikevit.errors import SpikevitError


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation, in joules.

    e_flop: one generic FLOP (crossbar models: ViT-LCA / D-SELD).
    e_mac / e_ac: one multiply-accumulate / one accumulate (spiking layers).
    e_zero_check: checking one input for a spike (DTS paper).
    e_mem: one membrane-potential read or write (DTS paper's memory term).
    """

    name: str
    e_flop: float = 0.0
    e_mac: float = 0.0
    e_ac: float = 0.0
    e_zero_check: float = 0.0
    e_mem: float = 0.0
    source: str = ""

    def with_overrides(self, **kw) -> EnergyModel:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


ENERGY_MODELS: dict[str, EnergyModel] = {
    # ViT-LCA Eq. 10 / D-SELD Eq. 11: memristive crossbar at 11 TOPS/W.
    "crossbar": EnergyModel("crossbar", e_flop=9.09e-14, source="ViT-LCA Eq. 10, D-SELD Eq. 11"),
    # DTS-SNN Table V (45 nm): AC 1.8 pJ, MAC 13.32 pJ, 0.05 pJ per zero check.
    # Memory: one 32-bit SRAM access per membrane read/write (Horowitz 45 nm, 8 KB: 10 pJ / 64 bit).
    "dts45nm": EnergyModel("dts45nm", e_mac=13.32e-12, e_ac=1.8e-12, e_zero_check=0.05e-12,
                           e_mem=5.0e-12, source="DTS-SNN Sec. IV-E / Table V"),
    # SIT-conversion Sec. 4.4 (45 nm): MAC 4.6 pJ, AC 0.9 pJ.
    "sit45nm": EnergyModel("sit45nm", e_mac=4.6e-12, e_ac=0.9e-12, source="SIT-conversion Sec. 4.4"),
}


def get_energy_model(name: str, **overrides) -> EnergyModel:
    if name not in ENERGY_MODELS:
        raise SpikevitError(f"unknown energy model {name!r}; choose from {sorted(ENERGY_MODELS)}")
    return ENERGY_MODELS[name].with_overrides(**overrides)
