"""The report opens in a real browser: it renders, every figure loads, no console errors."""

import pytest

# 1x1 transparent PNG
_PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5E"
    "rkJggg=="
)


@pytest.mark.slow
def test_the_report_renders_in_chromium_without_errors(chromium, built_report):
    page = chromium(built_report.html)
    assert page.errors == []
    assert page.title.startswith("sgdtemp")
    assert len(page.images) == built_report.figures >= 8  # sweep, two-minima, stationary
    assert all(img["complete"] and img["width"] > 0 for img in page.images), page.images


@pytest.mark.slow
def test_a_stationary_report_renders_in_chromium(chromium, built_stationary_report):
    page = chromium(built_stationary_report.html)
    assert page.errors == []
    assert len(page.images) == built_stationary_report.figures >= 7  # with the mechanisms
    assert any(img["alt"].startswith("The three curvature mechanisms") for img in page.images)
    assert all(img["complete"] and img["width"] > 0 for img in page.images), page.images


@pytest.mark.slow
def test_the_browser_check_sees_broken_images_and_console_errors(chromium, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body>"
        f"<img alt='ok' src='data:image/png;base64,{_PIXEL}'>"
        "<img alt='broken' src='data:image/png;base64,AAAA'>"
        "<script>console.error('boom')</script></body></html>"
    )
    result = chromium(page)
    widths = {img["alt"]: img["width"] for img in result.images}
    assert widths == {"ok": 1, "broken": 0}
    assert any(kind == "console" and "boom" in str(detail) for kind, detail in result.errors)
