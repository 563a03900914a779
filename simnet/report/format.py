"""What the HTML reports share: the jinja2 environment of their templates and how their tables
write a latency or a success rate, so that run, comparison and sweep reports read alike.
"""

from __future__ import annotations

import jinja2

from simnet.report.figures import fmt_ms

ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("simnet.report", "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    keep_trailing_newline=True,
)


def ms(v: float | None) -> str:
    """A latency for a table cell (``—`` when there is none)."""
    return "—" if v is None else fmt_ms(v)


def rate(ok: int, total: int) -> str:
    """Success rate that never shows 100 % when something failed."""
    if total == 0:
        return "—"
    pct = 100 * ok / total
    if ok == total:
        return "100 %"
    text = f"{pct:.2f} %"
    return "> 99.99 %" if text == "100.00 %" else text
