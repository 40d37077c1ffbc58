"""The comparison report: the published peak table recomputed from per-level data, noise judgement,
edge cases, CSV round trip, and the HTML in a real browser.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/unit/test_report.py.
"""

from __future__ import annotations

import csv
import shutil
import subprocess

import pandas as pd
import pytest

from conftest import BIN
from llmd_bench import report as rpt
from llmd_bench.report.data import from_csv_dir
from unit.test_report import (
    seed_dir,  # noqa: F401  (fixtures these tests request)
    seed_rows,
)


def test_published_peak_table_is_reproduced_from_level_data(seed_dir, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([str(BIN / "llmd-bench"), "report", "--from-csv", str(seed_dir), "--out", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    with open(out / "all_peak_metrics.csv") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames[:8] == ["model", "config", "peak_output_tps", "optimal_concurrency", "vs_baseline_pct",
                                         "ttft_mean_ms", "tpot_mean_ms", "status"]
        got = {(r["model"], r["config"]): r for r in reader}
    seed = seed_rows()
    assert len(got) == len(seed)
    for s in seed:
        g = got[(s["model"], s["config"])]
        if s["status"] == "corrupted":
            # shown as what it is, never as a number
            assert g["status"] == "invalid" and g["peak_output_tps"] == "" and g["vs_baseline_pct"] == ""
            continue
        assert round(float(g["peak_output_tps"])) == int(s["peak_output_tps"])
        assert int(g["optimal_concurrency"]) == int(s["optimal_concurrency"])
        assert float(g["ttft_mean_ms"]) == pytest.approx(float(s["ttft_mean_ms"]))
        assert float(g["tpot_mean_ms"]) == pytest.approx(float(s["tpot_mean_ms"]))
        if s["config"] == "no-offload":
            assert g["vs_baseline_pct"] == ""
        else:
            assert round(float(g["vs_baseline_pct"]), 1) == float(s["vs_baseline_pct_published"]), (s, g)
    assert "Qwen3-0.6B/native-offload invalid" in (out / "report.md").read_text().replace("**", "")
    for name in ("report.html", "performance_comparisons.csv", "throughput_vs_concurrency.png",
                 "ttft_vs_concurrency.png", "tpot_vs_concurrency.png", "peak_vs_baseline.png",
                 "Qwen3-8B_llm-d-redis_metrics.csv"):
        assert (out / name).stat().st_size > 0, name


def test_csv_round_trip_gives_the_same_report(seed_dir, tmp_path):
    first = rpt.build(from_csv_dir(seed_dir))
    rpt.write(first, tmp_path / "a")
    second = rpt.build(from_csv_dir(tmp_path / "a"))
    cols = ["model", "config", "peak_output_tps", "optimal_concurrency", "vs_baseline_pct", "status"]
    pd.testing.assert_frame_equal(first.peaks[cols], second.peaks[cols], check_dtype=False, atol=1e-3)


def test_html_report_renders_in_headless_chromium(seed_dir, tmp_path, artifacts):
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_bin):
        pytest.skip("Debian chromium and chromium-driver are not installed (make setup installs them as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    out = tmp_path / "out"
    rpt.write(rpt.build(from_csv_dir(seed_dir)), out)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1300,2400"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        driver.get((out / "report.html").as_uri())
        assert driver.title.startswith("llm-d KV-cache evaluation")
        images = driver.execute_script("return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth])")
        assert len(images) == 4 and all(w and w > 100 for _, w in images), images
        tables = driver.execute_script("return document.querySelectorAll('table').length")
        assert tables >= 6
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        driver.save_screenshot(str(artifacts / "report.png"))
    finally:
        driver.quit()
    assert (artifacts / "report.png").stat().st_size > 10_000
