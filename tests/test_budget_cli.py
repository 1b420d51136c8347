"""`phi1 budget`: in-process and as a subprocess; text, --json, --set, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from phi1lib import cli


def _run(capsys, *argv):
    try:
        rc = cli.main(["budget", *argv])
    except SystemExit as exc:  # argparse rejects a bad choice before any work, with exit code 2
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_seed_scenario_prints_every_line_and_the_total(capsys):
    rc, out, _ = _run(capsys, "--scenario", "phi1-paper")
    assert rc == 0
    for item in ("textbooks input", "textbooks output", "exercises input", "exercises output", "annotate input",
                 "annotate output", "gpus", "cappuccino"):
        assert item in out
    assert "$6,478.10" in out and "TOTAL" in out
    assert "0.02" in out  # the note on the transcript's misread prices


def test_json_fields(capsys):
    rc, out, _ = _run(capsys, "--scenario", "phi1-paper", "--json")
    data = json.loads(out)
    assert rc == 0 and round(data["total_usd"], 2) == 6478.10
    assert data["cappuccinos"] == pytest.approx(6478.104 / 5.65)
    stages = {s["stage"]: s for s in data["stages"]}
    assert set(stages) == {"synthesis", "annotation", "training", "coffee"}
    for s in stages.values():
        for key in ("cost_usd", "gpu_hours", "tokens", "cappuccinos", "wall_hours", "lines"):
            assert key in s
        assert sum(l["cost_usd"] for l in s["lines"]) == pytest.approx(s["cost_usd"])
    assert stages["coffee"]["cappuccinos"] == pytest.approx(1.0)
    assert stages["training"]["gpu_hours"] == pytest.approx(103 * 8)
    assert stages["synthesis"]["tokens"] == pytest.approx(1.1e9 + 0.198e9)
    assert sum(s["cost_usd"] for s in data["stages"]) == pytest.approx(data["total_usd"])


def test_preset_with_overrides(capsys):
    _, base, _ = _run(capsys, "--preset", "phi1", "--json")
    _, h100, _ = _run(capsys, "--preset", "phi1", "--set", "gpu=H100", "--set", "rental=p5.48xlarge",
                      "--set", "as_of=2025-07-01", "--json")
    base, h100 = json.loads(base), json.loads(h100)
    pre = lambda d: next(s for s in d["stages"] if s["stage"] == "pretrain")  # noqa: E731
    assert pre(h100)["gpu_hours"] == pytest.approx(pre(base)["gpu_hours"] * 312 / 989)
    assert "p5.48xlarge-2025" in pre(h100)["lines"][0]["detail"]


@pytest.mark.parametrize("argv, needle", [
    (["--scenario", "nope"], "phi1-paper"),
    (["--preset", "phi2"], "invalid choice: 'phi2'"),
    (["--preset", "tiny", "--set", "colour=blue"], "ITEM.FIELD"),
    (["--preset", "tiny", "--set", "pretrain.wings=2"], "steps"),
    (["--preset", "tiny", "--set", "mfu=lots"], "expected a number"),
    (["--preset", "tiny", "--set", "mfu=2"], "fraction"),
    (["--preset", "tiny", "--set", "novalue"], "KEY=VALUE"),
    (["--preset", "phi1", "--set", "textbooks.model=gpt-17"], "gpt-4-32k"),
    (["--scenario", "phi1-paper", "--set", "textbooks.tokens_out=lots"], "expected a number"),
])
def test_errors_are_clear_and_without_traceback(capsys, argv, needle):
    rc, out, err = _run(capsys, *argv)
    assert rc == 2 and needle in err and "Traceback" not in err


def test_list_shows_scenarios_presets_and_keys(capsys):
    rc, out, _ = _run(capsys, "--list", "--preset", "phi1")
    assert rc == 0 and "phi1-paper" in out and "phi1-small" in out
    assert "pretrain.{" in out and ",steps," in out and "mfu" in out


def test_extra_price_and_scenario_folders(tmp_path, capsys):
    prices = tmp_path / "p"
    prices.mkdir()
    (prices / "cheap.toml").write_text('[rental."cheap-8xA100"]\nusd_per_hour = 8.0\ngpu = "A100"\nn_gpus = 8\n'
                                       'source = "my quote"\nas_of = 2025-01-01\n')
    scen = tmp_path / "s"
    scen.mkdir()
    (scen / "mine.toml").write_text('[[line]]\nstage = "gpu"\nitem = "box"\nkind = "rental"\n'
                                    'rental = "cheap-8xA100"\nhours = 10\n')
    rc, out, _ = _run(capsys, "--scenario", "mine", "--scenarios", str(scen), "--prices", str(prices), "--json")
    assert rc == 0 and json.loads(out)["total_usd"] == pytest.approx(80.0)


def test_subprocess_console_script():
    proc = subprocess.run([sys.executable, "-m", "phi1lib", "budget", "--scenario", "phi1-paper", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert round(json.loads(proc.stdout)["total_usd"], 2) == 6478.10
    bad = subprocess.run([sys.executable, "-m", "phi1lib", "budget", "--preset", "huge"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "invalid choice: 'huge'" in bad.stderr and "Traceback" not in bad.stderr
