"""The token-bucket notebook in a real JupyterLab, driven by headless Chromium.

A widget that works in a kernel can still fail in the browser (a missing or mismatched widget
extension shows "Error displaying widget"). This test starts JupyterLab from this environment on
a free loopback port with a random token, opens a copy of ``01_token_bucket.ipynb``, runs all
cells, drags a slider and checks that the widget rendered and its plot image changed.

It needs Debian's ``chromium`` (Playwright's own browser download does not work here). Without
it the test is skipped, unless ``APSLAB_BROWSER_TEST=1`` (``make test-browser``, which installs
chromium first), where a missing browser is a failure.
"""

from __future__ import annotations

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

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                        else None)
REQUIRED = os.environ.get("APSLAB_BROWSER_TEST") == "1"
NOTEBOOK = "01_token_bucket.ipynb"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]

if CHROMIUM is None:
    if REQUIRED:
        pytest.fail("APSLAB_BROWSER_TEST=1 but chromium is not installed "
                    "(make test-browser installs it)", pytrace=False)
    pytest.skip("chromium is not installed (make test-browser installs it)",
                allow_module_level=True)

playwright_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on a copy of the notebook; yields its base URL and token."""
    work = tmp_path / "notebooks"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, work / NOTEBOOK)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ,
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               IPYTHONDIR=str(tmp_path / "ipython"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"))
    env.pop("MPLBACKEND", None)
    log = (tmp_path / "jupyter.log").open("w")
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
                pytest.fail(f"jupyter lab exited: {(tmp_path / 'jupyter.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
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


def test_token_bucket_widget_renders_and_redraws_in_jupyterlab(jupyterlab):
    base, token = jupyterlab
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell")
            # Running cells before the kernel is connected opens a kernel dialog instead.
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)

            # Start from no outputs, so everything checked below comes from this kernel.
            page.locator(".lm-MenuBar-item", has_text="Edit").first.click()
            page.get_by_role("menuitem", name="Clear Outputs of All Cells", exact=True).click()
            page.wait_for_function(
                "() => !document.body.innerText.includes('checks passed')")
            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            # The last cell (the reference solution) reports its checks once everything ran.
            page.wait_for_function(
                "() => document.body.innerText.includes('token bucket: all 6 checks passed')",
                timeout=120_000)
            widget = page.locator(".jp-OutputArea-output .widget-vbox").first
            widget.wait_for()
            assert "Error displaying widget" not in page.inner_text("body")
            assert page.locator(".jp-OutputArea-output .widget-slider").count() >= 2

            image = widget.locator("img").first
            image.wait_for()
            page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                                   arg=image.element_handle())
            before = image.evaluate(IMAGE_DIGEST)
            status_before = widget.locator(".widget-html").first.inner_text()

            handle = widget.locator(".widget-slider .noUi-handle").first
            handle.scroll_into_view_if_needed()
            box = handle.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] + 120, box["y"] + box["height"] / 2, steps=8)
            page.mouse.up()

            deadline = time.monotonic() + 30
            after = before
            while after == before and time.monotonic() < deadline:
                page.wait_for_timeout(250)
                after = image.evaluate(IMAGE_DIGEST)
            assert after != before, "moving the slider redrew the plot image"
            assert widget.locator(".widget-html").first.inner_text() != status_before
            assert "Error displaying widget" not in page.inner_text("body")
        finally:
            browser.close()
