"""Every path the compendium uses, anchored at the repository root (never relative to the working folder)."""

from __future__ import annotations

from pathlib import Path

ROOT: Path = Path(__file__).resolve().parents[2]
DATA: Path = ROOT / "data"
PROMPTS: Path = DATA / "prompts"
REFERENCE: Path = DATA / "reference"
NOTEBOOKS: Path = ROOT / "notebooks"
PARAMS: Path = ROOT / "params"
FIGURES: Path = ROOT / "figures"
PAPER: Path = ROOT / "paper"
TABLES: Path = PAPER / "tables"
RESULTS: Path = ROOT / "results"
REPORTS: Path = ROOT / "reports"
BUILD: Path = ROOT / "build"
CACHE: Path = ROOT / ".cache"
