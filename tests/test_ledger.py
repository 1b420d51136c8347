"""Usage ledger: the cap raises before crossing, records persist across reloads, torn lines are skipped."""

from __future__ import annotations

import json
import math
import threading
import warnings

import pytest

from phi1lib import budget
from phi1lib.errors import BudgetExceeded, ConfigError
from phi1lib.budget import Ledger


def test_cap_raises_before_the_spend_that_would_cross_it(tmp_path):
    led = Ledger(tmp_path / "ledger.jsonl", cap_usd=1.00)
    led.check(0.60, "first call")
    led.record("synthesis", usd=0.60, tokens_in=100, tokens_out=200)
    led.check(0.40, "exactly to the cap")  # reaching the cap is allowed, crossing is not
    with pytest.raises(BudgetExceeded) as err:
        led.check(0.41, "textbook batch 7")
    assert "textbook batch 7" in str(err.value) and "$1.00" in str(err.value)
    assert err.value.needed_usd == pytest.approx(0.41) and err.value.remaining_usd == pytest.approx(0.40)
    assert led.spent_usd == pytest.approx(0.60)  # the refused call spent nothing
    assert led.remaining_usd == pytest.approx(0.40)
    assert len(led.records) == 1


def test_no_cap_means_unlimited():
    led = Ledger()
    led.check(1e9)
    led.record("x", usd=5)
    assert led.remaining_usd == math.inf and led.spent_usd == 5


def test_records_survive_reload_and_a_torn_line_is_skipped(tmp_path):
    path = tmp_path / "ledger.jsonl"
    led = Ledger(path, cap_usd=10)
    led.record("annotation", usd=1.25, tokens_in=1000, tokens_out=10, model="gpt-4", estimate_usd=1.0)
    led.record("pretrain", gpu_seconds=7200, cpu_seconds=30)
    with path.open("a") as fh:  # a writer killed mid-line
        fh.write('{"stage": "synthesis", "usd": 3.0, "tok')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = Ledger(path, cap_usd=10)
    assert any("torn" in str(w.message) for w in caught)
    assert again.spent_usd == pytest.approx(1.25)
    assert [r["stage"] for r in again.records] == ["annotation", "pretrain"]
    assert again.records[0]["model"] == "gpt-4"
    again.record("synthesis", usd=2.0)  # appends after the torn tail, still parseable
    with pytest.warns(UserWarning, match="corrupt"):  # the torn line stays on disk, still skipped
        third = Ledger(path, cap_usd=10)
    assert third.spent_usd == pytest.approx(3.25)
    with pytest.raises(BudgetExceeded):
        third.check(7.0)


def test_summary_compares_estimate_and_measured(tmp_path):
    prices = budget.load_prices()
    led = Ledger(tmp_path / "l.jsonl")
    est = budget.estimate_llm("synthesis", "gpt-4o-mini", 1000, 4000, prices)
    led.record_estimate(est)
    for _ in range(3):
        led.record("synthesis", usd=budget.price_llm_usage("gpt-4o-mini", 300, 1200, prices), tokens_in=300,
                   tokens_out=1200)
    led.record("pretrain", gpu_seconds=3600 * 2, estimate_usd=0.0)
    df = led.summary()
    assert list(df.index) == ["synthesis", "pretrain"]
    row = df.loc["synthesis"]
    assert row["estimate_usd"] == pytest.approx(est.cost_usd)
    assert row["spent_usd"] == pytest.approx(3 * (300 * 0.00015 + 1200 * 0.0006) / 1000)
    assert row["tokens_in"] == 900 and row["tokens_out"] == 3600 and row["calls"] == 3
    assert row["spent/estimate"] == pytest.approx(row["spent_usd"] / row["estimate_usd"])
    assert df.loc["pretrain", "gpu_hours"] == pytest.approx(2.0)


def test_reserve_holds_money_for_calls_in_flight():
    led = Ledger(cap_usd=1.0)
    with led.reserve(0.7, "call A"):
        with pytest.raises(BudgetExceeded, match="reserved"):
            led.check(0.5, "call B")
        led.record("s", usd=0.65)
    assert led.reserved_usd == 0 and led.remaining_usd == pytest.approx(0.35)


def test_concurrent_reservations_never_cross_the_cap():
    led = Ledger(cap_usd=1.0)
    refused = []

    def call():
        try:
            with led.reserve(0.1, "call"):
                led.record("s", usd=0.1)
        except BudgetExceeded:
            refused.append(1)

    threads = [threading.Thread(target=call) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert led.spent_usd <= 1.0 + 1e-9
    assert len(refused) == 30 - len(led.records)


@pytest.mark.parametrize("kwargs", [{"usd": -1}, {"usd": float("nan")}, {"tokens_in": "many"}, {"ts": 3}])
def test_bad_values_are_rejected_and_nothing_written(tmp_path, kwargs):
    path = tmp_path / "l.jsonl"
    led = Ledger(path)
    with pytest.raises(ConfigError):
        led.record("s", **kwargs)
    assert not path.exists() or path.read_text() == ""


def test_each_record_is_one_json_line(tmp_path):
    path = tmp_path / "l.jsonl"
    Ledger(path).record("s", usd=0.5, note="hello")
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["note"] == "hello"


def test_two_processes_sharing_a_ledger_share_the_cap(tmp_path):
    path = tmp_path / "shared.jsonl"
    a, b = Ledger(path, cap_usd=1.0), Ledger(path, cap_usd=1.0)
    a.record("synthesis", usd=0.7)
    assert b.spent_usd == pytest.approx(0.7)  # b sees a's spend without reloading
    with pytest.raises(BudgetExceeded):
        b.check(0.5, "b's call")
    b.record("annotation", usd=0.2)
    assert a.spent_usd == pytest.approx(0.9) and len(a.records) == 2


def test_the_cap_is_kept_in_the_file_for_every_later_ledger(tmp_path):
    path = tmp_path / "ledger.jsonl"
    Ledger(path, cap_usd=0.005)
    later = Ledger(path)  # another command on the same run folder, told no cap
    assert later.cap_usd == 0.005 and "--cap-usd on" in later.cap_source
    later.record("synthesis", usd=0.002)
    with pytest.raises(BudgetExceeded) as err:
        later.check(0.0031, "request abc", pending_usd=0.0)
    msg = str(err.value)
    assert "$0.005 cap" in msg and "$0.003 left: $0.002 spent and $0.00 reserved" in msg and "$0.0031" in msg
    assert later.records == [r for r in later.records if r["stage"] == "synthesis"]  # cap lines are not spend
    Ledger(path, cap_usd=1.0)  # a new cap replaces it, for everyone
    assert Ledger(path).cap_usd == 1.0 and Ledger(path).spent_usd == pytest.approx(0.002)
    Ledger(path).set_cap(None)
    assert Ledger(path).cap_usd is None
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x.get("cap_usd") for x in lines if x.get("kind") == "cap"] == [0.005, 1.0, None]


@pytest.mark.parametrize("usd,text", [(0.0, "$0.00"), (0.005, "$0.005"), (0.00257, "$0.00257"), (0.000112, "$0.000112"),
                                      (0.25, "$0.25"), (2.5, "$2.50"), (12.345, "$12.35"), (2500, "$2,500.00")])
def test_usd_text_keeps_the_digits_that_matter(usd, text):
    from phi1lib.budget.ledger import usd_text

    assert usd_text(usd) == text
