"""The statistics layer: ``robustness`` (the statistical pieces: a run's data for the findings, bootstraps,
matched-length models, permutation tests) and ``findings`` (the paper's findings, one module each, and
the scorecard)."""
