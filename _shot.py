import sys, time, subprocess, socket
from playwright.sync_api import sync_playwright
url = sys.argv[1]; out = sys.argv[2]
with sync_playwright() as p:
    b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox","--disable-gpu","--disable-background-networking","--disable-component-update","--disable-sync","--no-first-run"])
    pg = b.new_page(viewport={"width": 1400, "height": 1000})
    pg.goto(url); pg.wait_for_timeout(int(sys.argv[3]) if len(sys.argv)>3 else 5000)
    pg.screenshot(path=out, full_page=True)
    print(pg.url)
    b.close()
