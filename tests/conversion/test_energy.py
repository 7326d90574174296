"""SIT energy accounting: closed-form example and E_MAC / E_AC overrides."""
import pytest

from spikevit.energy import get_energy_model
from spikevit.energy.sit import sit_energy


def test_sit_energy_closed_form():
    layers = [{"name": "fc", "kind": "Linear", "macs": 1000, "spiking": False},
              {"name": "av", "kind": "attention av", "macs": 500, "spiking": True, "spikes": 300, "neurons": 100}]
    rows, tot = sit_energy(layers)
    assert tot["energy_ann_J"] == pytest.approx(1500 * 4.6e-12)
    assert tot["energy_snn_J"] == pytest.approx(1000 * 4.6e-12 + 500 * 3 * 0.9e-12)
    assert rows[1]["flops_snn"] == pytest.approx(1500) and rows[1]["spikes_per_neuron"] == pytest.approx(3)
    assert tot["energy_change_percent"] == pytest.approx(100 * (tot["energy_snn_J"] / tot["energy_ann_J"] - 1))
    _, tot2 = sit_energy(layers, get_energy_model("sit45nm", e_mac=1e-12, e_ac=1e-13))
    assert tot2["energy_snn_J"] == pytest.approx(1000e-12 + 1500e-13)
