"""Your own data in a real browser: upload a good CSV, then bad ones; the good data stays in use."""

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
    assert page.get_by_text("Using your data").is_visible()
    assert page.get_by_text("200 points, centred").is_visible()
    assert page.get_by_text("q fitted to custom:").first.is_visible()
    for name, content, message in [
        ("empty.csv", b"", "The file is empty"),
        ("three.csv", b"1,2,3\n4,5,6\n", "exactly two columns"),
        ("binary.csv", b"\x89PNG\r\n\x00\x00binary", "not a text file"),
    ]:
        upload(page, name, content)
        assert page.get_by_text(message).first.is_visible(), message
        assert page.get_by_text("Your previous data is still in use").is_visible()
        assert page.get_by_text("q fitted to custom:").first.is_visible()
    assert page.locator('[data-testid="stException"]').count() == 0
