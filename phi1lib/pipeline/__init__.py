"""`phi1 run`: every stage of a preset in one run folder, the ablation, and the run report."""

from .run import (ABLATION_VARIANTS, Pipeline, RunConfig, STAGES, StageRecord, report_markdown, run_pipeline, write_report)
