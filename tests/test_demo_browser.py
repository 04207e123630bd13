"""The demo in a real browser: Debian's headless Chromium driven by Selenium. Load the page, upload
a face photo, pick the detected face, run Generate, wait for the image, save a screenshot; start a
long generation, press Cancel, see it cancelled (nothing kept), then Generate again.

Skips (saying why) where Chromium or its driver is not installed, except when IDGEN_REQUIRE_BROWSER=1
(set by `.ci/run`, which installs the `chromium` and `chromium-driver` packages): then it fails.
"""

import importlib.util
import os
import shutil
import socket

import pytest

from conftest import SHARED

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"


def _browser_or_skip():
    missing = [p for p in (CHROMIUM, shutil.which("chromedriver")) if not p or not os.path.exists(p)]
    reason = None
    if importlib.util.find_spec("selenium") is None:
        reason = "selenium is not installed (pip install 'idgen[test]')"
    if missing:
        reason = "Debian's chromium / chromium-driver are not installed (apt-get install chromium chromium-driver)"
    if reason:
        if os.environ.get("IDGEN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"IDGEN_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,2400",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def demo_ctx(tmp_path_factory):
    from idgen.app.demo import DemoContext

    return DemoContext(tiny=True, root=tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def app_url(demo_ctx):
    from idgen.app.demo import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(demo_ctx)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def open_with_a_face(browser, app_url):
    """Load the page, upload a face photo, pick its face and choose FaceID; returns the wait."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 120)
    browser.get(app_url)
    wait.until(ec.presence_of_element_located((By.ID, "gen-run")))
    upload = browser.find_element(By.CSS_SELECTOR, "#gen-faces input[type=file]")
    upload.send_keys(str(SHARED / "faces" / "portrait_glasses.jpg"))
    wait.until(lambda d: "portrait_glasses" in d.find_element(By.ID, "gen-faces").text)
    # the face picker: the detected face appears (keypoints drawn); a click picks it
    face = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#gen-found img")))
    face.click()
    index = browser.find_element(By.CSS_SELECTOR, "#gen-face-index input")
    wait.until(lambda d: index.get_attribute("value") == "0")
    method = browser.find_element(By.CSS_SELECTOR, "#gen-method input[value=faceid]")
    browser.execute_script("arguments[0].click();", method)
    return wait


def wait_for_image(browser, wait):
    """The first result image, once loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    image = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#gen-results img")))
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image))
    return image


def set_steps(browser, wait, steps: int) -> None:
    """Type `steps` into the Advanced accordion's Steps box (opening it first)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def visible_box(d):
        boxes = d.find_elements(By.CSS_SELECTOR, "#gen-steps input")
        return boxes[0] if boxes and boxes[0].is_displayed() else None

    if visible_box(browser) is None:  # a closed accordion may not render its children at all
        toggle = browser.find_element(By.CSS_SELECTOR, "#gen-advanced button, #gen-advanced .label-wrap")
        browser.execute_script("arguments[0].click();", toggle)
    box = wait.until(visible_box)
    box.clear()
    box.send_keys(str(steps), Keys.TAB)


def test_generate_in_a_real_browser(browser, app_url, tmp_path):
    from selenium.webdriver.common.by import By

    wait = open_with_a_face(browser, app_url)
    assert "tiny embedded default" in browser.find_element(By.ID, "tiny-banner").text
    browser.find_element(By.ID, "gen-run").click()

    image = wait_for_image(browser, wait)
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 64  # FaceID's default: the tiny UNet's size
    shot = tmp_path / "demo-generate.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_cancel_in_a_real_browser(browser, app_url, demo_ctx, tmp_path):
    from selenium.webdriver.common.by import By

    wait = open_with_a_face(browser, app_url)
    kept = sorted(demo_ctx.root.glob("results/*/faceid-*"))
    set_steps(browser, wait, 500)
    browser.find_element(By.ID, "gen-run").click()
    wait.until(lambda d: demo_ctx.running() and "denoising" in d.find_element(By.TAG_NAME, "body").text)
    browser.find_element(By.ID, "gen-cancel").click()
    wait.until(lambda d: "Cancelled" in d.find_element(By.ID, "gen-status").text)
    wait.until(lambda d: not demo_ctx.running())  # the worker stopped, within a step
    assert not browser.find_elements(By.CSS_SELECTOR, "#gen-results img")
    assert sorted(demo_ctx.root.glob("results/*/faceid-*")) == kept  # nothing of it was kept
    browser.save_screenshot(str(tmp_path / "demo-cancelled.png"))

    set_steps(browser, wait, 2)  # and the next Generate runs as usual
    browser.find_element(By.ID, "gen-run").click()
    wait.until(lambda d: d.find_element(By.ID, "gen-status").text == "")
    image = wait_for_image(browser, wait)
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 64
    assert len(sorted(demo_ctx.root.glob("results/*/faceid-*"))) == len(kept) + 1



def test_two_people_assigned_to_regions_in_a_real_browser(browser, app_url, demo_ctx, tmp_path):
    """A group photo's two faces picked in the face gallery, each added as a person with its
    region, then one generation with both: the record has both people in their regions."""
    import json

    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    faces = SHARED / "faces"
    left, right = (Image.open(faces / name).convert("RGB").resize((400, 400))
                   for name in ("portrait_glasses.jpg", "portrait_smile.jpg"))
    group = tmp_path / "group.png"
    Image.fromarray(np.hstack([np.asarray(left), np.asarray(right)])).save(group)

    wait = WebDriverWait(browser, 120)
    browser.get(app_url)
    wait.until(ec.presence_of_element_located((By.ID, "gen-run")))
    browser.find_element(By.CSS_SELECTOR, "#gen-faces input[type=file]").send_keys(str(group))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gen-found img")) == 2)
    toggle = browser.find_element(By.CSS_SELECTOR, "#gen-people-section button, #gen-people-section .label-wrap")
    browser.execute_script("arguments[0].click();", toggle)
    wait.until(lambda d: d.find_element(By.ID, "gen-add-person").is_displayed())

    def assign(item: int, region: str, *regions_so_far: str):
        browser.find_elements(By.CSS_SELECTOR, "#gen-found img")[item].click()
        box = browser.find_element(By.CSS_SELECTOR, "#gen-region input")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(region, Keys.ENTER)
        browser.find_element(By.ID, "gen-add-person").click()
        # Gradio's Dataframe renders its rows virtually (not one <tbody><tr> per row), so the
        # table's text is what shows that every person added so far is listed.
        wait.until(lambda d: all(r in d.find_element(By.ID, "gen-people").text
                                 for r in (*regions_so_far, region)))

    assign(0, "right")  # face 0 (the larger or first found) goes right, face 1 left
    assign(1, "left", "right")
    method = browser.find_element(By.CSS_SELECTOR, "#gen-method input[value=faceid]")
    browser.execute_script("arguments[0].click();", method)
    before = set(demo_ctx.root.glob("results/*/faceid-*/record.json"))
    browser.find_element(By.ID, "gen-run").click()
    wait_for_image(browser, wait)
    browser.save_screenshot(str(tmp_path / "demo-two-people.png"))
    (record_path,) = set(demo_ctx.root.glob("results/*/faceid-*/record.json")) - before
    record = json.loads(record_path.read_text())
    assert [(p["photos"][0].rsplit("#", 1)[1], p["box"]) for p in record["people"]] == [("0", "right"), ("1", "left")]
