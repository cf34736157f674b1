"""The base layer, what every other layer stands on: ``paths`` (where every file is), ``store``
(verified, atomic storage of tables, texts and vectors) and ``checks`` (the input checks that the
measurement core and the study share). Light: numpy, pandas and pyarrow, never torch."""
