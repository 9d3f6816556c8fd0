"""The web app in a real browser: Debian's headless Chromium, driven by selenium through the system
chromedriver (nothing downloads a browser). Create a character, generate two prompts with it, see both images
in the gallery, get a clear message for a bad prompt with the server still serving, and check that the API
renders the very pixels the page shows.

By default the app runs on a tiny random SDXL built here. To run it on trained models and keep the screenshot
(the README's): COCOINS_APP_MODEL=models/base COCOINS_APP_MAPPER=models/mapper COCOINS_APP_STEPS=20
COCOINS_APP_SCREENSHOT=docs/images/app.png python -m pytest tests/test_app_browser.py
"""

import io
import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from front_models import SIZE, write_models
from PIL import Image

from cocoins.front.characters import CharacterLibrary
from cocoins.pipeline import CoCoInsPipeline

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1400")
PROMPTS = ("a photo of a <alice>woman</alice> in a green park", "a portrait of a <alice>woman</alice> at night")

pytestmark = [pytest.mark.slow,   # a browser, a server and renders: tens of seconds
              pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                                 reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"          # selenium-manager must never fetch a driver or browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 240.0, what: str = ""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def fill(driver, elem_id: str, text) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(str(text))


def gallery_sources(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    sources = [img.get_attribute("src") for img in driver.find_elements(By.CSS_SELECTOR, "#gallery img")]
    return list(dict.fromkeys(s for s in sources if s))


def status(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "status").text


def test_create_generate_twice_and_the_api_draws_the_same_pixels(browser, tmp_path):
    from selenium.webdriver.common.by import By

    from cocoins.front.app import launch

    if os.environ.get("COCOINS_APP_MODEL"):
        model, mapper = os.environ["COCOINS_APP_MODEL"], os.environ["COCOINS_APP_MAPPER"]
    else:
        dirs = write_models(tmp_path / "models")
        model, mapper = dirs / "model", dirs / "mapper"
    steps = os.environ.get("COCOINS_APP_STEPS", "2")
    library = CharacterLibrary(tmp_path / "library")
    port = free_port()
    page = launch(CoCoInsPipeline.from_pretrained(model, mapper=mapper), library, port=port, block=False)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#new-name textarea, #new-name input"),
                 what="the page")
        fill(browser, "new-name", "alice")
        fill(browser, "new-seed", 7)
        browser.find_element(By.ID, "create").click()
        wait_for(lambda: "created alice" in status(browser), what="the character")
        for name, value in (("seed", 1), ("steps", steps), ("height", SIZE), ("width", SIZE)):
            fill(browser, name, value)
        for i, prompt in enumerate(PROMPTS, start=1):
            fill(browser, "prompt", prompt)
            browser.find_element(By.ID, "generate").click()
            wait_for(lambda: len(gallery_sources(browser)) >= i, what=f"image {i} in the gallery")
        fill(browser, "prompt", "a <bob>man</bob>")
        browser.find_element(By.ID, "generate").click()
        wait_for(lambda: "no character 'bob'" in status(browser), what="the error message")
        shown = [np.asarray(Image.open(io.BytesIO(urllib.request.urlopen(src, timeout=30).read())).convert("RGB"))
                 for src in gallery_sources(browser)]
        assert len(shown) == 2
        if os.environ.get("COCOINS_APP_SCREENSHOT"):
            browser.save_screenshot(os.environ["COCOINS_APP_SCREENSHOT"])
    finally:
        page.close()
    api = CoCoInsPipeline.from_pretrained(model, mapper=mapper, library=library)
    out = api(list(PROMPTS), seed=1, num_inference_steps=int(steps), guidance_scale=5.0, height=SIZE, width=SIZE)
    for page_image, api_image in zip(shown, out.images):
        assert np.array_equal(page_image, np.asarray(api_image))
