"""The style sheet every page of the compendium shares: the reports, the front page and the explorer's pages."""

from __future__ import annotations

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0; }
nav.compendium { font-size: 0.9em; padding: 0.5em 1em; margin: 0 0 1em 0; background: #f3f5f8;
  border-bottom: 1px solid #d0d7de; display: flex; flex-wrap: wrap; gap: 0.3em 1.2em; }
nav.compendium a { text-decoration: none; }
nav.compendium .where { color: #444; }
.compendium-page { max-width: 72em; margin: 1em auto; padding: 0 1em; line-height: 1.45; }
.compendium-page h1 { font-size: 1.5em; margin: 0.3em 0; }
.compendium-page h2 { margin: 0.9em 0 0.4em 0; }
.compendium-page table { border-collapse: collapse; margin: 0.5em 0 1em 0; font-size: 0.92em; }
.compendium-page th, .compendium-page td { border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: left;
  vertical-align: top; }
.compendium-page th { background: #f3f5f8; }
.compendium-page code { background: #f3f5f8; padding: 0 0.2em; }
table { max-width: 100%; }
.table-box { max-width: 100%; overflow-x: auto; }
.table-box > table { max-width: none; }
th, td { overflow-wrap: break-word; white-space: normal !important; }
td.breakable { overflow-wrap: anywhere; }
td.number, .jp-RenderedHTMLCommon table td.number { text-align: right !important; white-space: nowrap !important;
  font-variant-numeric: tabular-nums; }
th.number, .jp-RenderedHTMLCommon table th.number { text-align: right !important; }
td.verdict-cell { white-space: nowrap !important; }
img { max-width: 100%; height: auto; }
.jp-RenderedHTMLCommon table { table-layout: auto; }
.jp-RenderedHTMLCommon table td, .jp-RenderedHTMLCommon table th { text-align: left !important; vertical-align: top; }
p.table-source { font-size: 0.85em; color: #555; margin: -0.6em 0 1em 0; }
.verdict-holds { background: #dff3e4; } .verdict-weakened { background: #fff4d6; }
.verdict-does-not-hold { background: #fbe0e0; } .verdict-not-testable-here { background: #eeeeee; }
.verdict-inconclusive { background: #fff4d6; }
p.abstract { margin: 0.4em 0 0.6em 0; }
@media (max-width: 900px) { .compendium-page h1 { font-size: 1.25em; }
  p.abstract, ul.findings li { font-size: 0.93em; } }
ul.findings, .jp-RenderedHTMLCommon ul.findings { list-style: none; padding: 0; margin: 0.4em 0 0.6em 0; }
ul.findings li { margin: 0 0 0.35em 0; padding: 0.3em 0.6em; border-left: 0.35em solid #d0d7de; line-height: 1.35; }
ul.findings .verdict { font-weight: 700; text-transform: uppercase; font-size: 0.85em; letter-spacing: 0.02em; }
ul.findings .numbers { font-size: 0.9em; color: #222; display: flex; flex-wrap: wrap; gap: 0 1.5em; }
.figures { display: grid; grid-template-columns: 1fr; gap: 1.2em; }
.figures figure { margin: 0; } .figures img { border: 1px solid #d0d7de; display: block; margin: 0 auto; }
figcaption { font-size: 0.9em; color: #444; }
details { margin: 0.5em 0 1em 0; } summary { cursor: pointer; font-weight: 600; }
"""
"""CSS of every page: long text wraps between words (cells with a hash or a path anywhere); numbers and verdicts
never break; figures one per row, at most their natural width."""
