"""The reproduction check: every committed output is checked for what it is, every time, and kept only where this
run reproduces it; the numbers a reader sees then come from the committed files.

Another machine (another CPU, thread count or batch composition) rounds float32 sums differently, so a rerun never
reproduces every digit. Each committed table (CSV, Markdown, LaTeX in paper/tables/), figure (figures/) and the
README's scorecard is therefore checked against what this run computed:

* a table's CSV number by number, under the tolerance of each number's kind (``TOLERANCES``, with the reasons);
  each cell within tolerance keeps its committed value, each cell beyond it takes the new one, and the Markdown
  and LaTeX files are generated again from that kept table: a file whose bytes differ from what its table gives
  is rewritten. The kept table is what the notebook goes on to show, draw and quote (``Check.table``), so a kept
  table and the text around it never disagree;
* a figure is kept only when its bytes are the ones a run recorded having made, with the drawing code and the
  data (its tables' kept CSVs) it has now, and it is drawn again all the same: kept only if it is the same
  picture (``same_picture``, the PNG) and the same drawing (``same_drawing``, the SVG), so a figure edited
  together with its record is caught;
* the README's scorecard section must be what the kept scorecard gives.

What a run made is recorded next to the outputs, in ``paper/records/[<run>/]<notebook>.json`` (committed): each
output's file hashes, and a figure's drawing code and data. A file whose bytes are not the recorded ones was edited
after the run wrote it: it is reported by name and rewritten from this run's numbers, never kept. ``verify``
checks the files on disk against those records, and each record against the copy kept in this machine's log;
the workflow runs it at every start (an edited output forces its notebook to run again, even when nothing else
changed) and ``summary`` at the end of ``make reproduce``, so a summary always describes the files as they are,
never only the last check. Each notebook's comparisons are in
``build/<run>/reproduction/<notebook>.json``; ``summary`` reads them: "reproduced within tolerance: N of M numbers;
changed: ...".

``python -m helpers.study.reproduction summary --params FILE`` prints that summary (exit 1 when a file fails
``verify``); ``... verify --params FILE`` only checks the files.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.base import paths, store
from helpers.study.comparison import FIGURE_DATA, Comparison, Difference, compare_text, keep, kept_table
from helpers.study.tolerances import Context

# --- what a run wrote: the committed record, and checking files against it ------------------------


def _relative(path: Path) -> str:
    path = Path(path).resolve()
    return path.relative_to(paths.ROOT).as_posix() if path.is_relative_to(paths.ROOT) else path.as_posix()


def _absolute(shown: str) -> Path:
    return Path(shown) if Path(shown).is_absolute() else paths.ROOT / shown


def section_of(text: str, start: str, end: str) -> str | None:
    """What stands between the markers ``start`` and ``end`` in ``text``; None if either is missing."""
    if start not in text or end not in text.split(start, 1)[1]:
        return None
    return text.split(start, 1)[1].split(end, 1)[0]


def file_hash(path: Path, section: tuple[str, str] | list[str] | None = None) -> str | None:
    """The sha256 of a file (of its ``section`` between two markers when given); None if it (or it) is missing."""
    path = Path(path)
    if not path.is_file():
        return None
    if section is None:
        return store.file_sha256(path)
    found = section_of(path.read_text(encoding="utf-8", errors="replace"), *section)
    return None if found is None else hashlib.sha256(found.encode()).hexdigest()


PICTURE_BLOCK = 4
"""PNGs are compared as the means of blocks of this many pixels square."""
PICTURE_TOLERANCE = 0.08
"""Two PNGs are the same picture when they have the same size and no block mean of a channel
(0-1) differs by more than this: data that moved within tolerance shifts a line or a dot by a small fraction of a
pixel on another machine (a block moves by a few hundredths at most); another picture (a swapped figure, a line
added or moved, a bar 1% taller) moves some block by far more. Not seen in the PNG: an edit within one pixel or in
the last rows and columns beyond whole blocks, or a colour shifted by less than this (the SVG beside it is compared
by ``same_drawing``)."""


def same_picture(drawn: Path, committed: Path) -> bool:
    """Whether the PNG ``committed`` shows what ``drawn`` shows: the same chunks (``_png_chunks``), pixels within
    ``PICTURE_TOLERANCE``."""
    import matplotlib.image
    import numpy as np

    if not Path(committed).is_file():
        return False
    if store.file_sha256(drawn) == store.file_sha256(committed):
        return True
    if _png_chunks(Path(drawn).read_bytes()) != _png_chunks(Path(committed).read_bytes()):
        return False
    try:
        new, old = matplotlib.image.imread(drawn), matplotlib.image.imread(committed)
    except (OSError, ValueError, SyntaxError):
        return False
    if new.shape != old.shape:
        return False
    k = PICTURE_BLOCK
    rows, columns = (new.shape[0] // k) * k, (new.shape[1] // k) * k
    difference = np.asarray(new, dtype=float)[:rows, :columns] - np.asarray(old, dtype=float)[:rows, :columns]
    blocks = difference.reshape(rows // k, k, columns // k, k, -1).mean(axis=(1, 3))
    return float(np.abs(blocks).max(initial=0.0)) <= PICTURE_TOLERANCE


DRAWING_TOLERANCE = 0.5
"""Two SVGs draw the same when every coordinate (path data, positions, sizes, translations; in points, 1/72 inch)
differs by at most this, about one pixel of the PNG beside it (150 dpi): what the PNG comparison allows too. A
rerun elsewhere draws the same coordinates except where a per-prompt value sits on a rounding edge of its 4
significant digits (a dot moves by a fraction of a point); a bar 1% taller or a moved label moves by more."""
COLOUR_TOLERANCE = 4
"""Colours (0-255 a channel) may differ by this much: one or two steps of a 256-colour map, a value on a rounding
edge; another colour differs by far more."""
_COORDINATE_ATTRIBUTES = frozenset({"d", "x", "y", "x1", "y1", "x2", "y2", "width", "height", "viewBox", "points"})
_SVG_IMAGE = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=\s]*)")
_SVG_ID = re.compile(r"(?<![\w-])[A-Za-z][A-Za-z0-9_]*?[0-9a-f]{10}(?![\w-])")  # matplotlib's content-derived ids
_SVG_COLOUR = re.compile(r"#([0-9a-fA-F]{6})\b")
_SVG_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_SVG_ATTRIBUTE = re.compile(r'(?<![\w:.-])([\w:.-]+)="([^"]*)"')
_SVG_MARKER_RUN = re.compile(r"(?:[ \t]*<use [^<>]*/>\n)+")  # a line's markers, one <use/> a line
_SVG_MARKER_XY = re.compile(r'\s(x|y)="([^"]*)"')
_SVG_OPACITY = re.compile(r'opacity(?::\s*|=")([^;"]*)')


def _markers(run: str) -> list[tuple[str, float, float]] | None:
    """A run's markers as (everything but the position, x, y); None unless each has one plain x and y and is drawn
    opaque or not at all (a see-through marker drawn twice at one place is darker)."""
    markers = []
    for line in run.splitlines():
        position = _SVG_MARKER_XY.findall(line)
        if sorted(name for name, _ in position) != ["x", "y"] or not all(_SVG_NUMBER.fullmatch(v) for _, v in position):
            return None
        if any(_SVG_NUMBER.fullmatch(v) is None or float(v) not in (0.0, 1.0) for v in _SVG_OPACITY.findall(line)):
            return None
        x, y = (float(dict(position)[name]) for name in ("x", "y"))
        markers.append((_SVG_MARKER_XY.sub("", line), x, y))
    return markers


def _covers(markers: list[tuple[str, float, float]], others: list[tuple[str, float, float]]) -> bool:
    """Whether every marker of ``markers`` is drawn in ``others`` too (the same, within ``DRAWING_TOLERANCE``)."""
    return all(
        any(r == r_ and max(abs(x - x_), abs(y - y_)) <= DRAWING_TOLERANCE for r_, x_, y_ in others)
        for r, x, y in markers
    )


def _coincident_markers_matched(drawn: str, committed: str) -> str:
    """``committed`` with each run of a line's markers (``<use/>``) that has another count than ``drawn``'s but
    draws the same marks (all alike and opaque, each of either within ``DRAWING_TOLERANCE`` of one of the other's)
    replaced by ``drawn``'s: a box plot's outliers at a whisker's end, where rounding makes one value more or less
    an outlier, are two dots at one place or one, and draw the same pixels."""
    runs = list(_SVG_MARKER_RUN.finditer(drawn))
    runs_ = list(_SVG_MARKER_RUN.finditer(committed))
    if len(runs) != len(runs_):
        return committed
    pieces, position = [], 0
    for run, run_ in zip(runs, runs_, strict=True):
        markers, markers_ = _markers(run.group(0)), _markers(run_.group(0))
        if markers is None or markers_ is None or len(markers) == len(markers_):
            continue
        alike = len({rest for rest, _, _ in markers + markers_}) == 1  # else the order says which is seen on top
        if alike and _covers(markers, markers_) and _covers(markers_, markers):
            pieces += [committed[position : run_.start()], run.group(0)]
            position = run_.end()
    return "".join(pieces) + committed[position:]


def _drawing(text: str) -> tuple[str, list[float], list[tuple[int, ...]], list[bytes]]:
    """An SVG as its structure (everything but the coordinates, colours, content-derived ids and embedded images,
    verbatim), its coordinates, colours and embedded PNGs, in order."""
    import base64

    images = [base64.b64decode(re.sub(r"\s", "", found)) for found in _SVG_IMAGE.findall(text)]
    text = _SVG_IMAGE.sub("@image", text)
    ids: dict[str, str] = {}
    text = _SVG_ID.sub(lambda found: ids.setdefault(found.group(0), "@id" + "x" * (len(ids) + 1)), text)  # no digits
    colours = [tuple(int(hex_[i : i + 2], 16) for i in (0, 2, 4)) for hex_ in _SVG_COLOUR.findall(text)]
    text = _SVG_COLOUR.sub("@colour", text)
    coordinates: list[float] = []

    def coordinates_of(value: str) -> str:
        coordinates.extend(float(found) for found in _SVG_NUMBER.findall(value))
        return _SVG_NUMBER.sub("@n", value)

    def attribute(found: re.Match[str]) -> str:
        name, value = found.group(1), found.group(2)
        if name == "transform":  # translate(x y) moves; scale and rotate shape, compared as written
            value = re.sub(r"translate\(([^)]*)\)", lambda t: f"translate({coordinates_of(t.group(1))})", value)
        elif name in _COORDINATE_ATTRIBUTES:
            value = coordinates_of(value)
        return f'{name}="{value}"'

    text = _SVG_ATTRIBUTE.sub(attribute, text)
    return text, coordinates, colours, images


def _png_chunks(data: bytes) -> list[bytes] | None:
    """The chunk types of a PNG in order, runs of one type counted once (IDAT); None if it is not a PNG. Chunks
    that change how a viewer shows the same pixels (gAMA, iCCP, acTL) make another picture."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    chunks: list[bytes] = []
    position = 8
    while position + 8 <= len(data):
        length, kind = int.from_bytes(data[position : position + 4], "big"), data[position + 4 : position + 8]
        if not chunks or chunks[-1] != kind:
            chunks.append(kind)
        position += 12 + length
    return chunks if position == len(data) else None


def _same_pixels(drawn: bytes, committed: bytes) -> bool:
    """Whether two small PNGs (an SVG's embedded images: colour bars) have the same chunks and size and no pixel
    channel (0-1) apart by more than ``PICTURE_TOLERANCE``."""
    import io

    import matplotlib.image
    import numpy as np

    if _png_chunks(drawn) != _png_chunks(committed):
        return False
    try:
        new, old = (matplotlib.image.imread(io.BytesIO(png), format="png") for png in (drawn, committed))
    except (OSError, ValueError, SyntaxError):
        return False
    return bool(new.shape == old.shape and np.abs(np.asarray(new, float) - old).max(initial=0.0) <= PICTURE_TOLERANCE)


def same_drawing(drawn: Path, committed: Path) -> bool:
    """Whether the SVG ``committed`` draws what ``drawn`` draws: the same elements, text, references and attributes,
    every coordinate within ``DRAWING_TOLERANCE`` points, colours within ``COLOUR_TOLERANCE``, embedded images
    within ``PICTURE_TOLERANCE``; a well-formed XML file. matplotlib's ids derived from content are compared by
    order of appearance; a line's opaque markers drawn once or twice at one place are the same
    (``_coincident_markers_matched``)."""
    if not Path(committed).is_file():
        return False
    if store.file_sha256(drawn) == store.file_sha256(committed):
        return True
    import xml.etree.ElementTree as ElementTree

    try:
        drawn_text, committed_text = (Path(path).read_text(encoding="utf-8") for path in (drawn, committed))
        for text in (drawn_text, committed_text):
            ElementTree.fromstring(text)  # what a browser can show at all
        committed_text = _coincident_markers_matched(drawn_text, committed_text)
        new, old = _drawing(drawn_text), _drawing(committed_text)
    except (OSError, UnicodeDecodeError, ValueError, ElementTree.ParseError):
        return False
    (structure, coordinates, colours, images), (structure_, coordinates_, colours_, images_) = new, old
    if structure != structure_ or len(coordinates) != len(coordinates_) or len(colours) != len(colours_):
        return False
    if len(images) != len(images_) or not all(_same_pixels(a, b) for a, b in zip(images, images_, strict=True)):
        return False
    channels = zip(itertools.chain(*colours), itertools.chain(*colours_), strict=True)
    if any(abs(a - b) > COLOUR_TOLERANCE for a, b in channels):
        return False
    return all(abs(a - b) <= DRAWING_TOLERANCE for a, b in zip(coordinates, coordinates_, strict=True))


def read_outputs_record(path: Path | None) -> dict[str, Any]:
    """The committed record of what a notebook's last run wrote (empty if none or unreadable)."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


@dataclass(frozen=True)
class Unverified:
    """A committed file whose bytes are not those its run recorded: it was edited after the run wrote it."""

    output: str
    file: str
    record: str

    def line(self) -> str:
        if self.output in ("no output", "record"):
            return f"{self.file}: {self.record}"
        return f"{self.file} ({self.output}): its bytes are not those its run wrote ({self.record})"


def verify(record: Path, log: Path | None = None) -> list[Unverified]:
    """Every file a notebook's committed record lists whose bytes on disk differ from the recorded hash (a missing
    file is Snakemake's to remake, not listed). Never trusts the last check: it hashes the files now.

    With ``log`` (this machine's log of the notebook's last run, ``Check.save``) the committed record is checked
    too: one that is not the record this machine's last run wrote (edited together with its files, pulled from
    elsewhere, or never made here) is listed, so the notebook checks its outputs again instead of trusting it."""
    found = []
    if Path(record).is_file() and not read_outputs_record(record):
        return [Unverified("record", _relative(record), "unreadable: its notebook writes it again")]
    if log is not None and Path(record).is_file():
        made_here = read_outputs_record(log).get("committed")
        if made_here != read_outputs_record(record):
            why = "no run on this machine made it" if made_here is None else "not the one this machine's last run wrote"
            found.append(Unverified("record", _relative(record), f"{why}: its notebook checks its outputs again"))
    entries = read_outputs_record(record).get("outputs", {})
    for output, entry in sorted(entries.items()):
        for shown, digest in sorted(entry.get("files", {}).items()):
            now = file_hash(_absolute(shown), entry.get("section"))
            if now is not None and now != digest:
                found.append(Unverified(output, shown, _relative(record)))
    return found


# --- a notebook's check -------------------------------------------------------------------------------


@dataclass
class Check:
    """The checks of one notebook run: its comparisons (saved to ``record``, the build folder's log, after each)
    and what it wrote (saved to ``committed``, the record committed with the outputs, which the next run checks
    the files against)."""

    record: Path
    context: Context = field(default_factory=Context)
    committed: Path | None = None
    tables_folder: Path | None = None
    made_by: str = ""
    made_for: dict[str, Any] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    substitutions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.previous: dict[str, Any] = read_outputs_record(self.committed).get("outputs", {})
        self.entries: dict[str, Any] = dict(self.previous)
        self._pending: dict[str, dict[str, Any]] = {}

    @classmethod
    def start(cls, outputs: Any, notebook: str, context: Context | None = None) -> Check:
        """The check of ``notebook`` in the run of ``outputs`` (``study.outputs.RunOutputs``)."""
        from helpers.study import made_for

        return cls(
            outputs.reproduction(notebook),
            context or Context(),
            outputs.record(notebook),
            outputs.tables,
            f"notebooks/{notebook}.ipynb",
            made_for(outputs.params),
        )

    # -- what the last run wrote -----------------------------------------------------------------------

    def edited(self, output: str, files: Iterable[Path], section: tuple[str, str] | None = None) -> list[Path]:
        """The files of ``output`` whose bytes are not those the last run recorded (none when it recorded none)."""
        recorded = self.previous.get(output, {}).get("files", {})
        edited = []
        for path in files:
            digest = recorded.get(_relative(path))
            now = file_hash(path, section)
            if digest is not None and now is not None and now != digest:
                edited.append(Path(path))
        return edited

    # -- tables --------------------------------------------------------------------------------------------

    def table(
        self,
        name: str,
        table: pd.DataFrame,
        files: Mapping[str, Path],
        render: Callable[[pd.DataFrame], dict[str, str]],
    ) -> pd.DataFrame:
        """Check one table against its committed files (``files``: suffix -> path, the CSV under "csv"), write what
        differs from the kept table (``render`` gives each file's text), record it; return the kept table."""
        edited = self.edited(name, files.values())
        comparison, kept, substitutions = kept_table(name, table, files["csv"], self.context)
        if files["csv"] in edited:  # its numbers cannot be trusted: this run's numbers replace them all
            kept, substitutions = table, {}
        texts = render(kept)
        rewritten = []
        for suffix, path in files.items():
            if not (Path(path).is_file() and Path(path).read_bytes() == texts[suffix].encode("utf-8")):
                store.write_text(texts[suffix], path)
                rewritten.append(Path(path))
        if edited:
            names = ", ".join(Path(p).name for p in edited)
            comparison.note = f"edited after the run that wrote it: {names}" + (
                f"; {comparison.note}" if comparison.note else ""
            )
        elif rewritten and comparison.reproduced:
            comparison.note = "rewritten, not what its checked CSV gives (edited by hand?): " + ", ".join(
                p.name for p in rewritten
            )
        self.substitutions.update(substitutions)
        self.add(comparison, files.values(), written=bool(rewritten))
        return kept

    def kept_text(self, text: str) -> str:
        """``text`` made from this run's tables with every text cell that a kept table keeps in its committed
        wording put back (the scorecard's evidence in the conclusions), so that it says what the tables say."""
        for computed in sorted(self.substitutions, key=len, reverse=True):
            text = text.replace(computed, self.substitutions[computed])
        return text

    # -- figures ---------------------------------------------------------------------------------------------

    def _data(self, name: str) -> dict[str, str | None]:
        folder = self.tables_folder
        return {t: (file_hash(folder / f"{t}.csv") if folder else None) for t in FIGURE_DATA.get(name, ())}

    def figure(self, name: str, files: list[Path], drawing_code: str) -> Comparison:
        """Whether a committed figure stands: its bytes are those its run recorded, drawn by ``drawing_code`` from
        the data (its tables' kept CSVs) it has now. Draw it again when not, then ``add`` the comparison."""
        output = f"figure {name}"
        comparison = Comparison(output=output)
        entry = self.previous.get(output, {})
        data = self._data(name)
        if not all(Path(p).is_file() for p in files):
            comparison.note = "new (no committed figure)"
        elif not entry:
            comparison.note = "no record of the run that drew it: drawn again"
        elif self.edited(output, files) or set(entry.get("files", {})) != {_relative(p) for p in files}:
            comparison.note = "edited after the run that wrote it: drawn again"
        elif entry.get("drawing_code") != drawing_code:
            comparison.note = "drawn by other code: drawn again"
        elif not data:
            comparison.note = "no table holds its data: drawn again"
        elif entry.get("data") != data:
            changed = [t for t in data if entry.get("data", {}).get(t) != data[t]]
            comparison.note = "its data changed: " + ", ".join(changed)
        comparison.action = "kept" if comparison.reproduced else "written"
        self._pending[output] = {
            "drawing_code": drawing_code,
            "data": data,
            "before": {p: file_hash(p) for p in files},
        }
        return comparison

    # -- text sections ------------------------------------------------------------------------------------

    def section(self, name: str, path: Path, markers: tuple[str, str], section: str) -> Comparison:
        """Whether the section between ``markers`` in ``path`` is what this run makes (``section``); write it
        when not, then ``add`` the comparison with the same markers."""
        text = Path(path).read_text(encoding="utf-8") if Path(path).is_file() else ""
        committed = section_of(text, *markers)
        comparison = compare_text(name, committed, section)
        comparison.action = "kept" if comparison.reproduced else "written"
        self._pending[name] = {"section": list(markers)}
        return comparison

    # -- recording -----------------------------------------------------------------------------------------

    def add(self, comparison: Comparison, files: Iterable[Path] = (), written: bool | None = None) -> Comparison:
        """Record ``comparison`` and the bytes its ``files`` now have; a file left as committed gets a new time."""
        files = [Path(p) for p in files]
        pending = self._pending.pop(comparison.output, {})
        before = pending.pop("before", None)
        if before is not None and all(file_hash(p) == before[p] for p in files) and before and all(before.values()):
            comparison.note, comparison.action = "", "kept"  # drawn again, byte for byte the committed figure
        if written is not None:
            comparison.action = "written" if written else comparison.action
        if comparison.action == "kept" and files:
            keep([p for p in files if p.is_file()])
        self.comparisons = [c for c in self.comparisons if c.output != comparison.output] + [comparison]
        if files:
            section = pending.get("section")
            hashes = {_relative(p): file_hash(p, section) for p in files}
            self.entries[comparison.output] = {
                "files": {shown: digest for shown, digest in hashes.items() if digest is not None},
                **pending,
            }
        self.save()
        return comparison

    def save(self) -> Path:
        """Write the log (comparisons, and a copy of the committed record: what ``verify`` checks that record
        against) and the committed record."""
        payload: dict[str, Any] = {
            "context": asdict(self.context),
            "comparisons": [asdict(c) for c in self.comparisons],
        }
        record: dict[str, Any] | None = None
        if self.committed is not None:
            entries = {output: entry for output, entry in self.entries.items() if entry.get("files")}
            record = {"made_by": self.made_by, "made_for": self.made_for, "outputs": entries}
            payload["committed"] = json.loads(json.dumps(record))  # as read back: tuples become lists
        written = store.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", self.record)
        if self.committed is not None and record is not None:
            text = json.dumps(record, indent=1, sort_keys=True) + "\n"
            if read_outputs_record(self.committed) != record or not self.committed.is_file():
                store.write_text(text, self.committed)
            else:
                keep([self.committed])
        return written

    def table_comparison(self, name: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.output == name), None)


# --- a notebook's log, and the run's summary ---------------------------------------------------


def read_record(path: Path) -> list[Comparison]:
    """The comparisons one notebook recorded (empty when it has not run)."""
    if not path.is_file():
        return []
    comparisons = []
    for raw in json.loads(path.read_text(encoding="utf-8")).get("comparisons", []):
        raw["differences"] = [Difference(**d) for d in raw.get("differences", [])]
        comparisons.append(Comparison(**raw))
    return comparisons


def read_records(folder: Path) -> list[Comparison]:
    """Every comparison recorded in ``folder`` (``build/<run>/reproduction/``), in file order."""
    return [comparison for path in sorted(folder.glob("*.json")) for comparison in read_record(path)]


@dataclass(frozen=True)
class Summary:
    """The run's reproduction summary: numbers within tolerance, every output that changed, and the new ones."""

    numbers: int
    reproduced: int
    changed: list[Comparison]
    new: list[Comparison]
    outputs: int
    conclusion_changed: bool
    unverified: list[Unverified] = field(default_factory=list)

    def lines(self, limit: int = 50) -> list[str]:
        """The summary as text lines: the headline, then each changed output and number, then every file that
        fails the record of the run that wrote it."""
        changed = "none" if not self.changed else ", ".join(c.output for c in self.changed)
        verdict = "a verdict or rank CHANGED" if self.conclusion_changed else "no verdict or rank changed"
        compared = self.outputs - len(self.new)
        kept = compared - len(self.changed)
        new = f"; {len(self.new)} outputs new (nothing committed to compare with)" if self.new else ""
        lines = [
            f"Reproduced within tolerance: {self.reproduced} of {self.numbers} numbers "
            f"({kept} of {compared} committed outputs kept as they are); changed: {changed}; {verdict}{new}."
        ]
        if self.unverified:
            lines[0] = "NOT VERIFIED: files were changed after the run that wrote them. " + lines[0]
        shown = 0
        for comparison in self.changed:
            what = comparison.note or f"{len(comparison.differences)} numbers beyond tolerance"
            lines.append(f"  {comparison.output}: {what}")
            for d in comparison.differences:
                if shown == limit:
                    lines.append("  ... (every number is in build/<run>/reproduction/*.json)")
                    break
                lines.append(f"    {d.where}, {d.column} ({d.kind}): {d.committed} -> {d.computed}")
                shown += 1
        for item in self.unverified:
            remedy = "" if item.output == "no output" else ": run make reproduce again to rewrite it"
            lines.append(f"  NOT VERIFIED {item.line()}{remedy}")
        return lines


def summarise(comparisons: list[Comparison], unverified: list[Unverified] | None = None) -> Summary:
    """Sum the comparisons of a run (figures count as outputs; their numbers are their tables'), with the files
    that fail their record now (``verify``)."""
    numbers = sum(c.numbers for c in comparisons)
    beyond = sum(len(c.differences) for c in comparisons)
    new = [c for c in comparisons if c.note.startswith("new")]
    return Summary(
        numbers=numbers,
        reproduced=numbers - beyond,
        changed=[c for c in comparisons if not c.reproduced and c not in new],
        new=new,
        outputs=len(comparisons),
        conclusion_changed=any(c.conclusion_changed for c in comparisons),
        unverified=list(unverified or []),
    )


CHECKED_NOTEBOOKS = ("04_plot", "05_export_tables", "06_robustness", "08_signatures")
"""The notebooks whose outputs are committed, checked and recorded (the Snakefile's ``CHECKED``)."""


def verify_run(outputs: Any, notebooks: Iterable[str] = ()) -> list[Unverified]:
    """Every committed file of a run (``study.outputs.RunOutputs``) that fails the record of the run that wrote it,
    and, once every notebook of ``notebooks`` has a record, every table or figure file in the run's folders that no
    record lists (no notebook of the study made it, yet the front page would show it as the study's)."""
    records = sorted(outputs.records.glob("*.json"))
    found = [item for path in records for item in verify(path, outputs.reproduction(path.stem))]
    if notebooks and all(outputs.record(notebook).is_file() for notebook in notebooks):
        listed = {shown for path in records for entry in read_outputs_record(path).get("outputs", {}).values()
                  for shown in entry.get("files", {})}  # fmt: skip
        for folder, suffixes in ((outputs.tables, (".csv", ".md", ".tex")), (outputs.figures, (".png", ".svg"))):
            for path in sorted(Path(folder).glob("*")):
                if path.is_file() and path.suffix in suffixes and _relative(path) not in listed:
                    found.append(
                        Unverified("no output", _relative(path), "no notebook of this study made it: delete it")
                    )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.study.reproduction", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for command, text in (("summary", "print the reproduction summary of a run"), ("verify", "check its files")):
        commands.add_parser(command, help=text).add_argument("--params", required=True)
    args = parser.parse_args(argv)
    from helpers.study import load_params
    from helpers.study.outputs import RunOutputs

    outputs = RunOutputs(load_params(args.params))
    unverified = verify_run(outputs, CHECKED_NOTEBOOKS)
    if args.command == "verify":
        for item in unverified:
            print(f"NOT VERIFIED {item.line()}")
        return 1 if unverified else 0
    comparisons = read_records(outputs.reproduction_records)
    if not comparisons and not unverified:
        print(f"No reproduction check recorded yet ({outputs.reproduction_records} is empty): run the study first.")
        return 0
    print("\n".join(summarise(comparisons, unverified).lines()))
    return 1 if unverified else 0


if __name__ == "__main__":
    sys.exit(main())
