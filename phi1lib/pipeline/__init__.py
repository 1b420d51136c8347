"""The pipeline: the only place that knows every stage. `phi1 run`, the preset plans of the budget, the ablation, the report.

`stages` (the table of stages), `run` (RunConfig, Pipeline, run_pipeline), `plan` (a preset's
budget as the sum of the stages' own plan lines; scenario files that build on a preset; the
calculator's plans), `ablation` (paper Figure 2.1 at the preset's scale), `report` (report.json/md).
"""

from .ablation import AblationConfig, AblationResult
from .plan import estimate_preset, load_scenario, plans, preset_scenario
from .report import reconcile, reconcile_markdown, report_markdown, write_report
from .run import Pipeline, RunConfig, run_pipeline
from .stages import NAMES, STAGES, Stage, default_stages, stage_configs

__all__ = ["AblationConfig", "AblationResult", "estimate_preset", "load_scenario", "plans", "preset_scenario",
           "report_markdown", "write_report", "reconcile", "reconcile_markdown", "Pipeline", "RunConfig", "run_pipeline", "NAMES", "STAGES", "Stage",
           "default_stages", "stage_configs"]
