"""Markdown tables, shared by the summary, the report and the report's sections of each kind of result."""

from __future__ import annotations

import re

# A number this large in a table of ratios is not a measurement of what its column names: its denominator (a
# curvature |λ| or a gradient norm) is at round-off. Tables that may hold one flag it, and say so under them.
LARGE = 1e6
FLAG = "‡"
LARGE_NOTE = (f"{FLAG} Above 10⁶: a ratio whose denominator is at round-off (a curvature |λ| that Lanczos finds at "
              "about zero, or a gradient that vanishes at A*), so the number says that, not how far the point is from "
              "being stationary or how well an identity holds; `stationary_points_trials.csv` has the numerator and "
              "the denominator apart.")
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?[eE]\+?(\d+)(?![\w.])")


def flag_large(text: str) -> str:
    """``text`` with FLAG after every number in scientific notation of magnitude LARGE or more."""
    return _NUMBER.sub(lambda m: f"{m.group(0)} {FLAG}" if int(m.group(1)) >= 6 else m.group(0), text)


def markdown_table(headers: list[str], rows: list[list], flag_large_numbers: bool = False) -> str:
    """A table; with ``flag_large_numbers`` every number of 10⁶ or more is flagged and LARGE_NOTE follows."""
    def cell(value: object) -> str:
        text = str(value).replace("|", "\\|").replace("\n", " ")
        return flag_large(text) if flag_large_numbers and FLAG not in text else text

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    if flag_large_numbers and any(FLAG in line for line in lines[2:]):
        lines += ["", LARGE_NOTE]
    return "\n".join(lines)
