"""Reports: the run report (report.html, summary.json, figures), the side-by-side comparison
and the sweep report. Only the lenses and the CLI use it."""

from simnet.facade import lazy

__all__, __getattr__, __dir__ = lazy(__name__, {
    "render": ("summary_json", "write_report"),
    "compare": ("write_comparison",),
    "sweep": ("write_sweep_report",),
})
