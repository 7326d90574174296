"""Every exact LCA backend against the dense Gramian and a float64 recursion, plus the screening bound itself,
the one backend signature and the FLOPs each backend reports."""
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import spikevit.functional.lca as lca_pkg
from spikevit.errors import SpikevitError
from spikevit.functional.lca import (
    LCABackend,
    first_crossing_step,
    first_crossing_steps,
    lca_backend,
    lca_factored,
    lca_gramian,
    lca_mixed,
    screening_basis,
)
from spikevit.functional.lca.active import lca_active
from spikevit.functional.lca.screened import lca_screened
from spikevit.lca import encode, encode_batches, encode_trace
from spikevit.lca.encode import BACKENDS, choose_backend, register_backend

PUBLIC_BACKENDS = set(BACKENDS)
RESEARCH = {"active": lca_active, "screened": lca_screened}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny problems: one thread avoids OpenMP spin-waiting on a shared 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def research_backends(monkeypatch):
    """The research backends are not offered by spikevit.lca.encode; register them here to test them by name."""
    for name, fn in RESEARCH.items():
        monkeypatch.setitem(BACKENDS, name, fn)


def _problem(n, m, b, scale, nonneg=False, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(n, m, generator=g, dtype=dtype)
    if nonneg:  # CNN features after ReLU: all atoms correlated, everyone hovers near threshold
        phi = phi.abs() + 0.3
    phi = phi / phi.norm(dim=0)
    s = scale * torch.randn(b, n, generator=g, dtype=dtype)
    if nonneg:
        s = s.abs()
    return phi, s


def recursion64(phi, s, lam, tau, steps, rectify=True, kind="soft"):
    """Plain float64 recursion u += (b - u - (G - diag G) a) / tau, written independently of the package."""
    phi, s = phi.double(), s.double()
    G = phi.T @ phi
    G.fill_diagonal_(0.0)
    b = s @ phi
    u = torch.zeros_like(b)

    def T(x):
        on = (x >= lam) if rectify else (x.abs() >= lam)
        if kind == "hard":
            return torch.where(on, x, 0.0)
        return torch.where(on, x - lam * torch.sign(x), 0.0)

    for _ in range(steps):
        u = u + (b - u - T(u) @ G) / tau
    return T(u), u


CASES = [  # (n, m, batch, scale, nonneg, lam, tau, steps, rectify, kind)
    (12, 150, 5, 4.0, False, 0.5, 10.0, 40, True, "soft"),
    (12, 150, 5, 4.0, False, 0.5, 10.0, 40, False, "soft"),
    (12, 150, 5, 4.0, False, 0.5, 10.0, 40, True, "hard"),
    (12, 150, 5, 4.0, False, 0.5, 10.0, 40, False, "hard"),
    (32, 400, 4, 12.0, True, 2.0, 100.0, 100, True, "soft"),   # paper defaults, correlated atoms
    (32, 400, 4, 30.0, False, 2.0, 100.0, 10, True, "soft"),   # K = 10: most rows start late or never
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"m{c[1]}-K{c[7]}-{'rect' if c[8] else 'signed'}-{c[9]}")
@pytest.mark.parametrize("backend", ["factored", "active", "screened", "mixed"])
def test_backends_match_float64_recursion_and_gramian(case, backend):
    n, m, bsz, scale, nonneg, lam, tau, steps, rectify, kind = case
    phi, s = _problem(n, m, bsz, scale, nonneg)
    ref_codes, ref_u = recursion64(phi, s, lam, tau, steps, rectify, kind)
    assert (ref_codes != 0).sum() > 0, "the case must have active neurons"
    kw = dict(lam=lam, tau=tau, steps=steps, rectify=rectify, threshold=kind)
    # float64: agreement to round-off
    out = encode_trace(phi, s, backend=backend, **kw)
    torch.testing.assert_close(out.codes, ref_codes, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.potentials, ref_u, rtol=1e-9, atol=1e-10)
    # float32: within 1e-4 of the largest code, same support as the float32 dense Gramian up to borderline atoms
    out32 = encode_trace(phi.float(), s.float(), backend=backend, **kw)
    dense32 = encode_trace(phi.float(), s.float(), backend="gramian", **kw)
    scale_ = ref_codes.abs().max()
    assert (out32.codes.double() - ref_codes).abs().max() <= 1e-4 * scale_
    assert (out32.codes.double() - dense32.codes.double()).abs().max() <= 1e-4 * scale_


def test_active_backend_does_less_work_than_factored_on_sparse_codes():
    """Correlated atoms, one time constant: the screening proves most atoms silent without computing them."""
    phi, s = _problem(24, 2000, 3, 10.0, nonneg=True, seed=3)
    kw = dict(lam=2.0, tau=100.0, steps=100)
    fac = encode_trace(phi, s, backend="factored", **kw)
    act = encode_trace(phi, s, backend="active", **kw)
    torch.testing.assert_close(act.codes, fac.codes, rtol=1e-9, atol=1e-10)
    m = phi.shape[1]
    work_fac = fac.stats["full_products"] * m
    work_act = act.stats["full_products"] * m + act.stats["tracked_pair_steps"]
    assert act.stats["full_products"] < fac.stats["full_products"] / 3
    assert work_act < work_fac / 2
    assert act.stats["active_pair_steps"] <= act.stats["tracked_pair_steps"]


# one correlated problem (paper defaults) on which the screening backends must equal the factored form
POLICY_PROBLEM = dict(n=24, m=3000, b=6, scale=10.0, nonneg=True, seed=11)
POLICY_KW = dict(lam=2.0, tau=100.0, steps=100)


def _same_as_factored(backend, **options):
    """(factored, backend) traces on POLICY_PROBLEM, after checking codes and potentials agree to float64 round-off."""
    phi, s = _problem(**POLICY_PROBLEM)
    ref = encode_trace(phi, s, backend="factored", **POLICY_KW)
    out = encode_trace(phi, s, backend=backend, **options, **POLICY_KW)
    torch.testing.assert_close(out.codes, ref.codes, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.potentials, ref.potentials, rtol=1e-9, atol=1e-10)
    assert (ref.codes != 0).sum() > 6
    return ref, out


@pytest.mark.parametrize("union_cap", [0.0, 0.02, 0.08, 1.0])
def test_screened_backend_is_exact_for_any_refresh_policy(union_cap):
    """Refreshing often (cap 0: at most 64 atoms exact) or never (cap 1) changes the work, not the codes."""
    ref, out = _same_as_factored("screened", union_cap=union_cap)
    if union_cap == 1.0:
        assert out.stats["refreshes"] == 0
    if union_cap == 0.0:
        assert out.stats["refreshes"] >= 1


def test_screened_backend_does_far_fewer_full_products():
    """Correlated atoms, one time constant: the bound spares the full product on most steps (exact codes)."""
    phi, s = _problem(64, 4000, 8, 10.0, nonneg=True, seed=3)
    kw = dict(lam=2.0, tau=100.0, steps=100)
    fac = encode_trace(phi, s, backend="factored", **kw)
    scr = encode_trace(phi, s, backend="screened", **kw)
    torch.testing.assert_close(scr.codes, fac.codes, rtol=1e-9, atol=1e-10)
    assert fac.stats["full_products"] > 700                    # one per row and step after the first crossing
    assert scr.stats["full_products"] < fac.stats["full_products"] / 10
    assert scr.stats["active_pair_steps"] > 0


@pytest.mark.parametrize("budget", [1e-4, 0.01, 0.2])
def test_mixed_backend_is_exact_for_any_budget(budget):
    """Tiny budget (a float32 refresh almost every step) or a large one (bfloat16 screening throughout): same codes."""
    ref, out = _same_as_factored("mixed", budget=budget)
    st = out.stats
    # every row-step is either screened in bfloat16 or refreshed in float32 (rows start with a free refresh)
    if budget == 0.2:
        assert st["full_products"] < ref.stats["full_products"] / 10
        assert st["screen_products"] > 0.9 * ref.stats["full_products"] and st["tracked_pairs"] > 0
    if budget == 1e-4:
        assert st["refreshes"] > st["screen_products"]
    # float32: the same codes as the float32 factored form up to float32 round-off
    phi, s = (t.float() for t in _problem(**POLICY_PROBLEM))
    out32 = encode_trace(phi, s, backend="mixed", budget=budget, **POLICY_KW)
    fac32 = encode_trace(phi, s, backend="factored", **POLICY_KW)
    assert (out32.codes - fac32.codes).abs().max() <= 1e-5 * fac32.codes.abs().max()
    assert torch.equal(out32.codes != 0, fac32.codes != 0)


def test_mixed_backend_rejects_bad_options():
    phi, s = _problem(8, 60, 2, 3.0, dtype=torch.float32)
    for bad, match in (({"budget": 0.0}, "budget"), ({"budget": float("nan")}, "budget"),
                       ({"safety": 0.5}, "safety"), ({"screen_dtype": torch.float16}, "screen_dtype")):
        with pytest.raises(SpikevitError, match=match):
            encode_trace(phi, s, backend="mixed", **bad)


def test_mixed_backend_catches_atoms_that_cross_late():
    """Atoms that sit just below threshold for most of the run and cross near the end are found by the screen."""
    phi, s = _problem(16, 800, 4, 6.0, seed=21)
    kw = dict(lam=1.0, tau=30.0, steps=120)
    ref = encode_trace(phi, s, backend="gramian", trace="active", **kw)
    out = encode_trace(phi, s, backend="mixed", trace="active", budget=0.5, **kw)
    torch.testing.assert_close(out.codes, ref.codes, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.active, ref.active)
    assert out.stats["screen_hits"] > 0          # atoms outside the tracked set were caught by the screen


def test_mixed_backend_falls_back_when_the_kernel_breaks_the_bound(monkeypatch):
    """A low-precision kernel that accumulated in low precision would break the bound: the factored form is used."""
    import spikevit.functional.lca.mixed as lm
    phi, s = _problem(16, 500, 3, 6.0, seed=2, dtype=torch.float32)
    monkeypatch.setattr(lm, "_KERNEL_CHECKS", {(str(phi.device), 16, torch.bfloat16): False})
    with pytest.warns(RuntimeWarning, match="rounding bound"):
        out = encode_trace(phi, s, backend="mixed")
    assert out.stats["backend"] == "factored"
    monkeypatch.setattr(lm, "_KERNEL_CHECKS", {})
    assert lm.screening_kernel_ok(16, phi.device) and lm.screening_kernel_ok(1280, phi.device)
    assert encode_trace(phi, s, backend="mixed").stats["backend"] == "mixed"


def test_bf16_product_bound_holds():
    """|phi^T D - bf16 product| <= c1 ||phi|| ||D|| + c2 |P| against a float64 product (safety 1: the proven constants)."""
    from spikevit.functional.lca.mixed import bf16_product_bound, round_down
    g = torch.Generator().manual_seed(0)
    for n, scale in ((64, 1.0), (1280, 1e-3), (1280, 50.0)):
        phi = torch.randn(n, 3000, generator=g)
        D = scale * torch.randn(40, n, generator=g) * torch.rand(40, 1, generator=g)
        exact = D.double() @ phi.double()
        c1, c2 = bf16_product_bound(n, safety=1.0)
        # both kernels: (N, M) layout through matmul, (M, N) layout through linear (what the backend uses)
        for P in ((D.to(torch.bfloat16) @ phi.to(torch.bfloat16)).double(),
                  torch.nn.functional.linear(D.to(torch.bfloat16), phi.T.contiguous().to(torch.bfloat16)).double()):
            bound = c1 * D.double().norm(dim=1, keepdim=True) * phi.double().norm(dim=0) + c2 * P.abs()
            assert ((exact - P).abs() <= bound).all()
        # worst case vs random rounding: the bound is within ~2 orders of magnitude of the observed error
        assert (exact - P).abs().max() > bound.max() / 200
    x = torch.tensor([3.0, -3.0, 1e-30, -1e-30, 0.0, -math.inf, 2.0 ** 60], dtype=torch.float32)
    y = round_down(x, torch.bfloat16, 2.0 ** -8)
    assert (y.float() <= x).all() and y[-2] == -math.inf


def test_screening_bound_holds_on_every_atom_and_step():
    """The bound used by the active backend, evaluated densely, is >= the true potential of silent atoms."""
    phi, s = _problem(20, 400, 3, 6.0, seed=5)
    lam, tau, steps = 1.0, 20.0, 30
    V, PT, rho, norms, phiT = screening_basis(phi, 6)
    torch.testing.assert_close(V.T @ V, torch.eye(6, dtype=phi.dtype), atol=1e-12, rtol=0)
    torch.testing.assert_close(rho, (phi - V @ (V.T @ phi)).norm(dim=0))
    # true trajectory (float64 recursion), kept per step
    G = phi.T @ phi
    G.fill_diagonal_(0.0)
    b = s @ phi
    u = torch.zeros_like(b)
    z = torch.zeros_like(s)
    us, zs = [u], [z]
    for _ in range(steps):
        a = torch.clamp(u - lam, min=0)
        u = u + (b - u - a @ G) / tau
        z = z + (s - a @ phi.T - z) / tau
        us.append(u); zs.append(z)
    k0 = 12
    silent_since = torch.stack([(us[k] < lam) for k in range(k0, steps + 1)]).all(0)
    sigma = s @ V
    s_perp = s - sigma @ V.T
    eta = s_perp.norm(dim=1, keepdim=True)
    s_perp = s_perp / eta
    for k in range(k0, steps + 1):
        dz = zs[k] - zs[k0]
        c = dz @ V
        g1 = (dz * s_perp).sum(1, keepdim=True)
        e = (dz - c @ V.T - g1 * s_perp).norm(dim=1, keepdim=True)
        gamma = g1 / eta
        hi = us[k0] + gamma * b + (c - gamma * sigma) @ PT.T + e * rho
        gap = (hi - us[k])[silent_since]
        assert (gap >= -1e-10).all()
    assert silent_since.sum() > 100


def test_per_row_start_steps_are_exact():
    b = torch.tensor([[3.0, -1.0], [0.5, 0.2], [1.0, 2.5]])
    drive = b.amax(1)
    got = first_crossing_steps(drive, 2.0, 10.0, 100)
    assert got.tolist() == [first_crossing_step(b[i:i + 1], 2.0, 10.0, True, 100) for i in range(3)]
    assert got.tolist()[1] == 100  # never crosses


def test_rows_starting_at_different_steps_and_silent_rows():
    """A batch mixing strong, weak and zero inputs equals the rows encoded one at a time."""
    phi, s = _problem(16, 500, 5, 8.0, seed=2)
    s[1] *= 0.05          # starts late
    s[3] = 0.0            # never active
    for backend in ("factored", "active", "screened", "mixed"):
        batch = encode(phi, s, backend=backend)
        for i in range(5):
            torch.testing.assert_close(batch[i], encode(phi, s[i:i + 1], backend="gramian")[0], rtol=1e-9, atol=1e-10)
        assert batch[3].abs().sum() == 0


def test_traces_match_the_reference_for_every_backend():
    phi, s = _problem(10, 200, 3, 5.0, seed=7)
    kw = dict(lam=0.6, tau=8.0, steps=30, trace="energy")
    ref = encode_trace(phi, s, backend="gramian", **kw)
    for backend in ("factored", "active", "screened", "mixed"):
        out = encode_trace(phi, s, backend=backend, **kw)
        torch.testing.assert_close(out.active, ref.active)
        torch.testing.assert_close(out.energy, ref.energy, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(out.residual, ref.residual, rtol=1e-9, atol=1e-9)
        # last entry is the energy of the returned codes
        a = out.codes
        e = 0.5 * ((s - a @ phi.T) ** 2).sum(1) + 0.6 * a.abs().sum(1)
        torch.testing.assert_close(out.energy[-1], e, rtol=1e-9, atol=1e-9)


def test_exclude_in_every_backend():
    phi, s = _problem(16, 400, 6, 6.0, seed=4)
    full = encode(phi, s, backend="gramian")
    win = full.argmax(1)
    win[2] = -1
    ref = encode_trace(phi, s, backend="gramian", exclude=win)
    for backend in ("factored", "active", "screened", "mixed"):
        out = encode_trace(phi, s, backend=backend, exclude=win)
        torch.testing.assert_close(out.codes, ref.codes, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(out.potentials, ref.potentials, rtol=1e-9, atol=1e-10)
        rows = torch.tensor([0, 1, 3, 4, 5])
        assert (out.codes[rows, win[rows]] == 0).all()


def test_bf16_products_are_close_but_opt_in():
    phi, s = _problem(32, 600, 4, 6.0, seed=8, dtype=torch.float32)
    exact = encode_trace(phi, s, backend="factored")
    mixed = encode_trace(phi, s, backend="factored", matmul_dtype=torch.bfloat16)
    assert mixed.codes.dtype == torch.float32
    rel = (mixed.codes - exact.codes).abs().max() / exact.codes.abs().max()
    assert 0 < rel < 0.1  # not exact (bf16 keeps 8 bits), but the same code up to a few percent


def test_streaming_equals_one_call_and_bounded_batches():
    phi, s = _problem(16, 700, 11, 6.0, seed=9, dtype=torch.float32)
    whole = encode(phi, s, backend="active")
    seen = []
    for rows, out in encode_batches(phi, s, batch_size=4, backend="active", show_progress=False):
        assert out.codes.shape[0] <= 4
        seen.append(out.codes)
        torch.testing.assert_close(out.codes, whole[rows], rtol=1e-5, atol=1e-5)
    assert sum(c.shape[0] for c in seen) == 11


def test_backend_choice_and_options(monkeypatch):
    import importlib
    enc = importlib.import_module("spikevit.lca.encode")
    assert choose_backend(1280, 500) == "gramian"
    assert choose_backend(1280, 2000) == "factored"
    assert choose_backend(1280, 50_000, torch.device("cuda")) == "factored"
    monkeypatch.setattr(enc, "_BF16_CPU", True)
    assert choose_backend(1280, 50_000) == "mixed"
    assert choose_backend(1280, 2000) == "factored"
    monkeypatch.setattr(enc, "_BF16_CPU", False)    # emulated bfloat16: the screening would not pay
    assert choose_backend(1280, 50_000) == "factored"
    # the public registry: the research backends (no measured regime where they win) are left out
    assert PUBLIC_BACKENDS == {"gramian", "factored", "mixed"}
    assert not {"lca_active", "lca_screened"} & set(lca_pkg.__all__)
    phi, s = _problem(8, 30, 2, 3.0)
    with pytest.raises(SpikevitError, match="does not take"):
        encode_trace(phi, s, backend="gramian", basis_dim=4)


def test_memory_is_never_m_by_m_outside_the_gramian(monkeypatch):
    """No tensor with M x M elements is created by the factored / active backends."""
    phi, s = _problem(8, 600, 3, 4.0, seed=1)
    m = phi.shape[1]
    big = []

    def watch(t):
        if isinstance(t, torch.Tensor) and t.numel() >= m * m:
            big.append(tuple(t.shape))
        return t

    from torch.utils._python_dispatch import TorchDispatchMode

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for o in (out if isinstance(out, (tuple, list)) else [out]):
                watch(o)
            return out

    with Watch():
        encode(phi, s, backend="factored")
        encode(phi, s, backend="active")
        encode(phi, s, backend="screened")
        encode(phi.float(), s.float(), backend="mixed")
    assert big == []
    with Watch():
        encode(phi, s, backend="gramian")
    assert (m, m) in big


# --------------------------------------------------------------------------- one signature, no global state


def _conforming(phi, s, *, lam, tau, steps, rectify=True, kind="soft", exclude=None, trace=False,
                potentials=True, allreduce=lca_pkg.no_reduce, scale=1.0):
    """A third-party backend with the fixed signature and one option of its own."""
    return lca_factored(phi, s * scale, lam=lam, tau=tau, steps=steps, rectify=rectify, kind=kind,
                        exclude=exclude, trace=trace, potentials=potentials, allreduce=allreduce)


def _no_potentials(phi, s, *, lam, tau, steps, rectify=True, kind="soft", exclude=None, trace=False,
                   allreduce=lca_pkg.no_reduce):
    return lca_gramian(phi, s, lam=lam, tau=tau, steps=steps)


def _option_without_default(phi, s, *, lam, tau, steps, rectify=True, kind="soft", exclude=None, trace=False,
                            potentials=True, allreduce=lca_pkg.no_reduce, depth):
    return lca_gramian(phi, s, lam=lam, tau=tau, steps=steps)


def test_every_backend_has_the_one_signature(monkeypatch):
    import importlib
    enc = importlib.import_module("spikevit.lca.encode")
    for fn in (lca_gramian, lca_factored, lca_mixed, lca_active, lca_screened):
        assert isinstance(fn, LCABackend)
    assert lca_gramian.options == {"gram"}
    assert lca_factored.options == {"skip", "matmul_dtype"}
    assert lca_mixed.options == {"skip", "screen_dtype", "budget", "safety", "refresh_share"}
    monkeypatch.setattr(enc, "BACKENDS", dict(BACKENDS))            # registrations below stay in this test
    with pytest.raises(SpikevitError, match="register_backend.*missing keyword-only argument 'potentials'"):
        register_backend("broken", _no_potentials)
    with pytest.raises(TypeError, match="'depth'"):
        lca_backend(_option_without_default)
    assert "broken" not in enc.BACKENDS
    register_backend("mine", _conforming)
    phi, s = _problem(12, 150, 5, 4.0)
    kw = dict(lam=0.5, tau=10.0, steps=40)
    torch.testing.assert_close(encode_trace(phi, s, backend="mine", scale=0.5, **kw).codes,
                               encode_trace(phi, 0.5 * s, backend="factored", **kw).codes, rtol=0, atol=0)
    with pytest.raises(SpikevitError, match=r"'mine' does not take option\(s\) \['basis_dim'\]"):
        encode_trace(phi, s, backend="mine", basis_dim=3, **kw)


def test_every_backend_honours_potentials_and_the_gramian_refuses_shards():
    phi, s = _problem(12, 150, 5, 4.0)
    kw = dict(lam=0.5, tau=10.0, steps=40)
    ref_codes, ref_u = recursion64(phi, s, **kw)
    for fn in (lca_gramian, lca_factored, lca_mixed, lca_active, lca_screened):
        out = fn(phi, s, potentials=False, **kw)
        assert out.potentials is None
        torch.testing.assert_close(out.codes, ref_codes, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(fn(phi, s, **kw).potentials, ref_u, rtol=1e-9, atol=1e-10)
    with pytest.raises(SpikevitError, match="sharded"):
        lca_gramian(phi, s, allreduce=lambda t, op: t, **kw)


def test_importing_the_backends_leaves_warning_filters_alone():
    """No global warning filter at import; the CSR beta warning is silenced where the CSR tensor is built."""
    import subprocess
    import sys
    code = ("import warnings, torch; before = list(warnings.filters)\n"
            "import spikevit.functional.lca as L; assert warnings.filters == before\n"
            "warnings.simplefilter('error')\n"   # any warning from the backends would raise
            "phi = torch.randn(8, 60, dtype=torch.float64); phi /= phi.norm(dim=0)\n"
            "out = L.lca_factored(phi, 4 * torch.randn(3, 8, dtype=torch.float64), lam=0.5, tau=10.0, steps=30)\n"
            "assert out.stats['recon_pairs'] > 0\n")   # the CSR reconstruction ran
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


# --------------------------------------------------------------------------- FLOPs


class ProductFlops(TorchDispatchMode):
    """2 x multiply-adds of the matrix products actually dispatched: dense mm / addmm, sparse x dense, sampled dots.

    ``near_width`` d also counts the active backend's per-pair bound dot products, the elementwise product of two
    (pairs, d) tensors, as 2 (d + 1) per pair (d projections and the remainder term).
    """

    def __init__(self, near_width: int | None = None):
        super().__init__()
        self.flops = self.low = 0.0
        self.near_width = near_width

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        aten = torch.ops.aten
        f, dtype = 0.0, None
        if func is aten.mm.default:
            a, b = args
            f, dtype = 2.0 * a.shape[0] * a.shape[1] * b.shape[1], a.dtype
        elif func is aten.addmm.default:
            a, b = args[1], args[2]
            f, dtype = 2.0 * a.shape[0] * a.shape[1] * b.shape[1], a.dtype
        elif func is aten._sparse_addmm.default:           # sparse (n, M) @ dense (M, N)
            f = 2.0 * args[1]._nnz() * args[2].shape[1]
        elif func is aten.sparse_sampled_addmm.default:    # (z @ phi) at the sparse pattern's pairs
            f = 2.0 * args[0]._nnz() * args[1].shape[1]
        elif (func is aten.mul.Tensor and self.near_width and all(isinstance(a, torch.Tensor) for a in args[:2])
              and args[0].dim() == 2 and args[0].shape == args[1].shape and args[0].shape[1] == self.near_width):
            f = 2.0 * (self.near_width + 1) * args[0].shape[0]
        self.flops += f
        if dtype in (torch.bfloat16, torch.float16):
            self.low += f
        return func(*args, **(kwargs or {}))


FLOP_CASES = [  # (n, m, batch, scale, nonneg, seed, kw)
    (24, 600, 5, 10.0, True, 3, dict(lam=2.0, tau=100.0, steps=100)),
    (12, 150, 5, 4.0, False, 0,
     dict(lam=0.5, tau=10.0, steps=40, rectify=False, exclude=torch.tensor([3, -1, 7, 9, -1]))),
]
OPTIONS = {"gramian": {}, "factored": {}, "factored-bf16": {"matmul_dtype": torch.bfloat16},
           "mixed": {"budget": 0.05}, "active": {"basis_dim": 5}, "screened": {"basis_dim": 5, "union_cap": 0.02}}
FUNCTIONS = {"gramian": lca_gramian, "factored": lca_factored, "factored-bf16": lca_factored, "mixed": lca_mixed,
             "active": lca_active, "screened": lca_screened}


@pytest.mark.parametrize("case", range(len(FLOP_CASES)))
@pytest.mark.parametrize("backend", list(OPTIONS))
@pytest.mark.parametrize("potentials", [False, True])
def test_reported_flops_equal_the_products_dispatched(backend, case, potentials):
    n, m, bsz, scale, nonneg, seed, kw = FLOP_CASES[case]
    phi, s = _problem(n, m, bsz, scale, nonneg, seed=seed, dtype=torch.float32)
    fn, options = FUNCTIONS[backend], OPTIONS[backend]
    if "basis_dim" in options:
        screening_basis(phi, options["basis_dim"])                  # per-dictionary preprocessing, cached
    lca_pkg.screening_kernel_ok(n, phi.device)                      # one-off kernel check, cached
    if backend == "gramian":
        options = {"gram": phi.T @ phi}
    with ProductFlops(near_width=options.get("basis_dim") if backend == "active" else None) as count:
        out = fn(phi, s, potentials=potentials, trace="active", **kw, **options)
    assert out.stats["flops"] == count.flops > 0
    assert out.stats.get("flops_low_precision", 0.0) == count.low
    if backend in ("mixed", "factored-bf16") and kw.get("rectify", True):
        assert count.low > 0
    if backend == "active":
        assert out.stats["near_tests"] > 0 and out.stats["full_tests"] > 0
    if backend == "screened" and kw.get("rectify", True):
        assert out.stats["refreshes"] > 0 and out.stats["union_atom_steps"] > 0


def test_gramian_and_factored_flops_equal_a_hand_count():
    """Closed forms: the Gramian does 2 B N M + K 2 B M^2 (+ 2 N M^2 to build G); the factored form one
    (N x M) product per row and step from the row's first possible crossing, plus 2 N per active atom it
    reconstructs (steps 1 .. K-1, counted from the dense reference's trace)."""
    phi, s = _problem(24, 600, 5, 10.0, nonneg=True, seed=3)
    s[2] *= 0.02                                                    # a row that starts late
    N, M, B = phi.shape[0], phi.shape[1], s.shape[0]
    lam, tau, K = 2.0, 100.0, 100
    ref = lca_gramian(phi, s, lam=lam, tau=tau, steps=K, trace="active")
    assert ref.stats["flops"] == 2 * B * N * M + K * 2 * B * M * M
    assert ref.stats["setup_flops"] == 2 * N * M * M
    assert lca_gramian(phi, s, lam=lam, tau=tau, steps=K, gram=phi.T @ phi).stats["setup_flops"] == 0
    start = first_crossing_steps((s @ phi).amax(1), lam, tau, K)
    assert start[2] > start.min()
    out = lca_factored(phi, s, lam=lam, tau=tau, steps=K)
    rows_steps = int((K + 1 - start).sum())
    active_pairs = int(ref.active[: K - 1].sum())                   # a[1] .. a[K-1]
    assert active_pairs > 0
    assert out.stats["flops"] == 2 * B * N * M + rows_steps * 2 * N * M + active_pairs * 2 * N
