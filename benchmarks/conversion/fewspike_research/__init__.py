"""Research tools of the SI-exp fitting study (not part of the installed package).

* :mod:`fewspike_research.search` -- the exact grid objective for any K and CMA-ES / DE searches over it.
* :mod:`fewspike_research.bounds` -- lower bounds (piece counts, best piecewise-constant fits) on what a
  K-step few-spike neuron can reach.

Used by ``benchmarks/conversion/fewspike_search_evidence.py`` and ``fit_fewspike.py`` (run from the
repository root: the scripts put their own folder on ``sys.path``) and by the tests (``pytest`` adds
``benchmarks/conversion`` to the path, see ``pyproject.toml``).
"""
