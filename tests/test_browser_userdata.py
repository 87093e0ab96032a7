"""Your own data in a real browser: upload a good CSV, then bad ones; the good data stays in use."""

import re

import pytest

from conftest import wait_for_app

pytestmark = pytest.mark.browser

GOOD = "x,y\n" + "\n".join(f"{i * 0.37 % 5:.3f},{(i * 1.13) % 3:.3f}" for i in range(200))


def upload(page, name, content: bytes):
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        files=[{"name": name, "mimeType": "text/csv", "buffer": content}])
    page.wait_for_timeout(800)
    wait_for_app(page)


def test_upload_then_bad_uploads_keep_the_data(app_server, page):
    page.goto(app_server.url + "/demo?data=custom")
    wait_for_app(page)
    assert page.get_by_text("No data of your own yet").is_visible()
    upload(page, "mine.csv", GOOD.encode())
    page.get_by_text("Using your data").wait_for(timeout=60_000)  # the rerun can start late on a loaded machine
    assert page.get_by_text("200 points, centred").is_visible()
    assert page.get_by_text("q fitted to custom:").first.is_visible()
    for name, content, message in [
        ("empty.csv", b"", "The file is empty"),
        ("three.csv", b"1,2,3\n4,5,6\n", "exactly two columns"),
        ("binary.csv", b"\x89PNG\r\n\x00\x00binary", "not a text file"),
    ]:
        upload(page, name, content)
        page.get_by_text(message).first.wait_for(timeout=60_000)
        assert page.get_by_text("Your previous data is still in use").is_visible()
        assert page.get_by_text("q fitted to custom:").first.is_visible()
    assert page.locator('[data-testid="stException"]').count() == 0


def test_draw_points_with_the_lasso(app_server, page):
    page.goto(app_server.url + "/demo?data=custom")
    wait_for_app(page)
    page.get_by_role("button", name="Draw points…").click()
    page.locator('[role="dialog"]').get_by_text("lasso", exact=True).click()
    wait_for_app(page)
    plot = page.locator('[role="dialog"] [data-testid="stPlotlyChart"] .nsewdrag').first
    plot.wait_for(timeout=30_000)
    box = plot.bounding_box()
    x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x0 + 0.2 * w, y0 + 0.3 * h)
    page.mouse.down()
    for fx, fy in [(0.5, 0.2), (0.8, 0.4), (0.7, 0.7), (0.3, 0.7), (0.2, 0.35)]:
        page.mouse.move(x0 + fx * w, y0 + fy * h, steps=5)
    page.mouse.up()
    page.locator('[role="dialog"]').get_by_text("points", exact=False).last.wait_for()
    page.wait_for_timeout(1500)
    wait_for_app(page)
    page.locator('[role="dialog"] button', has_text="Use this drawing").click()
    page.wait_for_timeout(1000)
    wait_for_app(page)
    assert page.get_by_text("Using your data").is_visible()
    assert page.get_by_text("(your drawing)", exact=False).is_visible()
    assert page.locator('[data-testid="stException"]').count() == 0


def test_a_link_to_uploaded_data_opens_it_for_someone_else(app_server, page, browser):
    """A teacher uploads a file; the page's link names the data (data=custom:<digest>), and a student who opens
    that link in another browser trains on the same data."""
    page.goto(app_server.url + "/demo?data=custom")
    wait_for_app(page)
    upload(page, "class.csv", GOOD.encode())
    page.get_by_text("Using your data").wait_for(timeout=60_000)
    name = re.search(r"custom:[0-9a-f]{10}", page.get_by_text("q fitted to custom:").first.text_content()).group(0)
    other = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        student = other.new_page()
        student.goto(app_server.url + f"/demo?data={name}")
        wait_for_app(student)
        student.get_by_text("Using your data").wait_for(timeout=60_000)
        assert student.get_by_text("uploaded class.csv", exact=False).first.is_visible()
        student.get_by_text(f"q fitted to {name}").first.wait_for(timeout=60_000)  # its figure, once drawn
        assert student.locator('[data-testid="stException"]').count() == 0
    finally:
        other.close()


def test_click_a_spot_to_spray_points(app_server, page):
    page.goto(app_server.url + "/demo?data=custom")
    wait_for_app(page)
    page.get_by_role("button", name="Draw points…").click()
    dialog = page.locator('[role="dialog"]')
    plot = dialog.locator('[data-testid="stPlotlyChart"] .nsewdrag').first
    plot.wait_for(timeout=30_000)
    box = plot.bounding_box()
    counts = []
    for fx, fy in [(0.3, 0.3), (0.7, 0.6)]:  # two spots, one click each: 20 points around each (the default)
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"], steps=4)  # hover, then click
        page.wait_for_timeout(300)
        page.mouse.down()
        page.mouse.up()
        dialog.get_by_text(f"{20 * (len(counts) + 1)} points", exact=True).wait_for(timeout=30_000)
        counts.append(len(counts) + 1)
    wait_for_app(page)
    dialog.locator("button", has_text="Use this drawing").click()
    page.get_by_text("Using your data").wait_for(timeout=30_000)
    assert page.get_by_text("40 points, kept where they are", exact=False).is_visible()  # rescaling: opt-in
