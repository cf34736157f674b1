"""Finding 5's probe under cross-validation: per-fold accuracies, choices made inside training folds, the corrected
resampled t test of a gain, and the conditional (Freedman-Lane) permutation test.

The probe is a ridge regression of one-hot labels on a kernel (scikit-learn's ``RidgeClassifier`` with
``alpha=RIDGE`` and no separate intercept, in kernel form), so one Cholesky factorisation per training fold serves
any number of target columns, and its leave-one-out predictions on the training fold are exact and cheap
(``FoldFit.leave_one_out``): a choice among candidate probes (which n-grams, which layer) is made from them, inside
the training fold, and never sees the test fold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.linalg import cho_factor, cho_solve

RIDGE = 1.0
"""The probe's L2 penalty (scikit-learn's ``alpha``) on kernels scaled to a mean diagonal of about 1 per view."""


def onehot(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(n,) labels as (n, C) float64 indicator columns in ``classes`` order."""
    return (np.asarray(labels)[:, None] == classes[None, :]).astype(np.float64)


class FoldFit:
    """One probe kernel factorised on one training fold: scores of the test prompts, and exact leave-one-out
    scores of the training prompts, for any (n, T) targets (T columns: one-hot labels, or many label sets)."""

    def __init__(self, kernel: np.ndarray, train: np.ndarray, test: np.ndarray) -> None:
        self.train, self.test = train, test
        self.factor = cho_factor(kernel[np.ix_(train, train)] + RIDGE * np.eye(len(train)))
        self.cross = kernel[np.ix_(test, train)]

    def test_scores(self, targets: np.ndarray) -> np.ndarray:
        """Predicted scores of the test prompts: (t, T)."""
        return self.cross @ cho_solve(self.factor, targets[self.train])

    def leave_one_out(self, targets: np.ndarray) -> np.ndarray:
        """Each training prompt's score from the probe fitted without it: (m, T).

        With A = K + RIDGE * I, the fitted values are y - RIDGE * A^-1 y, so the leave-one-out residual is
        (A^-1 y)_i / (A^-1)_ii (the ridge regression identity; exact, no refit).
        """
        inverse = cho_solve(self.factor, np.eye(len(self.train)))
        return targets[self.train] - (inverse @ targets[self.train]) / np.diag(inverse)[:, None]


def fold_accuracies(
    kernels: list[np.ndarray], labels: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Each probe's test-fold accuracy and leave-one-out accuracy on its training fold: both (K, J).

    ``kernels``: K probes, each (n, n); ``folds``: J (train, test) index pairs.
    """
    classes = np.unique(labels)
    targets = onehot(labels, classes)
    tested, within = np.zeros((len(kernels), len(folds))), np.zeros((len(kernels), len(folds)))
    for j, (train, test) in enumerate(folds):
        for k, kernel in enumerate(kernels):
            fit = FoldFit(kernel, train, test)
            tested[k, j] = np.mean(classes[fit.test_scores(targets).argmax(axis=1)] == labels[test])
            within[k, j] = np.mean(classes[fit.leave_one_out(targets).argmax(axis=1)] == labels[train])
    return tested, within


def chosen_in_training(tested: np.ndarray, within: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per fold, the candidate with the best leave-one-out accuracy on the training fold (ties: the first) and its
    test-fold accuracy: (J,) index and (J,) accuracy, from ``fold_accuracies``' (K, J) arrays of the candidates."""
    choice = within.argmax(axis=0)
    return choice, tested[choice, np.arange(tested.shape[1])]


@dataclass(frozen=True)
class CorrectedT:
    """A cross-validated difference of accuracies and its corrected resampled t inference (Nadeau and Bengio 2003;
    Bouckaert and Frank 2004): the J per-fold differences' variance is inflated by (1/J + n_test/n_train) to
    account for the overlap of training sets between folds; t with J - 1 degrees of freedom."""

    estimate: float
    standard_error: float
    dof: int

    @classmethod
    def of(cls, differences: np.ndarray, test_share: float) -> CorrectedT:
        """``differences``: (J,) per-fold differences; ``test_share``: n_test / n_train of a fold."""
        differences = np.asarray(differences, float)
        varies = len(differences) > 1 and np.ptp(differences) > 0  # identical folds: no variance, not rounding's
        variance = float(differences.var(ddof=1)) if varies else 0.0
        return cls(
            float(differences.mean()),
            float(np.sqrt((1 / len(differences) + test_share) * variance)),
            max(len(differences) - 1, 1),
        )

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """The two-sided ``level`` confidence interval of the difference."""
        half = stats.t.ppf(0.5 + level / 2, self.dof) * self.standard_error
        return self.estimate - half, self.estimate + half

    def p_above(self, value: float = 0.0) -> float:
        """One-sided p-value that the difference is above ``value``; 1 (no evidence) when the folds do not vary,
        which only degenerate data give (every fold the same difference, e.g. a probe at zero everywhere)."""
        if self.standard_error == 0:
            return 1.0
        return float(stats.t.sf((self.estimate - value) / self.standard_error, self.dof))

    def p_below(self, value: float) -> float:
        """One-sided p-value that the difference is below ``value``; 1 (no evidence) when the folds do not vary."""
        if self.standard_error == 0:
            return 1.0
        return float(stats.t.cdf((self.estimate - value) / self.standard_error, self.dof))


def test_share(folds: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """n_test / n_train of the folds (their mean): the corrected resampled t's correction term."""
    return float(np.mean([len(test) / len(train) for train, test in folds]))


def conditional_permutation_p(
    reduced: np.ndarray,
    full: np.ndarray,
    labels: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    permutations: int,
    seed: int,
) -> tuple[float, float]:
    """Does the full probe's kernel predict the labels beyond the reduced one's? Freedman and Lane's (1983)
    permutation test: the one-hot labels' residuals after the reduced probe (fitted on all prompts) are permuted
    and added back to its fitted values, so every permuted target keeps what the reduced probe predicts and
    loses only what the full probe could add. Statistic: the cross-validated squared error of the reduced probe
    minus that of the full probe, on the same folds. Returns (statistic, p) with p = (1 + #{null >= observed}) /
    (1 + permutations).
    """
    classes = np.unique(labels)
    y = onehot(labels, classes)
    factor = cho_factor(reduced + RIDGE * np.eye(len(y)))
    fitted = y - RIDGE * cho_solve(factor, y)
    residual = y - fitted
    rng = np.random.default_rng(seed)
    targets = np.concatenate([y] + [fitted + residual[rng.permutation(len(y))] for _ in range(permutations)], axis=1)
    improvement = np.zeros(permutations + 1)
    for train, test in folds:
        errors = []
        for kernel in (reduced, full):
            scores = FoldFit(kernel, train, test).test_scores(targets)
            errors.append(((targets[test] - scores) ** 2).reshape(len(test), permutations + 1, len(classes)))
        improvement += (errors[0] - errors[1]).sum(axis=(0, 2))
    observed, null = float(improvement[0]), improvement[1:]
    return observed, (1 + int(np.sum(null >= observed - 1e-12 * abs(observed)))) / (1 + permutations)
