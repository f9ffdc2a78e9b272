"""The HTML report in a real browser: headless Chromium opens it from disk with networking
off; no console errors; every chart was drawn; a screenshot goes to test-artifacts/.

Needs Chromium and its driver (Debian: ``apt-get install -y chromium chromium-driver``) and
``selenium``. If they are missing the tests skip, saying what is missing and how to install
it; with ``HIERLENS_REQUIRE_BROWSER=1`` (set by CI) they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from hierlens.analysis import write_report
from tests.analysis.report.test_report import build_run

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
REQUIRED = os.environ.get("HIERLENS_REQUIRE_BROWSER") == "1"


def _missing(message: str) -> None:
    """Skip (or, where the browser is required, fail) saying what is missing."""
    (pytest.fail if REQUIRED else pytest.skip)(message)


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def _start_chromium(profile: str):
    hint = (
        "the browser test needs Chromium, chromedriver and selenium "
        "(apt-get install -y chromium chromium-driver; pip install selenium)"
    )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        _missing(f"selenium is not installed ({err}): {hint}")
    browser = _binary("chromium", "chromium-browser", "google-chrome")
    driver = _binary("chromedriver")
    if browser is None or driver is None:
        _missing(f"no Chromium binary or chromedriver on PATH: {hint}")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--no-first-run",
        "--allow-file-access-from-files",
        f"--user-data-dir={profile}",
        # networking off: every request goes to a proxy that does not exist
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--window-size=1280,2400",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(driver), options=opts)
    except Exception as err:  # WebDriverException and OS errors alike
        pytest.fail(f"could not start headless Chromium ({type(err).__name__}: {err}): {hint}")


@contextlib.contextmanager
def _chromium():
    """A headless Chromium on a fresh profile, quit (and its profile removed) however the
    test ends."""
    profile = tempfile.mkdtemp(prefix="hierlens-chromium-")
    driver = _start_chromium(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


_COUNT_DRAWN = (
    "return [document.querySelectorAll('div.chart').length, Array.from("
    "document.querySelectorAll('div.chart')).filter(d => d.querySelector("
    "'svg.main-svg') !== null).length];"
)


def _all_charts_drawn(driver) -> tuple[int, int]:
    """``(charts, charts with their svg)`` once the page has charts and every one has its
    svg (Plotly draws synchronously in newPlot), waiting up to 60 s."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(
        lambda d: (lambda c: c[0] > 0 and c[0] == c[1])(d.execute_script(_COUNT_DRAWN))
    )
    return tuple(driver.execute_script(_COUNT_DRAWN))


def _fetched(driver) -> list[str]:
    """What the page requested (its resources), besides the page itself."""
    return driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name);"
    )


def _severe(driver) -> list[dict]:
    """The browser console's errors."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = build_run(tmp_path_factory.mktemp("browser_run"))
    return write_report(run, max_sentences=2)


def test_report_renders_offline_in_chromium(report):
    with _chromium() as driver:
        driver.set_page_load_timeout(120)
        driver.get(report.resolve().as_uri())
        n_charts, n_drawn = _all_charts_drawn(driver)
        assert driver.execute_script("return typeof window.Plotly") == "object"
        html = report.read_text()
        assert n_charts == html.count('<div class="chart"') and n_charts >= 8
        assert n_drawn == n_charts
        # every chart has a drawing area with real size and at least one trace group
        sizes = driver.execute_script(
            "return Array.from(document.querySelectorAll('div.chart')).map(d => {"
            " const s = d.querySelector('svg.main-svg'); const r = s.getBoundingClientRect();"
            " return [r.width, r.height, d.querySelectorAll('g.trace, g.hm, g.heatmaplayer"
            " image, g.barlayer g.point').length]; });"
        )
        for width, height, traces in sizes:
            assert width > 100 and height > 100 and traces > 0, sizes
        # the inline SVG tree drawings are present too
        assert driver.execute_script("return document.querySelectorAll('svg.tree').length") >= 4
        # nothing was requested besides the page itself (inline scripts, styles and SVG only)
        fetched = _fetched(driver)
        assert fetched == [], fetched
        errors = _severe(driver)
        assert not errors, f"console errors: {errors}"
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "report.png"
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(max(int(height), 800), 16000))
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000


def test_harness_sees_fetches_and_blocks_them(tmp_path):
    """A negative control: a page that loads a remote image and a CDN script is caught by
    both checks above, and the requests fail because networking is off."""
    page = tmp_path / "fetches.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="http://example.com/x.png">'
        '<script src="https://cdn.example.com/lib.js"></script></body></html>'
    )
    with _chromium() as driver:
        driver.get(page.resolve().as_uri())
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        fetched = _fetched(driver)
        assert sorted(fetched) == ["http://example.com/x.png", "https://cdn.example.com/lib.js"]
        severe = [e["message"] for e in _severe(driver)]
        assert len(severe) == 2 and all("ERR_" in m for m in severe), severe


@pytest.mark.parametrize("required", [False, True])
def test_missing_browser_skips_or_fails_with_the_reason(monkeypatch, tmp_path, required):
    import tests.analysis.report.test_report_browser as me

    monkeypatch.setattr(me, "_binary", lambda *names: None)
    monkeypatch.setattr(me, "REQUIRED", required)
    expected = pytest.fail.Exception if required else pytest.skip.Exception
    with pytest.raises(expected, match="apt-get install -y chromium chromium-driver"):
        me._start_chromium(str(tmp_path))


def test_notebook_sections_share_one_library_in_chromium(report, tmp_path, monkeypatch):
    """Two sections shown in one notebook kernel: plotly.js comes once, with the first, and
    both draw offline, even when the cell without the library runs before the one with it
    (its charts wait for the library)."""
    import sys
    import types

    from hierlens.analysis.report import show

    shell = types.SimpleNamespace()
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    first = show(report.parent, "training")._repr_html_()
    second = show(report.parent, "training")._repr_html_()
    assert (first + second).count("plotly.js v") == 1
    page = tmp_path / "notebook.html"
    page.write_text(f"<!DOCTYPE html><html><body>{second}{first}</body></html>")
    with _chromium() as driver:
        driver.get(page.resolve().as_uri())
        n_charts, _ = _all_charts_drawn(driver)
        assert n_charts == (first + second).count('<div class="chart"') >= 2
        fetched = _fetched(driver)
        assert fetched == [], fetched
        errors = _severe(driver)
        assert not errors, f"console errors: {errors}"
