"""The front doors in a real browser: `scripts/ui.sh start`, a pipeline run started from the
Prefect UI's custom-run form, and its per-group reward charts found in the MLflow UI.

    apt-get install -y chromium chromium-driver && pip install -e ".[dev]"   # selenium
    python -m pytest -q -m slow tests/orchestration/test_browser_ui.py -s    # ~3.5 min on 2 busy cores
    PGRPO_SCREENSHOTS=<folder> python -m pytest ...           # also copy the screenshots there

Headless Chromium (Selenium) does what a new user does: Deployments -> pgrpo-pipeline/params
-> Run -> Custom run, the form set to configs/smoke.yaml, 2 policy steps, an override and a run
name, Submit, the flow run's page until Completed; then MLflow: pgrpo-smoke -> Training runs ->
chart view as it opens (each algorithm's per-group curves, copied to the pipeline run: a
new user saw no chart at all before), then with the parent run expanded, and the
train_policy child run's Model metrics, each with a drawn chart per `train/reward/<group>`.
The stack runs in a copy of the code under tmp_path (own Prefect home, mlflow.db, free ports).
Skips without chromium, chromedriver or selenium. Screenshots: <tmp_path>/screenshots.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pgrpo import NO_TELEMETRY

try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the test skips (the dev extra installs it)
    webdriver = None

REPO = Path(__file__).resolve().parents[2]
COPY = ["pgrpo", "flows", "tasks", "configs", "scripts", "data/raw", "dvc.yaml", "params.yaml",
        ".dvcignore", ".gitignore"]
RUN_NAME = "browser-ui"          # the MLflow parent run's name, typed into the form
FORM = {"params_file": "configs/smoke.yaml", "steps": 2, "overrides": ["evaluate.n_boot=20"],
        "run_name": RUN_NAME}
WAIT = 120                       # s for a page element: the CPU may be shared with other jobs
RUN_TIMEOUT = 900                # s for the flow run (40-80 s on 2 cores)
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser(tmp_path):
    """(headless Chromium, shot(name)); skips where selenium or the OS's browser is missing."""
    if webdriver is None:
        pytest.skip("no selenium: pip install selenium (the dev extra)")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not (binary and driver_bin):
        pytest.skip("no chromium/chromedriver: apt-get install chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1600", f"--user-data-dir={tmp_path / 'chromium'}"]:
        opts.add_argument(arg)
    d = webdriver.Chrome(service=webdriver.ChromeService(driver_bin), options=opts)
    d.set_page_load_timeout(WAIT)
    shots = tmp_path / "screenshots"
    shots.mkdir()

    def shot(name: str) -> None:
        d.save_screenshot(str(shots / f"{len(list(shots.iterdir())) + 1:02d}-{name}.png"))

    try:
        yield d, shot
    finally:
        d.quit()
        print(f"\nscreenshots: {shots}")
        if os.environ.get("PGRPO_SCREENSHOTS"):
            shutil.copytree(shots, os.environ["PGRPO_SCREENSHOTS"], dirs_exist_ok=True)


@pytest.fixture
def stack(tmp_path, browser):
    """`scripts/ui.sh start` in a copy of the code: {"repo", "prefect", "mlflow"} (URLs).
    Started after the browser (which may skip), stopped before it (after a last screenshot)."""
    repo = tmp_path / "repo"
    for name in COPY:
        src, dst = REPO / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(src, dst)
    # Nothing of the caller's Prefect / MLflow / DVC set-up leaks in (PGRPO_CACHE stays).
    env = {k: v for k, v in os.environ.items() if not k.startswith(
        ("PREFECT_", "MLFLOW_", "DVC_", "PGRPO_TRACKING", "PGRPO_PARENT_RUN_ID"))}
    ports = {"PREFECT_PORT": str(_free_port()), "MLFLOW_PORT": str(_free_port())}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               PREFECT_HOME=str(tmp_path / "prefect-home"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", **ports, **NO_TELEMETRY)

    def ui(cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(repo / "scripts" / "ui.sh"), cmd], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=300, check=False)

    try:
        start = ui("start")
        assert start.returncode == 0, f"ui.sh start failed:\n{start.stdout}\n{start.stderr}"
        yield {"repo": repo, "prefect": f"http://127.0.0.1:{ports['PREFECT_PORT']}",
               "mlflow": f"http://127.0.0.1:{ports['MLFLOW_PORT']}"}
    finally:
        try:
            browser[1]("last")  # where the page stood, pass or fail
        finally:
            stop = ui("stop")
            print(f"\nui.sh stop: {stop.stdout.strip()} {stop.stderr.strip()}")


# --------------------------------------------------------------------------- page helpers

def _wait(d, cond, timeout=WAIT, msg="", poll=0.5):
    return WebDriverWait(d, timeout, poll_frequency=poll).until(cond, msg)


def _el(d, xpath, timeout=WAIT):
    """The first visible element at xpath, waited for."""
    def visible(d):
        try:
            return next((e for e in d.find_elements(By.XPATH, xpath) if e.is_displayed()), False)
        except WebDriverException:  # stale: the page re-rendered, look again
            return False
    return _wait(d, visible, timeout, f"nothing visible at {xpath}")


def _click(d, xpath, timeout=WAIT):
    """Click the first visible element at xpath; a popover in the way ("Got it") is closed
    first, as a user would."""
    def attempt(d):
        try:
            _el(d, xpath, 1).click()
            return True
        except WebDriverException:  # not there yet, stale, or covered
            _click_all(d, "//button[normalize-space()='Got it']")
            return False
    _wait(d, attempt, timeout, f"could not click {xpath}")


def _click_all(d, xpath):
    """Click whatever is at xpath now (popovers, panels), if anything."""
    for b in d.find_elements(By.XPATH, xpath):
        try:
            b.click()
        except WebDriverException:
            pass


def _prop(name):
    """XPath of parameter `name`'s block in Prefect's run form."""
    return (f"//span[contains(@class,'schema-form-property__label') and normalize-space()="
            f"'{name} (Optional)']/ancestor::div[contains(concat(' ',@class,' '),"
            f"' schema-form-property ')][1]")


def _charts(d, prefix="train/reward/"):
    """Metrics (prefix...) of the charts drawn on the page: a chart card with a plotted line
    whose legend names the metric, "<run> (train/reward/g0)"."""
    try:
        cards = d.find_elements(By.XPATH, "//h4/ancestor::*[.//*[contains(@class,"
                                "'js-plotly-plot')]][1][.//*[contains(@class,'js-line')]]")
        return {m for c in cards for m in re.findall(rf"\(({re.escape(prefix)}[^)\s]+)\)", c.text)}
    except WebDriverException:  # re-rendered while read
        return set()


# --------------------------------------------------------------------------- the test

@pytest.mark.slow
def test_custom_run_from_prefect_ui_shows_group_reward_charts_in_mlflow(browser, stack):
    d, shot = browser
    prefect = stack["prefect"]

    # Prefect: Deployments -> pgrpo-pipeline/params -> Run -> Custom run.
    d.get(f"{prefect}/deployments")
    deployment = "//tr[.//a[normalize-space()='pgrpo-pipeline']]//a[normalize-space()='params']"
    _el(d, deployment)
    shot("prefect-deployments")
    _click(d, deployment)
    _click(d, "//button[normalize-space()='Run']")
    shot("prefect-run-menu")
    _click(d, "//button[normalize-space()='Custom run']")

    # The form. An optional knob shows "None" until its type (int, list, str) is chosen.
    params_file = _el(d, f"{_prop('params_file')}//textarea")
    params_file.send_keys(Keys.CONTROL, "a")
    params_file.send_keys(FORM["params_file"])
    for name, kind, action, value in [("steps", "int", None, "2"),
                                      ("overrides", "list", "Add item", FORM["overrides"][0]),
                                      ("run_name", "str", None, RUN_NAME)]:
        _click(d, f"{_prop(name)}//button[normalize-space()='{kind}']")
        if action:
            _click(d, f"{_prop(name)}//button[normalize-space()='{action}']")
        _el(d, f"{_prop(name)}//*[self::input or self::textarea]").send_keys(value)
    flow_run = _el(d, "//label[normalize-space()='Run Name']/following::input[1]")
    flow_run = flow_run.get_attribute("value")
    assert flow_run, "the form proposes no flow run name"
    shot("prefect-custom-run-form")
    _click(d, "//button[normalize-space()='Submit']")

    # The deployment's page lists the new run: open it, wait for a final state.
    _click(d, f"//a[normalize-space()='{flow_run}']")
    _wait(d, lambda d: "/runs/flow-run/" in d.current_url, msg="no flow run page")
    run_id = d.current_url.split("/runs/flow-run/")[1].split("?")[0].split("/")[0]
    shot("prefect-flow-run-started")
    t0 = time.monotonic()

    def finished(_):
        with urllib.request.urlopen(f"{prefect}/api/flow_runs/{run_id}", timeout=30) as r:
            run = json.load(r)
        return run["state"]["type"] in TERMINAL and run
    run = _wait(d, finished, RUN_TIMEOUT, "the flow run did not finish", poll=5)
    print(f"\nflow run {flow_run}: {run['state']['name']} after {time.monotonic() - t0:.0f} s")
    d.refresh()
    log = (stack["repo"] / ".run" / "serve.log").read_text(errors="replace")[-3000:]
    assert run["state"]["type"] == "COMPLETED", f"{run['state']}\n{log}"
    _el(d, "//*[contains(@class,'state-badge') and normalize-space()='Completed']")
    shot("prefect-flow-run-completed")
    assert {k: run["parameters"][k] for k in FORM} == FORM  # the form sent what was typed

    # What the run logged: a train/reward/<group> series per group in the child run.
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{stack['repo'] / 'mlflow.db'}")
    exp = client.get_experiment_by_name("pgrpo-smoke")
    child = client.search_runs([exp.experiment_id],
                               "attributes.run_name = 'train_policy-pgrpo'")[0]
    expected = {k for k in child.data.metrics if k.startswith("train/reward/")}
    assert expected, sorted(child.data.metrics)
    # ... and each algorithm's copy on the pipeline run, where the chart view opens
    parent_run = client.search_runs([exp.experiment_id], f"attributes.run_name = '{RUN_NAME}'")[0]
    on_parent = {f"train/{alg}/reward/{m.rsplit('/', 1)[1]}" for alg in ("pgrpo", "grpo")
                 for m in expected}
    assert on_parent <= set(parent_run.data.metrics), sorted(parent_run.data.metrics)

    # MLflow: home -> pgrpo-smoke (opens on the GenAI overview) -> Training runs -> charts.
    d.get(stack["mlflow"])
    _click(d, "//a[normalize-space()='pgrpo-smoke']")
    _el(d, "//a[normalize-space()='Training runs']")
    shot("mlflow-experiment-landing")
    _click(d, "//a[normalize-space()='Training runs']")
    parent = f"//*[@role='row'][.//a[normalize-space()='{RUN_NAME}']]"
    _el(d, parent)
    _click_all(d, "//button[@aria-label='Close']")  # the Assistant panel: room for charts
    _click(d, "//label[.//input[@name='runs-view-mode' and @value='CHART']]")
    search = "//input[@placeholder='Search metric charts']"
    _el(d, "//*[normalize-space()='System metrics']")  # the last section: the view is drawn
    # As it opens (stage runs collapsed under the pipeline run), the per-group curves are
    # there: the pipeline run carries them (pgrpo.tracking.mlflow_logger.parent_curves).
    _el(d, search).send_keys("/reward/")
    _wait(d, lambda d: _charts(d, "train/") >= on_parent,
          msg=f"charts of {on_parent} not drawn as the view opens")
    shot("mlflow-chart-view-as-opened")
    _el(d, search).send_keys(Keys.CONTROL, "a", Keys.DELETE)

    # Expand the parent: its stage runs, and their metrics, join the charts.
    _click(d, f"{parent}//button[contains(@data-component-id,'runnamecellrenderer')]")
    _el(d, "//*[@role='row']//a[normalize-space()='train_policy-pgrpo']")
    _el(d, search).send_keys("train/reward/")
    _wait(d, lambda d: _charts(d) == expected, msg=f"charts of {expected} not drawn")
    shot("mlflow-chart-view-group-rewards")

    # The train_policy child run's own page: Model metrics.
    _click(d, "//a[normalize-space()='train_policy-pgrpo']")
    _click(d, "//button[@role='tab' and normalize-space()='Model metrics']")
    _wait(d, lambda d: d.current_url.endswith("/model-metrics"), msg="no Model metrics tab")
    _el(d, search).send_keys("train/reward/")
    _wait(d, lambda d: _charts(d) == expected, msg=f"charts of {expected} not drawn")
    shot("mlflow-child-run-group-rewards")
