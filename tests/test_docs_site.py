"""The built documentation site in a real headless browser: every page loads
without console errors and its images load, the search finds
``conv2d_backward``, and the gallery shows the digits example's figure. A
screenshot of the front page is left in docs/_build/screenshots/.

Marked ``docs``: `python -m pytest` skips it; .ci/run builds the site and runs
`python -m pytest -m docs`. Needs the built site (docs/_build/html), Debian's
chromium and chromium-driver, and selenium; on a machine without them it
skips, but under CI (CI=true) a missing piece fails.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.docs

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "docs" / "_build" / "html"
SCREENSHOTS = ROOT / "docs" / "_build" / "screenshots"
PAGES = [
    "index.html",
    "getting_started.html",
    "user_guide.html",
    "dask.html",
    "backward.html",
    "performance.html",
    "reliability.html",
    "architecture.html",
    "api.html",
    "changelog.html",
    "development.html",
    "auto_examples/index.html",
    "auto_examples/train_digits.html",
    "auto_examples/padding_tour.html",
    "generated/fastconv.Conv2D.html",
    "generated/fastconv.conv2d_backward.html",
    "generated/fastconv.torch.Conv2d.html",
    "generated/fastconv.dask.conv2d.html",
    "auto_examples/dask_large_image.html",
]


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} (the docs check must run in CI)")
    pytest.skip(what)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # a failing test shows the browser's errors, not every request


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The built site served over HTTP on a free local port (as a host would;
    file:// URLs behave differently in the browser)."""
    if not (SITE / "index.html").exists():
        _missing(f"no built site in {SITE}: python -m sphinx -b html docs docs/_build/html")
    handler = functools.partial(QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        _missing("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install --group docs)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver named explicitly: selenium would otherwise try to download one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _broken_images(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);"
    )


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_without_console_errors(site, browser, page):
    browser.get(site + page)
    assert browser.execute_script("return document.readyState") == "complete"
    assert "fastconv" in browser.title
    assert _console_errors(browser) == []
    assert _broken_images(browser) == []


def test_search_finds_conv2d_backward(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(site + "search.html?q=conv2d_backward")
    link = 'a[href*="fastconv.conv2d_backward.html"]'
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#search-results {link}"))
    assert _console_errors(browser) == []


def test_the_gallery_shows_the_training_plot(site, browser):
    from selenium.webdriver.common.by import By

    browser.get(site + "auto_examples/train_digits.html")
    figures = browser.find_elements(By.CSS_SELECTOR, "img.sphx-glr-single-img")
    assert figures, "no figure on the digits example's page"
    width = browser.execute_script("return arguments[0].naturalWidth", figures[0])
    assert width > 300, f"the figure did not load (width {width})"
    browser.get(site + "auto_examples/index.html")
    thumbnails = browser.find_elements(By.CSS_SELECTOR, ".sphx-glr-thumbcontainer img")
    assert thumbnails and browser.execute_script("return arguments[0].naturalWidth", thumbnails[0]) > 0


def test_front_page_screenshot(site, browser):
    browser.get(site + "index.html")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / "front_page.png"
    assert browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
