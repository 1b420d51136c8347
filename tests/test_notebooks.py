"""Every notebook executes headless on the `tiny` preset, in order, sharing one run directory.

The run directory is filled first by `phi1 run --preset tiny` (tests the orchestrator end to
end); the notebooks then re-read the stored stage results and render their tables and plots.
"""

from __future__ import annotations

import json

import pytest

from phi1lib.paths import REPO_ROOT

SENTINEL_KEY = "sk-phi1-test-sentinel-0123456789abcdef"
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.slow
def test_pipeline_writes_report(tiny_run):
    out, report = tiny_run
    data = json.loads((out / "report.json").read_text())
    assert data["preset"] == "tiny"
    assert set(data["stages"]) >= {"filtering", "synthesis", "pretrain", "finetune", "evaluation"}
    assert (out / "report.md").read_text().startswith("# phi1 run report")
    models = {row["model"] for row in data["ablation"]}
    assert models == {"unfiltered", "filtered", "filtered+textbooks", "filtered+textbooks+exercises"}
    for row in data["ablation"]:
        assert row["humaneval_solution_loss_mean"] > 0


@pytest.mark.slow
def test_budget_run_reconciles_every_stage_of_the_tiny_run(tiny_run, capsys):
    """`phi1 budget --run DIR`: each finished stage's stored estimate next to what it measured."""
    from phi1lib.cli import main
    from phi1lib.runs import load_result

    out, report = tiny_run
    assert main(["budget", "--run", str(out), "--json"]) == 0
    rows = {r["stage"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(report["stages"])
    for name, row in rows.items():
        stored = load_result(out / name)
        assert row["estimate_wall_hours"] == stored["estimate"]["wall_hours"]
        assert row["measured_wall_hours"] == pytest.approx(stored["usage"]["wall_s"] / 3600)
        assert row["measured_tokens"] == stored["usage"]["tokens_in"] + stored["usage"]["tokens_out"]
        assert [line["item"] for line in row["lines"]] == [line["item"] for line in stored["estimate"]["lines"]]
        if name != "synthesis":  # priced from what runs: the tokens are known before the stage spends them
            assert row["estimate_tokens"] == pytest.approx(row["measured_tokens"]), name
    assert main(["budget", "--run", str(out)]) == 0
    assert "| pretrain |" in capsys.readouterr().out


@pytest.mark.slow
def test_pipeline_resume_redoes_nothing(tiny_run):
    from phi1lib.pipeline import run_pipeline

    out, _ = tiny_run
    again = run_pipeline("tiny", out=out)
    assert {s["status"] for s in again["stages"].values()} == {"stored"}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tiny_run, monkeypatch):
    import nbclient
    import nbformat

    out, _ = tiny_run
    monkeypatch.setenv("PHI1_RUN_DIR", str(out))
    # A key in the environment must neither be used by `tiny` (offline) nor appear in any output.
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL_KEY)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert SENTINEL_KEY not in json.dumps(nb)
