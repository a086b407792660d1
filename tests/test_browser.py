"""Every widget notebook in a real JupyterLab, driven by headless Chromium.

A widget that works in a kernel can still fail in the browser (a missing or mismatched widget
extension shows "Error displaying widget"). This test starts one JupyterLab from this
environment on a free loopback port with a random token, over copies of the notebooks. For each
notebook with a cell tagged ``widget-app`` (tests/notebook_conventions.py) it clears the
outputs, runs the cells up to each app, moves one of the app's controls (and presses its button
when the cell's metadata says so), checks that the widget rendered and its figure changed, runs
the rest, and checks that every code cell ran and none raised or wrote to stderr. Apps are used
before the cells after them run because those may tear down what the app needs (07 stops its
live service).

With ``APSLAB_SCREENSHOTS=DIR`` (``make screenshots``) it saves the first app of each notebook,
after the move, as ``DIR/<notebook>.png`` for the README's gallery.

It needs Debian's ``chromium`` (Playwright's own browser download does not work here). Without
it the tests are skipped, unless ``APSLAB_BROWSER_TEST=1`` (``make test`` sets it when chromium
is installed, ``.ci/run`` installs it), where a missing browser or Playwright is a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT
from notebook_conventions import (
    NOTEBOOKS_DIR,
    browser_instructions,
    load,
    widget_app_cells,
    widget_notebooks,
)

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                        else None)
REQUIRED = os.environ.get("APSLAB_BROWSER_TEST") == "1"
SCREENSHOTS = os.environ.get("APSLAB_SCREENSHOTS")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]
CELL_TIMEOUT_MS = 300_000  # one segment of cells (06 and 07 take seconds; CI is slower)
REDRAW_TIMEOUT_S = 120  # an app re-running its model after a move (06 re-plans)
GALLERY_WIDTH = 900  # pixels: screenshots are scaled down to this width at most

if CHROMIUM is None:
    if REQUIRED:
        pytest.fail("APSLAB_BROWSER_TEST=1 but chromium is not installed "
                    "(make test-browser installs it)", pytrace=False)
    pytest.skip("chromium is not installed (make test-browser installs it)",
                allow_module_level=True)

try:
    from playwright import sync_api as playwright_api
except ImportError:
    if REQUIRED:
        pytest.fail("APSLAB_BROWSER_TEST=1 but playwright is not installed", pytrace=False)
    pytest.skip("playwright is not installed", allow_module_level=True)

NOTEBOOKS = widget_notebooks()

# JupyterLab settings for the test: every cell stays in the page (no windowing, so each one can
# be found and checked) and no news or update toast covers a widget.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET"):
    request = urllib.request.Request(f"{base}{path}", method=method,
                                     headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = answer.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """One JupyterLab server over copies of the widget notebooks; yields (base URL, token)."""
    tmp = tmp_path_factory.mktemp("jupyterlab")
    work = tmp / "notebooks"
    work.mkdir()
    for name in NOTEBOOKS:
        shutil.copy(NOTEBOOKS_DIR / name, work / name)
    (tmp / "data").symlink_to(ROOT / "data")  # 06's default paths are ../data/...
    settings = tmp / "lab-settings"
    for relative, values in LAB_SETTINGS.items():
        (settings / relative).parent.mkdir(parents=True, exist_ok=True)
        (settings / relative).write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ,
               JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               IPYTHONDIR=str(tmp / "ipython"),
               JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab-workspaces"))
    env.pop("MPLBACKEND", None)
    log_path = tmp / "jupyter.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         "--ServerApp.port_retries=0", "--LabApp.news_url=",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited: {log_path.read_text()}")
            try:
                _api(base, token, "/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("jupyter lab did not start within 90 s")
                time.sleep(0.5)
        yield base, token
    finally:
        if server.poll() is None:  # the server and its kernels share one process group
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


IMAGE_DIGEST = """
(img) => {
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext('2d');
  context.drawImage(img, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let hash = 0;
  for (let i = 0; i < pixels.length; i += 7) { hash = (hash * 31 + pixels[i]) | 0; }
  return [canvas.width, canvas.height, hash];
}
"""

# Prompts of the code cells among the notebook's cells first..last: "[3]:", "[*]:", "[ ]:".
PROMPTS = """
([first, last]) => Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell'))
  .slice(first, last + 1)
  .filter((cell) => cell.classList.contains('jp-CodeCell'))
  .map((cell) => cell.querySelector('.jp-InputPrompt').textContent.trim())
"""
ERRORS = """
() => Array.from(document.querySelectorAll(
    '.jp-NotebookPanel .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
  .map((output) => output.innerText.slice(0, 2000))
"""


class NotebookPage:
    """One notebook open in JupyterLab, and the few things the test does with it."""

    def __init__(self, page, name: str) -> None:
        self.page, self.name = page, name
        self.cells = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")

    def menu(self, menu: str, item: str) -> None:
        self.page.locator(".lm-MenuBar-item", has_text=menu).first.click()
        self.page.get_by_role("menuitem", name=item, exact=True).click()

    def wait_for_idle_kernel(self) -> None:
        # Running cells before the kernel is connected opens a kernel dialog instead.
        self.page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=120_000)

    def run(self, first: int, last: int) -> None:
        """Run cells first..last (indexes among all cells) and wait until every code cell among
        them has run; fails with the error shown if one raises or writes to stderr."""
        self.cells.nth(first).locator(".jp-InputPrompt").click()
        if last > first:
            self.cells.nth(last).locator(".jp-InputPrompt").click(modifiers=["Shift"])
        self.page.keyboard.press("Control+Enter")
        deadline = time.monotonic() + CELL_TIMEOUT_MS / 1000
        while True:
            errors = self.page.evaluate(ERRORS)
            assert not errors, f"{self.name}: a cell raised or wrote to stderr:\n{errors[0]}"
            prompts = self.page.evaluate(PROMPTS, [first, last])
            if all(p.startswith("[") and p[1:-2].strip().isdigit() for p in prompts):
                return
            assert time.monotonic() < deadline, \
                f"{self.name}: cells {first}..{last} did not finish: {prompts}"
            self.page.wait_for_timeout(250)

    def check_rendered(self) -> None:
        assert "Error displaying widget" not in self.page.inner_text("body"), self.name


def move(widget, label: str | None) -> str:
    """Move one control of an app (see notebook_conventions); returns what was moved."""
    if label:
        control = widget.locator(".widget-label", has_text=label).first.locator("xpath=..")
    else:
        control = None
        for selector in (".widget-slider", ".widget-dropdown", ".widget-toggle-buttons"):
            if widget.locator(selector).count():
                control = widget.locator(selector).first
                break
    assert control is not None and control.count(), f"no control {label or ''} to move"
    description = control.locator(".widget-label").first.inner_text()
    if control.locator(".noUi-handle").count():  # a slider: drag its handle a third of the way
        handle, track = control.locator(".noUi-handle").first, control.locator(".noUi-base")
        handle.scroll_into_view_if_needed()
        box, rail = handle.bounding_box(), track.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        room_right = rail["x"] + rail["width"] - x
        step = rail["width"] / 3 if room_right > rail["width"] / 3 else -rail["width"] / 3
        page = widget.page
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + step, y, steps=8)
        page.mouse.up()
    elif control.locator("select").count():  # a dropdown: the next option
        select = control.locator("select").first
        count = select.locator("option").count()
        index = select.evaluate("(s) => s.selectedIndex")
        select.select_option(index=(index + 1) % count)
    else:  # toggle buttons: one not selected
        control.locator(".widget-toggle-button:not(.mod-active)").first.click()
    return description


def digest(image):
    image.page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                                 arg=image.element_handle())
    return image.evaluate(IMAGE_DIGEST)


def save_screenshot(widget, path: Path) -> None:
    """The app as shown, scaled to at most GALLERY_WIDTH pixels and stored with a palette."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    widget.screenshot(path=str(path))
    image = Image.open(path).convert("RGB")
    if image.width > GALLERY_WIDTH:
        image = image.resize((GALLERY_WIDTH, round(image.height * GALLERY_WIDTH / image.width)),
                             Image.Resampling.LANCZOS)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def use_app(notebook: NotebookPage, index: int, cell, screenshot: Path | None) -> None:
    """Check the app in cell ``index`` rendered, move a control and see its figure change."""
    widget = notebook.cells.nth(index).locator(".jp-OutputArea-output > .jupyter-widgets").first
    widget.wait_for()
    notebook.check_rendered()
    image = widget.locator("img").first
    image.wait_for()
    before = digest(image)
    status = widget.locator(".widget-html")
    status_before = status.first.inner_text() if status.count() else None
    instructions = browser_instructions(cell)
    moved = move(widget, instructions.get("move"))
    if instructions.get("press"):
        widget.get_by_role("button", name=instructions["press"]).click()
    deadline = time.monotonic() + REDRAW_TIMEOUT_S
    after = before
    while after == before and time.monotonic() < deadline:
        notebook.page.wait_for_timeout(250)
        after = digest(image)
    assert after != before, f"{notebook.name}: moving {moved!r} did not redraw the figure"
    if status_before is not None:
        assert status.first.inner_text() != status_before, notebook.name
    notebook.check_rendered()
    if screenshot is not None:
        save_screenshot(widget, screenshot)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_widget_notebook_runs_and_its_apps_redraw_in_jupyterlab(jupyterlab, browser, name):
    base, token = jupyterlab
    source = load(NOTEBOOKS_DIR / name)
    apps = widget_app_cells(source)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    try:
        # A workspace of its own, reset, so only this notebook is open in the page.
        workspace = Path(name).stem.replace("_", "-")
        page.goto(f"{base}/lab/workspaces/{workspace}/tree/{name}?reset&token={token}")
        notebook = NotebookPage(page, name)
        page.wait_for_function(
            f"() => document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell').length"
            f" === {len(source.cells)}")
        notebook.wait_for_idle_kernel()

        # Collapsed cells (the exercises' solutions) show no prompt to read: expand them.
        notebook.menu("View", "Expand All Code")
        # Start from no outputs, so everything checked below comes from this kernel.
        notebook.menu("Edit", "Clear Outputs of All Cells")
        page.wait_for_function(
            "() => !document.querySelector('.jp-NotebookPanel .jp-OutputArea-output')")

        first = 0
        for number, index in enumerate(apps):
            notebook.run(first, index)
            shot = (Path(SCREENSHOTS) / f"{Path(name).stem}.png"
                    if SCREENSHOTS and number == 0 else None)
            use_app(notebook, index, source.cells[index], shot)
            first = index + 1
        if first < len(source.cells):
            notebook.run(first, len(source.cells) - 1)
        notebook.check_rendered()
    finally:
        page.close()
        for session in _api(base, token, "/api/sessions"):  # free the CPU for the next one
            _api(base, token, f"/api/sessions/{session['id']}", method="DELETE")
