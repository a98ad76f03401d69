"""``plab report``: a self-contained HTML report (figures embedded as PNG data URIs) of a campaign or a run.

* :func:`campaign_report`: leaderboard, slot and parameter importance, coarse-vs-fine rank agreement,
  accuracy vs cost with Pareto fronts, learning curves and growth curves;
* :func:`run_report`: one run's curves, growth events and a drawing of its final network.

Modules: :mod:`.data` (queries), :mod:`.importance` (Optuna parameter importance), :mod:`.plots` and
:mod:`.runplots` (matplotlib figures), :mod:`.page` (HTML), :mod:`.build` (putting them together).
"""

from __future__ import annotations

from principlelab.report.build import ReportResult, campaign_report, run_report

__all__ = ["ReportResult", "campaign_report", "run_report"]
