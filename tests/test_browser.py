"""A real browser: JupyterLab on 127.0.0.1 with a token, the dashboard notebook opened in
headless Chromium (Debian's ``chromium``, driven by Playwright without a browser download), run
from the Run menu; changing one widget changes the table and the chart.

Needs /usr/bin/chromium (.ci/run installs it). Outside CI a machine without it skips."""

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import ROOT

import glasskit as gk
from glasskit.runs import create_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _store(root):
    """Finished quick-profile runs on ml-100k (metrics only: the dashboard trains nothing here)."""
    for variant, seeds, ndcg, hit in ((None, (0, 1), 0.058, 0.11), ("sidtier+shs", (0, 1), 0.053, 0.10),
                                      ("sidtier+shs+cr", (0,), 0.057, 0.12)):
        for s in seeds:
            cfg = gk.configure("quick", seed=s, variant=variant)
            run = create_run(cfg, cfg.model.name, root=root, data_fingerprint="0" * 16)
            test = {r: {"ndcg@10": ndcg + 0.002 * s, "hit@10": hit + 0.01 * s, "acc": [0.1]}
                    for r in ("masked", "unmasked")}
            run.log_metrics(primary="masked", test=test, train_seconds=1.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dashboard_in_jupyterlab_reacts_to_a_widget(tmp_path):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    books = tmp_path / "notebooks"
    books.mkdir()
    shutil.copy(ROOT / "notebooks" / "06_ablation_dashboard.ipynb", books)
    _store(tmp_path / "runs")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "GLASSKIT_RUNS": str(tmp_path / "runs"),
           "GLASSKIT_CACHE": str(tmp_path / "cache"), "JUPYTER_CONFIG_DIR": str(tmp_path / "jcfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrt"), "OMP_NUM_THREADS": "1"}
    lab = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
                            "--ip", "127.0.0.1", "--port", str(port),
                            f"--ServerApp.token={token}", f"--ServerApp.root_dir={books}",
                            "--LabApp.news_url=", "--ServerApp.open_browser=False"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start: " + lab.stderr.read()[-2000:])
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/06_ablation_dashboard.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", state="visible", timeout=120_000)
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=120_000)
            page.click(".lm-MenuBar-itemLabel:text-is('Run')")
            page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
            table = page.wait_for_selector("table.glasskit-table", timeout=120_000)
            before = table.inner_text()
            assert "ndcg@10" in before and "tiger" in before and "sidtier+shs" in before
            page.wait_for_selector(".jp-OutputArea .js-plotly-plot", timeout=60_000)
            metric = page.locator(".widget-dropdown", has=page.locator("label", has_text="metric"))
            metric.locator("select").select_option("hit@10")
            page.wait_for_function(
                "() => [...document.querySelectorAll('table.glasskit-table')]"
                ".some(t => t.innerText.includes('hit@10'))", timeout=60_000)
            after = page.locator("table.glasskit-table").first.inner_text()
            assert after != before and "0.1150 ± 0.0071" in after  # tiger hit@10 over seeds 0, 1
            # the chart is redrawn just after the table: wait for it rather than read it at once
            page.wait_for_function(
                "() => [...document.querySelectorAll('.jp-OutputArea .js-plotly-plot .gtitle')]"
                ".some(t => t.textContent.includes('hit@10'))", timeout=60_000)
            if os.environ.get("GLASSKIT_SHOT"):
                page.screenshot(path=os.environ["GLASSKIT_SHOT"])
            browser.close()
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.kill()
