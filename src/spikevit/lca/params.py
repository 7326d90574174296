"""The settings of the LCA dynamics (SPEC Eq. 2): their defaults are written here once.

Every entry point takes them from :class:`LCAParams`: :func:`spikevit.lca.encode`, the sharded encoder, the
evaluation pipeline, the scikit-learn estimator, the ``spikevit lca`` options and the reproductions.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from spikevit.errors import SpikevitError
from spikevit.functional.lca import THRESHOLDS
from spikevit.validation import finite_float, non_negative_float, positive_int


def check_tau(tau, name: str = "tau") -> float:
    """The LCA time constant (in steps): finite, >= 1 (Eq. 2 is stable), and small enough that the update
    ``(b - u - ...) / tau`` still moves the potentials in float64."""
    tau = finite_float(tau, name, minimum=1.0)
    if not 1.0 - 1.0 / tau < 1.0:
        raise SpikevitError(f"{name} {tau:g} is too large: 1 - 1/tau rounds to 1 in float64, so the potentials "
                            "never move")
    return tau


@dataclass(frozen=True)
class LCAParams:
    """LCA settings: ``u += (b - u - (G - diag G) a) / tau``, ``a = T_lam(u)``, ``steps`` = K updates.

    lam:       threshold lambda (>= 0)
    tau:       time constant in steps (>= 1)
    steps:     number of updates K (>= 1); the code is a[K]
    rectify:   ``a = max(u - lam, 0)`` (the authors' code) instead of the signed soft threshold
    threshold: "soft" or "hard"
    backend:   "auto" or a name of :data:`spikevit.lca.encode.BACKENDS` (all exact)

    The values are checked when the object is made (a :class:`SpikevitError` naming the field).
    """

    lam: float = 2.0
    tau: float = 100.0
    steps: int = 100
    rectify: bool = True
    threshold: str = "soft"
    backend: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "lam", non_negative_float(self.lam, "lam"))
        object.__setattr__(self, "tau", check_tau(self.tau))
        object.__setattr__(self, "steps", positive_int(self.steps, "steps (number of LCA steps K)"))
        if self.threshold not in THRESHOLDS:
            raise SpikevitError(f"unknown threshold {self.threshold!r}; choose from {THRESHOLDS}")

    def kwargs(self) -> dict:
        """Keyword arguments of :func:`spikevit.lca.encode` (and every function that takes the same ones)."""
        return asdict(self)


LCA_DEFAULTS = LCAParams()
