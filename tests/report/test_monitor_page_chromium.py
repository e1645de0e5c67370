"""The monitor's page opens in a real browser: it renders, every figure loads, no errors."""

import pytest

from sgdtemp.report.monitor_page import build_monitor_page
from tests.monitor.conftest import write_monitor_log


@pytest.mark.slow
def test_the_monitor_page_renders_in_chromium_without_errors(chromium, tmp_path):
    log = tmp_path / "log.jsonl"
    write_monitor_log(log, steps=20)
    page = build_monitor_page(log, tmp_path)
    result = chromium(page.html)
    assert result.errors == []
    assert result.title == "sgdtemp monitor: log.jsonl"
    assert len(result.images) == len(page.figures) == 4
    assert all(img["complete"] and img["width"] > 0 for img in result.images), result.images
