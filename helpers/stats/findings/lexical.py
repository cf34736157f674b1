"""Text-only views of the prompts: what the words alone give away, with no model (finding 5's baselines and controls).

``ngram_kernels`` are the lexical probe's candidate views (TF-IDF of word and character n-grams), the
baseline that finding 5's rule judges a model against. ``bag_of_words``, ``hashed_word_embedding`` and
``hashed_char_ngrams`` are text-only "activations" for the negative controls: fed to the rule as if they were
a model's layers, they carry nothing beyond the words, so the rule must never say ``holds`` for them.

Every view here is label-free and fitted on all of a run's prompts (as the probes' standardisation is).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

WORD_NGRAMS: tuple[int, int] = (1, 2)
"""The lexical probe's word n-grams: single words and pairs of adjacent words."""
CHAR_NGRAMS: tuple[int, int] = (2, 5)
"""The lexical probe's character n-grams (within word boundaries, scikit-learn's ``char_wb``)."""
LEXICAL_VIEWS: tuple[str, ...] = ("words", "characters", "words and characters")
"""The lexical probe's candidates, chosen inside each training fold (never on its test fold)."""


@dataclass(frozen=True)
class NgramSpec:
    """One TF-IDF vectoriser's settings (sublinear term frequency, rows of unit length)."""

    analyzer: str
    ngram_range: tuple[int, int]

    def matrix(self, texts: list[str]) -> np.ndarray:
        """The prompts' TF-IDF rows: (n, vocabulary) float64, each row of unit length."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectoriser = TfidfVectorizer(analyzer=self.analyzer, ngram_range=self.ngram_range, sublinear_tf=True)
        return vectoriser.fit_transform(texts).astype(np.float64).toarray()


WORDS = NgramSpec("word", WORD_NGRAMS)
CHARACTERS = NgramSpec("char_wb", CHAR_NGRAMS)


def tfidf_kernel(texts: list[str], spec: NgramSpec) -> np.ndarray:
    """The linear kernel of the prompts' TF-IDF rows (cosine similarity; diagonal 1): (n, n) float64."""
    rows = spec.matrix(texts)
    return rows @ rows.T


def ngram_kernels(texts: list[str]) -> dict[str, np.ndarray]:
    """The lexical probe's candidate kernels (``LEXICAL_VIEWS``), each (n, n) with a mean diagonal of 1 (read-only:
    the same prompts give the same kernels, computed once per process)."""
    return _ngram_kernels(tuple(texts))


@functools.lru_cache(maxsize=4)
def _ngram_kernels(texts: tuple[str, ...]) -> dict[str, np.ndarray]:
    words, characters = tfidf_kernel(list(texts), WORDS), tfidf_kernel(list(texts), CHARACTERS)
    kernels = dict(zip(LEXICAL_VIEWS, (words, characters, (words + characters) / 2), strict=True))
    for kernel in kernels.values():
        kernel.setflags(write=False)
    return kernels


# --- text-only "activations": the negative controls -----------------------------------------------------


def bag_of_words(texts: list[str]) -> np.ndarray:
    """Which words each prompt uses (binary, lower-cased): (n, vocabulary) float32."""
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(binary=True).fit_transform(texts).astype(np.float32).toarray()


def hashed_word_embedding(texts: list[str], width: int = 768, seed: int = 0) -> np.ndarray:
    """Each prompt's mean of random word vectors (a word's vector fixed by its hash and ``seed``; no training):
    what an untrained embedding layer mean-pooled over a prompt gives away. (n, width) float32."""
    from sklearn.feature_extraction.text import HashingVectorizer

    counts = HashingVectorizer(n_features=2**16, alternate_sign=False, norm=None).transform(texts)
    table = np.random.default_rng(seed).standard_normal((2**16, width)).astype(np.float32)
    words = np.maximum(np.asarray(counts.sum(axis=1)).ravel(), 1.0)
    return np.asarray(counts @ table, np.float32) / words[:, None].astype(np.float32)


def hashed_char_ngrams(texts: list[str], width: int = 2048) -> np.ndarray:
    """Counts of the prompts' character 2-5-grams hashed into ``width`` bins: (n, width) float32."""
    from sklearn.feature_extraction.text import HashingVectorizer

    hashed = HashingVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, n_features=width, alternate_sign=False)
    return hashed.transform(texts).astype(np.float32).toarray()


def tfidf_components(texts: list[str], width: int = 128) -> np.ndarray:
    """The lexical probe's own features, word and character TF-IDF side by side, reduced to ``width`` principal
    directions (truncated SVD, label-free): the hardest lexical control, as good as the baseline. (n, width)."""
    from sklearn.decomposition import TruncatedSVD

    rows = np.hstack([WORDS.matrix(texts), CHARACTERS.matrix(texts)])
    width = min(width, min(rows.shape) - 1)
    return TruncatedSVD(n_components=width, random_state=0).fit_transform(rows).astype(np.float32)


TEXT_ONLY_VIEWS = {
    "bag of words": bag_of_words,
    "TF-IDF word and character n-grams": tfidf_components,
    "hashed random word embedding": hashed_word_embedding,
    "hashed character n-grams": hashed_char_ngrams,
}
"""The negative controls' text-only views, by name: (texts) -> (n, F) features with nothing beyond the words."""


def texts_of(prompts: pd.DataFrame) -> list[str]:
    """The prompt texts of a prompt table, in its order."""
    return prompts["text"].astype(str).tolist()
