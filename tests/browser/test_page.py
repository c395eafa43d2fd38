"""The web page and the API docs in headless Chromium, against the real app and checkpoint.

Each test loads a page, does what a person would (pick files, click), waits for what they
would see, compares it with the API's own answer, saves screenshots at a phone's and a wide
screen's width, and checks that the browser logged no errors and fetched nothing from another
host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.app.imaging import jpeg
from tests.app.test_platforms import expected as platform_score
from tests.app.test_platforms import save_platform_checkpoint
from tests.browser.conftest import SCREENSHOTS, LiveServer, serving

pytestmark = pytest.mark.slow

LIVE_RESPONSE = ".live-responses-table tbody"  # Swagger UI's answer to "Execute"
WIDTHS = {"phone": (390, 900), "wide": (1280, 1000)}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    files = {
        "cat.jpg": jpeg(320, 240, seed=3),
        "beach.jpg": jpeg(240, 320, seed=4),
        "notes.txt": b"hello world, not an image\n",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def wait(driver: WebDriver, seconds: float = 30) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, seconds)


def console_errors(driver: WebDriver) -> list[str]:
    """The browser's SEVERE log entries since the last call (reading the log clears it)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def foreign_resources(driver: WebDriver, origin: str) -> list[str]:
    """Every resource the page loaded (scripts, styles, images, fetches) not from `origin`."""
    names: list[str] = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    return [name for name in names if not name.startswith((origin, "blob:", "data:"))]


def screenshots(driver: WebDriver, name: str) -> None:
    """Full-page PNGs at both widths, then back to the wide window."""
    for label, (width, height) in WIDTHS.items():
        driver.set_window_size(width, height)
        full = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, max(height, min(int(full) + 140, 4000)))
        path = SCREENSHOTS / f"{name}-{label}.png"
        assert driver.save_screenshot(str(path)), path
    driver.set_window_size(*WIDTHS["wide"])


def open_page(driver: WebDriver, server: LiveServer, path: str = "/") -> None:
    driver.set_window_size(*WIDTHS["wide"])
    driver.get(server.url + path)
    console_errors(driver)  # drop what an earlier test left in the log


def loaded_overlays(driver: WebDriver, scope: str) -> list[Any]:
    images = driver.find_elements(By.CSS_SELECTOR, f"{scope} img[data-heatmap='loaded']")
    return [img for img in images if driver.execute_script("return arguments[0].naturalWidth", img)]


def api_score(server: LiveServer, path: Path) -> dict[str, Any]:
    files = {"images": (path.name, path.read_bytes())}
    response = httpx.post(f"{server.url}/score", files=files, timeout=30)
    assert response.status_code == 200, response.text
    entry: dict[str, Any] = response.json()["results"][0]
    return entry


def test_page_scores_images_with_overlays_and_regions(
    browser: WebDriver, live_server: LiveServer, images: dict[str, Path]
) -> None:
    driver = browser
    open_page(driver, live_server)
    wait(driver).until(ec.text_to_be_present_in_element((By.ID, "model"), "tiny"))
    assert "CC0-1.0" in driver.find_element(By.ID, "model").text  # the checkpoint's licence

    chosen = [images["cat.jpg"], images["beach.jpg"]]
    driver.find_element(By.ID, "score-files").send_keys("\n".join(str(p) for p in chosen))
    wait(driver).until(lambda d: len(loaded_overlays(d, "#score-results")) == 2)
    wait(driver).until(
        lambda d: all(
            box.get_attribute("data-count") is not None
            for box in d.find_elements(By.CSS_SELECTOR, "#score-results .boxes")
        )
    )
    for path in chosen:
        card = driver.find_element(
            By.XPATH, f"//li[contains(@class,'card')][.//span[text()='{path.name}']]"
        )
        expected = api_score(live_server, path)
        assert card.get_attribute("data-image-id") == expected["image_id"]
        assert card.find_element(By.CLASS_NAME, "score").text == f"{expected['score']:.3f}"
        assert card.find_element(By.CLASS_NAME, "percentile").text.startswith(
            f"{expected['percentile']:.1f}"
        )
    boxes = driver.find_elements(By.CSS_SELECTOR, "#score-results .box")
    assert boxes, "the tiny network's maps have at least one salient region per image"
    assert all(box.is_displayed() for box in boxes)
    screenshots(driver, "score")

    driver.find_element(By.ID, "show-regions").click()  # regions off
    assert not any(box.is_displayed() for box in boxes)
    driver.find_element(By.ID, "show-regions").click()

    before = [img.get_attribute("src") for img in loaded_overlays(driver, "#score-results")]
    Select(driver.find_element(By.ID, "colormap")).select_by_visible_text("viridis")
    wait(driver).until(
        lambda d: (
            {img.get_attribute("src") for img in loaded_overlays(d, "#score-results")}.isdisjoint(
                before
            )
            and len(loaded_overlays(d, "#score-results")) == 2
        )
    )
    assert console_errors(driver) == []
    assert foreign_resources(driver, live_server.url) == []


def test_page_compares_two_images(
    browser: WebDriver, live_server: LiveServer, images: dict[str, Path]
) -> None:
    driver = browser
    open_page(driver, live_server)
    a, b = images["cat.jpg"], images["beach.jpg"]
    driver.find_element(By.ID, "compare-a").send_keys(str(a))
    driver.find_element(By.ID, "compare-b").send_keys(str(b))
    driver.find_element(By.ID, "compare-button").click()
    verdict = wait(driver).until(ec.visibility_of_element_located((By.ID, "compare-result")))
    wait(driver).until(lambda d: len(loaded_overlays(d, "#compare")) == 2)

    files = {"image_a": (a.name, a.read_bytes()), "image_b": (b.name, b.read_bytes())}
    expected = httpx.post(f"{live_server.url}/compare", files=files, timeout=30).json()
    assert verdict.get_attribute("data-winner") == expected["winner"]
    assert f"{expected['probability_a_more_viral']:.3f}" in verdict.text
    winner = driver.find_element(By.CSS_SELECTOR, "#compare figure.winner img")
    assert winner.get_attribute("alt").endswith((a if expected["winner"] == "a" else b).name)
    screenshots(driver, "compare")
    assert console_errors(driver) == []
    assert foreign_resources(driver, live_server.url) == []


def test_page_explains_an_api_error(
    browser: WebDriver, live_server: LiveServer, images: dict[str, Path]
) -> None:
    driver = browser
    open_page(driver, live_server)
    driver.find_element(By.ID, "score-files").send_keys(str(images["notes.txt"]))
    alert = wait(driver).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "#score-results .error"))
    )
    assert alert.text.startswith("Not an image in an accepted format")
    assert "notes.txt" in alert.text
    assert "Accepted: JPEG, PNG" in alert.text
    assert alert.get_attribute("data-code") == "unsupported_format"
    screenshots(driver, "error")
    # The refused upload is the only thing the browser may log: its 415 answer.
    errors = console_errors(driver)
    assert errors
    assert all("status of 415" in message for message in errors), errors


def test_docs_try_it_out_scores_two_files(
    browser: WebDriver, live_server: LiveServer, images: dict[str, Path]
) -> None:
    driver = browser
    open_page(driver, live_server, "/docs")
    operation = wait(driver).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, "#operations-scoring-score_score_post"))
    )
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    body = wait(driver).until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, "#operations-scoring-score_score_post .opblock-body")
        )
    )
    try_it = body.find_elements(By.CSS_SELECTOR, "button.try-out__btn")
    if try_it and "Cancel" not in try_it[0].text:
        try_it[0].click()
    add_item = wait(driver).until(
        lambda d: body.find_element(By.XPATH, ".//button[contains(., 'Add')]")
    )
    while len(body.find_elements(By.CSS_SELECTOR, "input[type='file']")) < 2:
        add_item.click()
    pickers = body.find_elements(By.CSS_SELECTOR, "input[type='file']")
    for picker, path in zip(pickers, (images["cat.jpg"], images["beach.jpg"]), strict=False):
        picker.send_keys(str(path))
    body.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = wait(driver).until(
        lambda d: body.find_element(By.CSS_SELECTOR, f"{LIVE_RESPONSE} .response-col_status")
    )
    wait(driver).until(lambda d: status.text.strip() != "")
    assert status.text.strip().startswith("200"), status.text
    response = body.find_element(By.CSS_SELECTOR, f"{LIVE_RESPONSE} .microlight").text
    assert response.count('"image_id"') == 2
    driver.execute_script("arguments[0].scrollIntoView()", operation)
    screenshots(driver, "docs-try-it-out")
    assert console_errors(driver) == []
    assert foreign_resources(driver, live_server.url) == []


def test_redoc_renders_offline(browser: WebDriver, live_server: LiveServer) -> None:
    driver = browser
    open_page(driver, live_server, "/redoc")
    wait(driver).until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Score images"))
    screenshots(driver, "redoc")
    # ReDoc 2.5.4 always asks its CDN for the Redocly logo in its sidebar's footer; offline it
    # fails and ReDoc drops the image (onError). That is the only foreign request allowed.
    logo = "https://cdn.redoc.ly/redoc/logo-mini.svg"
    assert [e for e in console_errors(driver) if not e.startswith(logo)] == []
    assert foreign_resources(driver, live_server.url) in ([], [logo])


def test_page_scores_with_the_platform_the_user_picks(
    browser: WebDriver, images: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    driver = browser
    folder = tmp_path_factory.mktemp("platforms")
    with serving(save_platform_checkpoint(folder)) as server:
        open_page(driver, server)
        select = Select(driver.find_element(By.ID, "platform"))
        wait(driver).until(lambda d: len(select.options) == 3)
        assert driver.find_element(By.ID, "platform-row").is_displayed()
        select.select_by_value("b")
        path = images["cat.jpg"]
        driver.find_element(By.ID, "score-files").send_keys(str(path))
        wait(driver).until(lambda d: len(loaded_overlays(d, "#score-results")) == 1)
        shown = driver.find_element(By.CSS_SELECTOR, "#score-results .score").text
        score, _ = platform_score(folder, path.read_bytes(), "b")
        assert shown == f"{score:.3f}"
        assert shown != f"{platform_score(folder, path.read_bytes(), 'a')[0]:.3f}"
        assert console_errors(driver) == []


def test_the_platform_choice_is_hidden_for_a_single_head(
    browser: WebDriver, live_server: LiveServer
) -> None:
    open_page(browser, live_server)
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "model"), "tiny"))
    assert not browser.find_element(By.ID, "platform-row").is_displayed()
