"""The input checks that the measurement core and the study share.

``measure`` and a parameter file refuse the same things in the same words: a ``max_length`` without
room for text is a ``ParameterError`` in both, and a text that shows nothing (``is_blank``) is empty
whether it is passed to ``measure`` or read from a prompt file.
"""

from __future__ import annotations

import re


class ParameterError(ValueError):
    """A parameter file that cannot be used as it is."""


INVISIBLE = re.compile(
    r"[\s\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    r"\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]+"
)
"""Whitespace and characters that show nothing (zero-width spaces and joiners, direction marks, BOM, ...)."""


def is_blank(text: str) -> bool:
    """Whether ``text`` is empty or shows nothing: only whitespace or invisible characters (``INVISIBLE``)."""
    return not INVISIBLE.sub("", text)
