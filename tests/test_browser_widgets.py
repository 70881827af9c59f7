"""The widgets in a real browser: JupyterLab headless, Chromium driven by Playwright, a key press on a slider.

A notebook with the package's ``bit_width_explorer`` is opened in JupyterLab, its cell is run from the page
(Shift+Enter in the cell), the bit-width slider's handle gets the keyboard focus and the Right arrow is pressed,
as a user would. The slider's readout must move from 3 to 4 and the rendered figure (a PNG in the output
area) must change. Nothing is set from Python.

Needs JupyterLab (the ``notebooks`` extra), Playwright (``classroom`` extra) and a Chromium binary (Debian's
``chromium`` package; ``./run.sh`` installs all three). Playwright's own browser download is not used.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

playwright_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("jupyterlab")
CHROMIUM = os.environ.get("QEVO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium)")

CELLS = [
    "from qevo_lite import fold_batchnorm, load_pretrained, load_splits\n"
    "from qevo_lite.viz.widgets import bit_width_explorer\n"
    "splits = load_splits('digits', search_size=128)\n"
    "model, _ = load_pretrained('vgg_small', train_if_missing=False)\n"
    "explorer = bit_width_explorer(fold_batchnorm(model), splits.search, bits=3, n_eval=64, interactive=True)\n"
    "explorer",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "explorer.ipynb")
    port, token = _free_port(), "qevo-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "QEVO_STATIC_WIDGETS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
                             f"--ServerApp.token={token}", f"--ServerApp.root_dir={tmp_path}",
                             "--ServerApp.ip=127.0.0.1", "--ServerApp.allow_root=True", "--LabApp.news_url=",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                            env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "lab.log").open("w"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        if proc.poll() is not None:
            break
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail("JupyterLab did not start: " + (tmp_path / "lab.log").read_text()[-2000:])
    yield f"{url}/lab/tree/explorer.ipynb?token={token}"
    proc.terminate()
    proc.wait(timeout=30)


def _figure(page) -> str:
    """The ``src`` of the explorer's rendered figure (a base64 PNG), or '' while there is none."""
    imgs = page.locator(".jp-OutputArea-output img")
    return imgs.last.get_attribute("src") if imgs.count() else ""


def test_slider_moved_with_the_keyboard_redraws_the_figure(lab):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(lab)
        page.locator(".jp-Notebook .jp-Cell .cm-content").first.wait_for(timeout=120_000)
        page.wait_for_function("() => document.body.innerText.includes('| Idle')", timeout=120_000)  # kernel up
        page.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
        page.keyboard.press("Shift+Enter")                           # run the cell, as a user would
        handle = page.locator(".widget-slider .noUi-handle, .widget-hslider .noUi-handle").first
        handle.wait_for(timeout=180_000)
        readout = page.locator(".widget-readout").first
        deadline = time.time() + 120
        while not _figure(page) and time.time() < deadline:
            time.sleep(0.5)
        before = _figure(page)
        assert before.startswith("data:image/png"), "the explorer drew no figure"
        assert readout.inner_text().strip() == "3"
        handle.focus()
        page.keyboard.press("ArrowRight")
        deadline = time.time() + 120
        while _figure(page) in ("", before) and time.time() < deadline:
            time.sleep(0.5)
        after = _figure(page)
        assert readout.inner_text().strip() == "4", "the key press did not move the slider"
        assert after.startswith("data:image/png") and after != before, "the figure was not redrawn"
        browser.close()
