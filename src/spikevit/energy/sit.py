"""Energy of a SIT-converted transformer vs its ANN (SIT-conversion Sec. 4.1.2, Eqs. 16-19).

Per layer ``l`` (convolution, linear layer, or attention product):

    FLOPs_ANN(l) = dense multiply-accumulates of the layer (k^2 c_in c_out w h, f_in f_out, or for the
                   attention products B H N M d)
    FLOPs_SNN(l) = FLOPs_ANN(l) * SpikeNum(l) / NeuronNum(l)        if the layer's input is spikes
    E_ANN = sum_l FLOPs_ANN(l) * E_MAC
    E_SNN = sum_{l spiking} FLOPs_SNN(l) * E_AC + sum_{l not spiking} FLOPs_ANN(l) * E_MAC

``SpikeNum / NeuronNum`` is the number of spikes, over all time steps, per neuron of the spiking layer
that feeds ``l`` (SI-exp neurons of the spiking softmax for ``A V``; few-spike activation neurons for
the linear layer after a converted activation).  Layers whose input is analog stay MACs.
"""
from __future__ import annotations

from spikevit.energy.models import EnergyModel, get_energy_model
from spikevit.energy.profile import snn_flops


def sit_energy(layers: list[dict], energy: EnergyModel | None = None) -> tuple[list[dict], dict]:
    """Per-layer and total energy of the ANN and the converted SNN.

    ``layers``: dicts with ``name``, ``kind``, ``macs`` (dense MACs per sample), ``spiking`` (bool) and,
    for spiking layers, ``spikes`` and ``neurons`` (of the feeding spiking layer, per sample).
    Returns ``(rows, totals)``; energies in joules per sample (``*_mJ`` columns in millijoules).
    """
    energy = energy or get_energy_model("sit45nm")
    rows, e_ann, e_snn, f_ann, f_snn = [], 0.0, 0.0, 0.0, 0.0
    for layer in layers:
        macs = float(layer["macs"])
        spiking = bool(layer.get("spiking"))
        rate = layer["spikes"] / layer["neurons"] if spiking and layer.get("neurons") else None
        flops_snn = snn_flops(macs, layer["spikes"], layer["neurons"]) if spiking else macs
        ea = macs * energy.e_mac
        es = flops_snn * energy.e_ac if spiking else macs * energy.e_mac
        rows.append({"layer": layer["name"], "kind": layer["kind"], "spiking_input": spiking,
                     "flops_ann": macs, "spikes_per_neuron": rate, "flops_snn": flops_snn,
                     "energy_ann_mJ": ea * 1e3, "energy_snn_mJ": es * 1e3})
        e_ann, e_snn, f_ann, f_snn = e_ann + ea, e_snn + es, f_ann + macs, f_snn + flops_snn
    totals = {"flops_ann": f_ann, "flops_snn": f_snn, "energy_ann_J": e_ann, "energy_snn_J": e_snn,
              "energy_ann_mJ": e_ann * 1e3, "energy_snn_mJ": e_snn * 1e3,
              "energy_change_percent": 100.0 * (e_snn - e_ann) / e_ann if e_ann else 0.0,
              "e_mac_J": energy.e_mac, "e_ac_J": energy.e_ac, "energy_model": energy.name}
    return rows, totals
