"""Screenshots of an HTML report in headless Chromium (Debian's), for the README.

    python scripts/screenshot.py reports/showcase.html reports/showcase.png [UID]

Takes the overview and timeline, then opens one connection (the first with a warning, or UID) and takes its
ladder: NAME.png and NAME-ladder.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


def main(html: str, png: str, uid: str | None = None) -> None:
    page_path, out = Path(html).resolve(), Path(png)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(page_path.as_uri())
        page.wait_for_function("window.__tcpaReady === true")
        page.screenshot(path=str(out), full_page=False)
        if uid is None:
            uid = page.evaluate("""() => { const t = document.querySelector('#findings-list');
                return t ? (t.textContent.match(/C\\d{6}/) || [null])[0] : null; }""")
        if uid:
            page.evaluate(f"window.__tcpa.open(window.__tcpa.indexOf('{uid}'))")
            page.locator("#detail").scroll_into_view_if_needed()
            page.locator("#detail").screenshot(path=str(out.with_name(out.stem + "-ladder.png")))
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
