"""The dashboard in a real browser: `care dashboard` serves it, headless Chromium draws a chart.

Needs Debian's chromium and chromium-driver (`apt-get install -y chromium chromium-driver`) and
selenium; skipped with that reason when they are absent.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import pytest

pytest.importorskip(
    "streamlit", reason="the dashboard needs the 'app' extra: pip install -e '.[app]'"
)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

from fixtures.runs import write_synthetic_run  # noqa: E402
from PIL import Image  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless browser test needs Debian's chromium and chromium-driver "
    "(apt-get install -y chromium chromium-driver)",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, server: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"care dashboard exited early with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"care dashboard did not answer at {url} within {timeout_s} s")


def test_signal_page_draws_a_plotly_chart_in_headless_chromium(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path / "runs" / "care", steps=40)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "care.cli",
            "dashboard",
            "--runs",
            str(tmp_path / "runs"),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    driver = None
    try:
        wait_until_healthy(url, server)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in HEADLESS_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.get(f"{url}/training_signal?run=care&smoothing=0.5")
        # The chart's SVG exists only once plotly has drawn it: a screenshot before is blank.
        WebDriverWait(driver, 60).until(
            expected_conditions.presence_of_element_located(
                (By.CSS_SELECTOR, "[data-testid='stPlotlyChart'] .main-svg")
            )
        )
        WebDriverWait(driver, 30).until(
            # The accuracy chart and the four learning-signal charts.
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-testid='stPlotlyChart']")) == 5
        )
        heading = driver.find_element(By.CSS_SELECTOR, "h1").text
        assert heading == "Training signal"
        traces = driver.find_elements(
            By.CSS_SELECTOR, "[data-testid='stPlotlyChart'] .scatterlayer .trace"
        )
        assert len(traces) >= 4
        assert "smoothing=0.50" in driver.current_url and "run=care" in driver.current_url
        screenshot = Image.open(BytesIO(driver.get_screenshot_as_png())).convert("RGB")
        colours = screenshot.getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 50, "screenshot is (nearly) blank"
        background_share = max(count for count, _ in colours) / (
            screenshot.width * screenshot.height
        )
        assert background_share < 0.97, f"{background_share:.1%} of the screenshot is one colour"
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
