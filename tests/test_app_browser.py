"""The web app in a real browser: Debian's headless Chromium, driven by selenium through the system
chromedriver, both found on PATH (nothing downloads a browser). Create a character, generate two prompts with
it, create a second character from an uploaded photo and its mask, see both images decoded in the browser's
gallery, get a clear message for a bad prompt, generate a third prompt after it (the app still serves), and check
that the API renders the very pixels the page shows. The page
that ends the test (three prompts of one character, a clean status line, no machine path) is the README's
screenshot.

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

import numpy as np
import pytest
from front_models import SIZE, write_models
from PIL import Image
from system_deps import require

from cocoins.characters.library import CharacterLibrary
from cocoins.pipeline import CoCoInsPipeline

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1800")
PROMPTS = ("a photo of a <alice>woman</alice> in a green park", "a portrait of a <alice>woman</alice> at night",
           "a <alice>woman</alice> reading in a library")   # the third after the in-page error

pytestmark = pytest.mark.slow   # a browser, a server and renders: tens of seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    require(CHROMIUM is not None and CHROMEDRIVER is not None, "chromium or chromedriver (not on PATH)",
            "apt-get install chromium chromium-driver (.ci/run installs them)")
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


def decoded_widths(driver) -> list[int]:
    """naturalWidth of every gallery image: above 0 once the browser decoded it (0 for a broken image)."""
    return driver.execute_script("return Array.from(document.querySelectorAll('#gallery img'))"
                                 ".map(img => img.complete ? img.naturalWidth : 0)")


def status(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "status").text


def upload(driver, elem_id: str, path) -> None:
    """Put a file into a Gradio File component, as choosing it in the file dialog does, and wait until the server
    holds it: the component then links the stored copy for download under the file's name. (Its visible text
    splits the name into stem and extension on two lines, so the name is never in `.text` whole.)"""
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))
    stored = f'#{elem_id} a[download="{path.name}"]'
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, stored), what=f"{path.name} uploaded")


def test_create_generate_twice_and_the_api_draws_the_same_pixels(browser, tmp_path):
    import hashlib

    from selenium.webdriver.common.by import By
    from test_from_image import _photo_and_mask

    from cocoins.front.app import launch
    from cocoins.method.code_inversion import CodeInversionConfig

    if os.environ.get("COCOINS_APP_MODEL"):
        model, mapper = os.environ["COCOINS_APP_MODEL"], os.environ["COCOINS_APP_MAPPER"]
    else:
        dirs = write_models(tmp_path / "models")
        model, mapper = dirs / "model", dirs / "mapper"
    steps = os.environ.get("COCOINS_APP_STEPS", "2")
    library = CharacterLibrary(tmp_path / "library")
    port = free_port()
    pipe = CoCoInsPipeline.from_pretrained(model, mapper=mapper)
    photo, mask = _photo_and_mask(size=pipe.default_size)
    (tmp_path / "carol.png").write_bytes(photo)
    (tmp_path / "carol-mask.png").write_bytes(mask)
    page = launch(pipe, library, port=port, block=False, fit=CodeInversionConfig(steps=2, noises=2, candidates=4))
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#new-name textarea, #new-name input"),
                 what="the page")
        fill(browser, "new-name", "alice")
        fill(browser, "new-seed", 7)
        browser.find_element(By.ID, "create").click()
        wait_for(lambda: "created alice" in status(browser), what="the character")
        upload(browser, "photo", tmp_path / "carol.png")
        upload(browser, "photo-mask", tmp_path / "carol-mask.png")
        fill(browser, "new-name", "carol")
        browser.find_element(By.ID, "create").click()
        wait_for(lambda: "created carol from the photo" in status(browser), what="the character from the photo")
        assert library.get("carol").source["photo_sha256"] == hashlib.sha256(photo).hexdigest()
        for name, value in (("seed", 1), ("steps", steps), ("height", SIZE), ("width", SIZE)):
            fill(browser, name, value)

        def generate(prompt: str, images: int) -> None:
            fill(browser, "prompt", prompt)
            browser.find_element(By.ID, "generate").click()
            wait_for(lambda: len(gallery_sources(browser)) >= images, what=f"image {images} in the gallery")

        for i, prompt in enumerate(PROMPTS[:2], start=1):
            generate(prompt, i)
        fill(browser, "prompt", "a <bob>man</bob>")
        browser.find_element(By.ID, "generate").click()
        wait_for(lambda: "no character 'bob'" in status(browser), what="the error message")
        assert len(gallery_sources(browser)) == 2   # the error left the gallery as it was
        generate(PROMPTS[2], 3)                     # ... and the app still serves
        wait_for(lambda: "error" not in status(browser).lower(), what="a status line without the error")
        widths = wait_for(lambda: (w := decoded_widths(browser)) and all(w) and w, what="the images decoded")
        assert len(widths) == 3 and min(widths) > 0, widths
        text = browser.find_element(By.TAG_NAME, "body").text
        assert str(tmp_path) not in text and "/tmp" not in text, "a machine path is shown on the page"
        shown = [np.asarray(Image.open(io.BytesIO(urllib.request.urlopen(src, timeout=30).read())).convert("RGB"))
                 for src in gallery_sources(browser)]
        assert len(shown) == 3
        if os.environ.get("COCOINS_APP_SCREENSHOT"):
            browser.save_screenshot(os.environ["COCOINS_APP_SCREENSHOT"])
    finally:
        page.close()
    api = CoCoInsPipeline.from_pretrained(model, mapper=mapper, library=library)
    out = api(list(PROMPTS), seed=1, num_inference_steps=int(steps), guidance_scale=5.0, height=SIZE, width=SIZE)
    for page_image, api_image in zip(shown, out.images):
        assert np.array_equal(page_image, np.asarray(api_image))
