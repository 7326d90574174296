"""Sharded exemplar dictionaries on ``torch.distributed`` (gloo on CPU, NCCL on GPUs, launched with torchrun).

Each rank holds a contiguous slice of the atoms, phi_r (N, M_r).  The LCA
dynamics are run in the N-space form u = phi^T z + diag(G) v
(:mod:`spikevit.functional.lca`): every rank keeps the same (B, N) state z and
updates it with the reconstruction phi a = sum_r phi_r a_r, so the only
per-step exchange is ONE all-reduce of a (B, N) tensor -- communication does
not grow with M.  Codes stay sharded; decoding reduces the (B, C) per-class
sums (max-sum decoder) and the per-row (value, index, label) of the largest
activation (max-activation decoder) across ranks.

Command line (one process per device; same flags on every node): ``spikevit lca shard`` under torchrun,
a thin call into :func:`run_sharded`::

    torchrun --nproc-per-node 4 $(which spikevit) lca shard \\
        --dictionary dict.safetensors --features CACHE/cifar10/<backbone>/test --json results/sharded.json
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from spikevit.errors import SpikevitError
from spikevit.functional.lca import LCATrace, lca_factored, lca_mixed
from spikevit.functional.lca.active import lca_active
from spikevit.lca.encode import check_dictionary_inputs, check_params, choose_backend
from spikevit.lca.params import LCA_DEFAULTS as D
from spikevit.lca.params import LCAParams
from spikevit.reports import Report
from spikevit.validation import positive_int

SHARDABLE = ("factored", "mixed")
# backends that run on a dictionary split over ranks; "active" is a research backend (docs/lca-backends.md),
# reachable from Python only
SHARDED_BACKENDS = {"factored": lca_factored, "mixed": lca_mixed, "active": lca_active}


def shard_bounds(m: int, rank: int, world: int) -> tuple[int, int]:
    """Atoms [lo, hi) of ``rank``: contiguous, sizes differ by at most one."""
    if world < 1 or not 0 <= rank < world:
        raise SpikevitError(f"bad rank {rank} for world size {world}")
    base, extra = divmod(m, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


@dataclass
class DictionaryShard:
    """Atoms [offset, offset + M_r) of an exemplar dictionary of ``total`` atoms.

    atoms: (N, M_r) columns phi_i; labels: (M_r,) class of each atom.
    """

    atoms: torch.Tensor
    labels: torch.Tensor
    offset: int
    total: int
    num_classes: int
    meta: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.atoms.shape[1])

    def to(self, device) -> "DictionaryShard":
        return DictionaryShard(self.atoms.to(device), self.labels.to(device), self.offset, self.total,
                               self.num_classes, self.meta)

    @classmethod
    def from_dictionary(cls, atoms: torch.Tensor, labels: torch.Tensor, rank: int, world: int,
                        num_classes: int | None = None, meta: dict | None = None) -> "DictionaryShard":
        """Slice an in-memory (N, M) dictionary for ``rank`` of ``world``."""
        lo, hi = shard_bounds(atoms.shape[1], rank, world)
        nc = int(labels.max()) + 1 if num_classes is None else int(num_classes)
        return cls(atoms[:, lo:hi].contiguous(), labels[lo:hi].clone(), lo, int(atoms.shape[1]), nc, dict(meta or {}))


def load_shard(path: str | Path, rank: int, world: int) -> DictionaryShard:
    """Read only this rank's columns of a saved :class:`~spikevit.lca.dictionary.Dictionary` file."""
    from safetensors import safe_open

    from spikevit.lca.dictionary import KIND
    from spikevit.tensorio import read_metadata

    meta = read_metadata(path, KIND)  # checks existence and kind
    with safe_open(str(path), framework="pt") as fh:
        names = set(fh.keys())
        if not {"atoms", "labels"} <= names:
            raise SpikevitError(f"{path}: corrupt dictionary (missing atoms or labels)")
        atoms_slice = fh.get_slice("atoms")
        shape = atoms_slice.get_shape()
        if len(shape) != 2 or shape[1] == 0:
            raise SpikevitError(f"{path}: corrupt dictionary (atoms must be an (N, M) matrix, got {shape})")
        if world > shape[1]:
            raise SpikevitError(f"{path}: {shape[1]} atoms cannot be split over {world} ranks")
        lo, hi = shard_bounds(shape[1], rank, world)
        atoms = atoms_slice[:, lo:hi].float().contiguous()
        labels = fh.get_slice("labels")[lo:hi].long()
    if not torch.isfinite(atoms).all():
        raise SpikevitError(f"{path}: corrupt dictionary (non-finite atoms in columns {lo}..{hi})")
    nc = int(meta.get("num_classes", 0)) or None
    if nc is None:  # every rank needs the same class count
        nc = int(_reduce(torch.tensor([float(labels.max()) + 1]), "max")[0])
    return DictionaryShard(atoms, labels, lo, int(shape[1]), nc, meta)


def _reduce(t: torch.Tensor, op: str, group=None) -> torch.Tensor:
    """All-reduce ``t`` (sum or max) over the group; identity without a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return t
    if dist.get_backend(group) == "gloo" and t.device.type != "cpu":
        host = t.cpu()
        dist.all_reduce(host, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX, group=group)
        return host.to(t.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX, group=group)
    return t


def make_allreduce(group=None):
    """The ``allreduce(tensor, op)`` hook of the LCA backends for a process group."""
    def allreduce(t: torch.Tensor, op: str) -> torch.Tensor:
        return _reduce(t.contiguous(), op, group)
    return allreduce


def encode_sharded(shard: DictionaryShard, inputs: torch.Tensor, *, lam: float = D.lam, tau: float = D.tau,
                   steps: int = D.steps, rectify: bool = D.rectify, threshold: str = D.threshold,
                   backend: str = D.backend,
                   exclude: torch.Tensor | None = None, trace=False, potentials: bool = False,
                   group=None, **backend_kwargs) -> LCATrace:
    """Codes of ``inputs`` (B, N) (the same on every rank) on this rank's atoms -> LCATrace with (B, M_r) codes.

    ``exclude`` holds GLOBAL atom indices (-1: none).  One all-reduce of the
    (B, N) reconstruction per step (plus one of the (B,) drives at the start).
    """
    check_params(lam, tau, steps, threshold, "auto")  # the backend name is checked against SHARDED_BACKENDS
    phi, s = check_dictionary_inputs(shard.atoms, inputs, where="encode_sharded")
    name = backend
    if backend == "auto":
        name = choose_backend(phi.shape[0], shard.total, phi.device)
        name = name if name in SHARDABLE else "factored"
    if name not in SHARDED_BACKENDS:
        raise SpikevitError(f"backend {name!r} cannot run on a sharded dictionary (the dense Gramian couples "
                            f"all shards); choose from {SHARDABLE}")
    if exclude is not None:
        exclude = torch.as_tensor(exclude, device=phi.device, dtype=torch.long)
        if exclude.shape != (s.shape[0],) or exclude.max() >= shard.total:
            raise SpikevitError("exclude must hold one global atom index (or -1) per input row")
        local = exclude - shard.offset
        exclude = torch.where((local >= 0) & (local < shard.size), local, torch.full_like(local, -1))
    return SHARDED_BACKENDS[name](phi, s, lam=float(lam), tau=float(tau), steps=int(steps), rectify=rectify,
                                  kind=threshold, exclude=exclude, trace=trace, potentials=potentials,
                                  allreduce=make_allreduce(group), **backend_kwargs)


def decode_sharded(codes: torch.Tensor, shard: DictionaryShard, group=None) -> dict[str, torch.Tensor]:
    """Max-sum and max-activation predictions (B,) from sharded (B, M_r) codes, identical on every rank.

    Ties of the max-activation decoder go to the smallest global atom index,
    as ``argmax`` on the full codes does.
    """
    labels = shard.labels.to(codes.device)
    sums = codes.new_zeros(codes.shape[0], shard.num_classes).index_add_(1, labels, codes.abs())
    sums = _reduce(sums, "sum", group)
    mag = codes.abs()
    best, where = mag.max(1)
    world = dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1
    if world == 1:
        return {"max_sum": sums.argmax(1), "max_activation": labels[where], "class_sums": sums}
    top = _reduce(best.clone(), "max", group)
    # among ranks holding the top value, the smallest global index wins
    gidx = torch.where(best == top, (where + shard.offset).to(torch.float64),
                       torch.full_like(best, float(shard.total), dtype=torch.float64))
    win = -_reduce(-gidx, "max", group)                             # global min
    mine = (where + shard.offset).to(torch.float64) == win
    label = torch.where(mine, labels[where].to(torch.float64), torch.zeros_like(win))
    label = _reduce(label, "sum", group).long()
    return {"max_sum": sums.argmax(1), "max_activation": label, "class_sums": sums}


def gather_codes(codes: torch.Tensor, shard: DictionaryShard, group=None) -> torch.Tensor | None:
    """Full (B, M) codes on rank 0 (None elsewhere); for tests and small runs."""
    if not (dist.is_available() and dist.is_initialized()):
        return codes
    world = dist.get_world_size(group)
    width = shard.total // world + 1
    pad = codes.new_zeros(codes.shape[0], width)
    pad[:, : codes.shape[1]] = codes
    parts = [torch.empty_like(pad) for _ in range(world)]
    dist.all_gather(parts, pad, group=group)
    if dist.get_rank(group) != 0:
        return None
    return torch.cat([p[:, : hi - lo] for p, (lo, hi) in zip(parts, [shard_bounds(shard.total, r, world)
                                                                     for r in range(world)])], 1)


# --------------------------------------------------------------------------- one sharded run


@dataclass(frozen=True)
class ShardedRun:
    """A sharded encode + decode of one feature split (``spikevit lca shard`` maps onto it one to one).

    dictionary: saved dictionary (each rank reads its own columns); features: an extracted split folder;
    lca: the dynamics' settings; batch_size: inputs per step batch; limit: first N rows only;
    device: "auto", "cpu" or "cuda" (rank r uses cuda:LOCAL_RANK); json: the report; codes_out: also gather
    the codes on rank 0 and save them (small runs); allow_test_atoms: evaluate even on a split that gave atoms.
    """

    dictionary: str
    features: str
    lca: LCAParams = D
    batch_size: int = 256
    limit: int | None = None
    device: str = "auto"
    json: str = "results/lca-sharded.json"
    codes_out: str | None = None
    allow_test_atoms: bool = False

    def __post_init__(self):
        positive_int(self.batch_size, "batch_size")
        if self.limit is not None:
            positive_int(self.limit, "limit")
        if self.lca.backend != "auto" and self.lca.backend not in SHARDABLE:
            raise SpikevitError(f"backend {self.lca.backend!r} cannot run on a sharded dictionary; choose from "
                                f"{['auto', *SHARDABLE]}")


def check_split_not_in_dictionary(path, dataset: str | None, split: str | None, allow: bool = False) -> int:
    """Refuse (before any encoding) to evaluate on a split that gave atoms to the dictionary file at ``path``,
    unless ``allow``; return how many atoms came from it (read from the file's provenance, not its atoms)."""
    from spikevit.lca.dictionary import check_split_disjoint, read_provenance

    if split is None:
        return 0
    return check_split_disjoint(*read_provenance(path), dataset, split, allow)


def run_sharded(run: ShardedRun, command: str = "spikevit lca shard") -> Report:
    """Run under ``torchrun`` (or as one process): every rank encodes the same inputs on its slice of the atoms;
    rank 0 writes the report.  Returns the :class:`~spikevit.reports.Report` (every rank; ``results``: accuracy
    per decoder, world size, timings)."""
    from spikevit.data.features import load_features
    from spikevit.runtime import progress, synchronize
    from spikevit.train.distributed import init_distributed, shutdown

    info = init_distributed(run.device)
    try:
        shard = load_shard(run.dictionary, info.rank, info.world_size).to(info.device)
        fs = load_features(run.features)
        feats, labels = fs.features[: run.limit], fs.labels[: run.limit]
        if shard.meta.get("backbone") and fs.backbone != shard.meta.get("backbone"):
            raise SpikevitError(f"features come from {fs.backbone!r}, the dictionary from {shard.meta['backbone']!r}")
        test_atoms = check_split_not_in_dictionary(run.dictionary, fs.meta.get("dataset", shard.meta.get("dataset")),
                                                   fs.meta.get("split"), run.allow_test_atoms)
        kw = run.lca.kwargs()
        preds = {"max_sum": [], "max_activation": []}
        codes_parts = []
        t_enc = t_dec = 0.0
        bar = progress(total=feats.shape[0], desc=f"LCA encode (rank {info.rank}/{info.world_size})", unit="img",
                       disable=None if info.is_main else True)
        for start in range(0, feats.shape[0], run.batch_size):
            x = feats[start:start + run.batch_size].to(info.device)
            synchronize(info.device); t0 = time.perf_counter()
            out = encode_sharded(shard, x, **kw)
            synchronize(info.device); t1 = time.perf_counter()
            dec = decode_sharded(out.codes, shard)
            synchronize(info.device); t2 = time.perf_counter()
            t_enc += t1 - t0; t_dec += t2 - t1
            for k in preds:
                preds[k].append(dec[k].cpu())
            if run.codes_out:
                full = gather_codes(out.codes, shard)
                if full is not None:
                    codes_parts.append(full.cpu().to_sparse())
            bar.update(x.shape[0])
        bar.close()
        n = feats.shape[0]
        acc = {k: 100.0 * float((torch.cat(v) == labels).double().mean()) for k, v in preds.items()}
        results = {"accuracy": acc, "test_atoms_in_dictionary": test_atoms, "world_size": info.world_size,
                   "atoms_total": shard.total,
                   "atoms_per_rank": shard.size, "samples": n,
                   "encode_ms_per_sample": 1e3 * t_enc / n, "decode_ms_per_sample": 1e3 * t_dec / n}
        report = Report(command, {k: v for k, v in asdict(run).items() if k != "lca"} | kw, results,
                        {"accuracy": [{"decoder": k, "top1_%": v} for k, v in acc.items()]},
                        title="Sharded exemplar LCA decoder")
        if info.is_main:
            if run.codes_out:
                from spikevit.lca.codes import save_codes
                save_codes(run.codes_out, torch.cat(codes_parts), labels,
                           {"dictionary": str(run.dictionary), "world_size": info.world_size} | kw)
            report.write(run.json)
            print(json.dumps({"accuracy": acc, "world_size": info.world_size,
                              "encode_ms_per_sample": results["encode_ms_per_sample"]}))
    finally:
        shutdown(info)
    return report
