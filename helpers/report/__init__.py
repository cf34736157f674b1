"""The report layer: ``figures`` (every figure of a run), ``notebooks`` (running the notebooks, their
HTML reports and the front page) and the explorer of one prompt, split into what it measures
(``explore_measure``) and how it draws it (``explore``: figures, widgets, notebook 07's page)."""
