"""What the report cites: the paper, and the sections of the project's account of the science.

A report is read away from the code, often as a file copied out of a results folder. It therefore names
``docs/science.md`` by its path in the pipeline's repository and its sections by their anchors, and the
paper by its authors, title, venue and arXiv number, never by a path on the machine that wrote it.
"""

from __future__ import annotations

import re

SCIENCE = "docs/science.md"

PAPER = ("Oskar Nordenfors, Fredrik Ohlsson, Axel Flinth. *Optimization Dynamics of Equivariant and Augmented "
         "Neural Networks.* Transactions on Machine Learning Research (TMLR), 2025. arXiv:2303.13458, "
         "https://arxiv.org/abs/2303.13458")
PAPER_SHORT = "Nordenfors, Ohlsson and Flinth, TMLR 2025, arXiv:2303.13458"

# Section number -> heading of docs/science.md (tests/analysis/test_analysis.py checks them against the file).
SECTIONS = {
    "1": "1. The question",
    "2": "2. Training modes",
    "3": "3. Experiment G",
    "4": "4. Experiment C",
    "5": "5. Experiment S — stationary points and their stability",
    "6": "6. Numerical hygiene",
    "7": "7. How claims are judged",
}


def anchor(heading: str) -> str:
    """The anchor GitHub and most Markdown renderers give a heading: lower case, punctuation dropped,
    spaces turned into hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def section_ref(section: str) -> str:
    """``docs/science.md#3-experiment-g`` for section "3"; the bare path for an unknown section."""
    heading = SECTIONS.get(str(section))
    return f"{SCIENCE}#{anchor(heading)}" if heading else SCIENCE


def cite(section: str, detail: str = "") -> str:
    """'§1, claim 2 (`docs/science.md#1-the-question`)'."""
    where = f"§{section}" + (f", {detail}" if detail else "")
    return f"{where} (`{section_ref(section)}`)" if section else (detail or "–")
