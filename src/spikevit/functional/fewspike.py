"""Few-spike (SI-exp) neurons, the SI-norm neuron and the spiking softmax, as pure torch functions.

SI-exp / few-spike neuron (SIT-conversion Eqs. 2-4, Stoeckl & Maass 2021), ``K`` steps,
parameters ``T, h, d`` (each ``[K]``)::

    v[1] = x
    z[t] = H(v[t] - T[t])          with H(0) = 1, i.e. spike when v[t] >= T[t]
    v[t+1] = v[t] - h[t] * z[t]
    out = sum_t d[t] * z[t]

SI-norm neuron (Eqs. 5-10): weight ``w = exp_i``, threshold ``Vth = sum_j exp_j``;
integrate-and-fire over ``T`` steps on a regular spike train ``sr`` that encodes
1.0 (one input spike per step)::

    v[t] = v[t-1] + sr[t] * w;  z[t] = H(v[t] - Vth);  v[t] = v[t] - Vth * z[t]
    count = sum_t z[t] = floor(T * w / Vth)     (0 <= w <= Vth, v[0] = 0)

decoded as the rate ``count / T``.  The fast form feeds the whole input
``N_spike * w`` in one step to a neuron that may emit several spikes
(``floor(v / Vth)`` of them); with ``N_spike = T`` it emits the same count.
With ``steps=None`` the fast form returns the paper's real-valued Eq. 10,
``max(0, N_spike * w / Vth) / N_spike = max(0, w / Vth)``.

Shapes: inputs of any shape ``[*]``; spike trains are time-first ``[K, *]``.
"""
from __future__ import annotations

import torch

from spikevit.errors import require


def _check_params(T: torch.Tensor, h: torch.Tensor, d: torch.Tensor | None = None) -> None:
    require(T.dim() == 1 and h.shape == T.shape, f"few-spike T and h must be 1-D of equal length, "
            f"got {tuple(T.shape)} and {tuple(h.shape)}")
    if d is not None:
        require(d.shape == T.shape, f"few-spike d must have the shape of T {tuple(T.shape)}, got {tuple(d.shape)}")


def fs_spikes(x: torch.Tensor, T: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Spike train of the few-spike neuron. ``x: [*]``, ``T, h: [K]`` -> ``z: [K, *]`` (0/1, dtype of x).

    ``z[t] = (v[t] >= T[t])``, ``v[1] = x``, ``v[t+1] = v[t] - h[t] z[t]``.
    """
    _check_params(T, h)
    T = T.to(x.dtype)
    h = h.to(x.dtype)
    v = x
    out = []
    for t in range(T.shape[0]):          # K is small (<= 16): a loop over time steps, not over neurons
        z = (v >= T[t]).to(x.dtype)
        out.append(z)
        v = v - h[t] * z
    return torch.stack(out)


def fs_neuron(x: torch.Tensor, T: torch.Tensor, h: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Output of the few-spike neuron: ``out = sum_t d[t] z[t]``.  ``x: [*]`` -> ``[*]``."""
    _check_params(T, h, d)
    T = T.to(x.dtype)
    h = h.to(x.dtype)
    d = d.to(x.dtype)
    v = x
    out = torch.zeros_like(x)
    for t in range(T.shape[0]):
        z = (v >= T[t]).to(x.dtype)
        out = out + d[t] * z
        v = v - h[t] * z
    return out


def fs_neuron_with_count(x: torch.Tensor, T: torch.Tensor, h: torch.Tensor,
                         d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`fs_neuron` but also returns the number of spikes per neuron (``[*]``, over the K steps)."""
    _check_params(T, h, d)
    T, h, d = T.to(x.dtype), h.to(x.dtype), d.to(x.dtype)
    v = x
    out = torch.zeros_like(x)
    count = torch.zeros_like(x)
    for t in range(T.shape[0]):
        z = (v >= T[t]).to(x.dtype)
        out = out + d[t] * z
        count = count + z
        v = v - h[t] * z
    return out, count


def fs_spikes_batched(x: torch.Tensor, T: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Spike patterns for many parameter sets at once (used by the fitter).

    ``x: [N]``, ``T, h: [P, K]`` -> ``Z: [P, N, K]`` (0/1, dtype of x).
    """
    require(T.dim() == 2 and h.shape == T.shape, f"batched T, h must be [P, K], got {tuple(T.shape)}, "
            f"{tuple(h.shape)}")
    T, h = T.to(x.dtype), h.to(x.dtype)
    v = x.unsqueeze(0).expand(T.shape[0], -1)
    out = []
    for t in range(T.shape[1]):
        z = (v >= T[:, t:t + 1]).to(x.dtype)
        out.append(z)
        v = v - h[:, t:t + 1] * z
    return torch.stack(out, dim=-1)


def si_norm_if(w: torch.Tensor, vth: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SI-norm neuron, step-by-step integrate-and-fire form over ``steps`` steps.

    ``w: [*]`` (the SI-exp outputs, >= 0), ``vth``: broadcastable to ``w`` (their sum, > 0).
    The input is the regular spike train encoding 1.0 (``sr[t] = 1`` every step).
    Returns ``(rate, z)``: ``rate = max(0, sum_t z[t]) / steps`` (``[*]``) and the spike train ``z: [steps, *]``.
    """
    require(steps >= 1, f"SI-norm needs steps >= 1, got {steps}")
    vth = torch.as_tensor(vth, dtype=w.dtype).expand_as(w)
    v = torch.zeros_like(w)
    zs = []
    for _ in range(steps):
        v = v + w                                 # charge: sr[t] * w with sr[t] = 1
        z = (v >= vth).to(w.dtype)
        v = v - vth * z                           # discharge
        zs.append(z)
    z = torch.stack(zs)
    return z.sum(0).clamp_min(0) / steps, z


def si_norm_fast(w: torch.Tensor, vth: torch.Tensor, n_spike: int | None = None) -> torch.Tensor:
    """SI-norm neuron, fast form (paper Fig. 5b / Eq. 10): ``N_spike`` fed directly.

    ``n_spike=None``: the real-valued Eq. 10, ``max(0, w / Vth)``.  An integer ``n_spike``: the neuron
    receives ``n_spike * w`` in one step and emits ``floor(n_spike * w / Vth)`` spikes, decoded as
    ``count / n_spike``; equal to :func:`si_norm_if` with ``steps = n_spike``.  Shapes as ``w``.
    """
    if n_spike is None:
        return (w / vth).clamp_min(0)
    require(n_spike >= 1, f"SI-norm needs n_spike >= 1, got {n_spike}")
    return torch.floor(n_spike * w / vth).clamp_min(0) / n_spike


def spiking_softmax(x: torch.Tensor, T: torch.Tensor, h: torch.Tensor, d: torch.Tensor, dim: int = -1,
                    norm_steps: int | None = None) -> torch.Tensor:
    """Spiking softmax: ``exp_i = SI-exp(x_i)``, ``Vth = sum_j exp_j``, ``out_i = SI-norm(exp_i, Vth)``.

    ``x: [*]`` -> ``[*]``, normalised along ``dim``.  ``norm_steps``: see :func:`si_norm_fast`.
    A row whose SI-exp outputs are all zero (no spikes) gets zeros, as the neuron emits nothing.
    """
    e = fs_neuron(x, T, h, d)
    vth = e.sum(dim, keepdim=True)
    safe = torch.where(vth > 0, vth, torch.ones_like(vth))
    out = si_norm_fast(e, safe, norm_steps)
    return torch.where(vth > 0, out, torch.zeros_like(out))


def fs_pieces(T: torch.Tensor, h: torch.Tensor, d: torch.Tensor, max_pieces: int = 1 << 16) -> dict | None:
    """The few-spike neuron as the piecewise-constant function it is: every input in ``[edge[i], edge[i+1])``
    emits the same spike pattern.  Exact interval splitting in float64: at step t an interval whose
    patterns so far subtract ``S`` spikes where ``x >= T[t] + S`` (``v[t] = x - S >= T[t]``).

    Returns ``{"edges": [P-1] (left edges of pieces 1..P-1), "out": [P], "count": [P]}`` (float64), or None
    if the neuron has more than ``max_pieces`` pieces.  :func:`fs_lookup` evaluates it.
    """
    _check_params(T, h, d)
    Td, hd, dd = (t.detach().double().cpu().tolist() for t in (T, h, d))
    pieces = [(float("-inf"), float("inf"), 0.0, 0.0, 0)]          # (lo, hi, S, out, count)
    for t in range(len(Td)):
        nxt = []
        for lo, hi, S, out, cnt in pieces:
            c = Td[t] + S
            if c <= lo:
                nxt.append((lo, hi, S + hd[t], out + dd[t], cnt + 1))
            elif c >= hi:
                nxt.append((lo, hi, S, out, cnt))
            else:
                nxt += [(lo, c, S, out, cnt), (c, hi, S + hd[t], out + dd[t], cnt + 1)]
        if len(nxt) > max_pieces:
            return None
        pieces = sorted(nxt)
    out = {"edges": torch.tensor([p[0] for p in pieces[1:]], dtype=torch.float64),
           "out": torch.tensor([p[3] for p in pieces], dtype=torch.float64),
           "count": torch.tensor([p[4] for p in pieces], dtype=torch.float64)}
    out.update(_grid(out["edges"]))
    return out


def _grid(edges: torch.Tensor, max_cells: int = 1 << 16) -> dict:
    """A uniform grid over the edges with cells no wider than the smallest gap between edges, so that each
    cell holds at most one edge: piece(x) = base[cell] + (x >= next_edge[cell])."""
    if edges.numel() < 2:
        return {}
    gap = float((edges[1:] - edges[:-1]).min())
    span = float(edges[-1] - edges[0])
    if not gap > 0 or span / gap + 3 > max_cells:
        return {}
    w = gap
    lo = float(edges[0]) - w
    cells = int(span / w) + 3
    left = lo + w * torch.arange(cells, dtype=torch.float64)
    base = torch.searchsorted(edges, left, right=True)
    nxt = torch.cat((edges, torch.tensor([float("inf")], dtype=torch.float64)))[base]
    return {"grid_lo": lo, "grid_inv_w": 1.0 / w, "grid_base": base, "grid_next": nxt}


def fs_lookup(x: torch.Tensor, pieces: dict, total: bool = False) -> tuple[torch.Tensor, torch.Tensor | float]:
    """``(out, count)`` of the few-spike neuron by table lookup (:func:`fs_pieces`). ``x: [*]`` -> ``[*]``;
    with ``total=True`` the second value is the number of spikes of all inputs together (a float).

    Equal to :func:`fs_neuron_with_count` except for inputs within rounding of a piece edge (the
    step-by-step form accumulates ``v`` in the input's precision).
    """
    flat = x.reshape(-1)
    if "grid_base" in pieces:                   # uniform grid: one cell lookup and one comparison per input
        cells = pieces["grid_base"].numel()
        c = ((flat - pieces["grid_lo"]) * pieces["grid_inv_w"]).floor_().clamp_(0, cells - 1).long()
        base = pieces["grid_base"].to(x.device).index_select(0, c)
        nxt = pieces["grid_next"].to(device=x.device, dtype=x.dtype).index_select(0, c)
        idx = base + (flat >= nxt)
    else:
        edges = pieces["edges"].to(device=x.device, dtype=x.dtype)
        idx = torch.searchsorted(edges, flat.contiguous(), right=True)
    out = pieces["out"].to(device=x.device, dtype=x.dtype).index_select(0, idx).reshape(x.shape)
    if total:                                   # spikes summed over all inputs: a histogram of the pieces
        hist = torch.bincount(idx, minlength=pieces["count"].numel()).to(torch.float64)
        return out, float((hist * pieces["count"].to(device=x.device)).sum())   # elementwise: not a product
    return out, pieces["count"].to(device=x.device, dtype=x.dtype).index_select(0, idx).reshape(x.shape)
