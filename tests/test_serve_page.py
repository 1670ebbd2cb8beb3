"""The page at `/`, read from a real headless browser (Debian's chromium, driven by Selenium)."""

from __future__ import annotations

import shutil

import pytest

from nmt.config import Config, apply_overrides
from nmt.train import train
from nmt.translate import Translator
from tests.serving import running

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ready  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (BROWSER and DRIVER),
    reason="no chromium and chromedriver here (apt-get install chromium chromium-driver; "
    ".ci/run installs them)",
)
SENTENCES = ["Y dijo Dios: Sea la luz.", "En el principio creó Dios los cielos y la tierra."]


@pytest.fixture(scope="module")
def checkpoint(sample_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("page") / "run"
    sets = ["train.precision=fp32", "model.emb_size=16", "model.hidden_size=16",
            "train.batch_tokens=500", "train.max_steps=2", "decode.max_len_b=3"]  # fmt: skip
    train(apply_overrides(Config(), sets), sample_dir, run, progress_bar=False, log=lambda _: None)
    return run / "last.pt"


@pytest.fixture()
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    yield driver
    driver.quit()


def test_the_page_translates_and_draws_attention(checkpoint, browser):
    want = Translator.from_checkpoint(checkpoint, "cpu", "fp32").translate(SENTENCES)
    wait = WebDriverWait(browser, 60)
    with running(checkpoint) as server:
        browser.get(server.url + "/")
        wait.until(lambda b: "es → en" in b.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "source").send_keys("\n".join(SENTENCES))
        browser.find_element(By.ID, "translate").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#output .translation")) == 2)
        got = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#output .translation")]
        assert got == [w.strip() for w in want]  # the page shows what the API answered
        browser.find_elements(By.CSS_SELECTOR, ".show-attention")[0].click()
        canvas = wait.until(ready.visibility_of_element_located((By.ID, "heatmap")))
        pieces = Translator.from_checkpoint(checkpoint, "cpu", "fp32").translate_nbest(
            SENTENCES[:1], attention=True
        )[0]
        assert int(canvas.get_attribute("data-cols")) == len(pieces.source_pieces)
        assert int(canvas.get_attribute("data-rows")) == len(pieces.hypotheses[0].pieces) + 1
        shaded = browser.execute_script(
            "const c = document.getElementById('heatmap');"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let n = 0; for (let i = 0; i < d.length; i += 4)"
            "  if (d[i + 2] === 255 && d[i] === d[i + 1] && d[i] < 250) n++;"
            "return n;"
        )
        assert shaded > 100  # cells of weight are drawn in shades of blue
        assert not browser.find_element(By.ID, "status").get_attribute("class")  # no error
