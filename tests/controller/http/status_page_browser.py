#!/usr/bin/python3
"""Drives Debian's headless Chromium (chromedriver, python3-selenium) against the status page.

Called by status_page_browser_test with the page URL, a viewer token and a directory where it
signals its progress to the test (files `ready`, `degraded`); the test injects the fault and
repairs it. Exits 0 when the page showed the stack healthy, then degraded (with its finding),
then healthy again, all without a reload, on a phone-sized window.
"""
import argparse
import os
import ssl
import sys
import tempfile
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def signal(directory, name):
    with open(os.path.join(directory, name), "w") as f:
        f.write(name)


def status_without_token(url):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        urllib.request.urlopen(url + "api/state", context=ctx, timeout=10)
        return 200
    except urllib.error.HTTPError as e:
        return e.code


def card_state(driver, stack):
    # Read in the page, in one go: the card is replaced on every update.
    return driver.execute_script(
        "const c = document.querySelector('[data-stack=\"' + arguments[0] + '\"]');"
        "return c ? c.dataset.state : null;", stack)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--token", default="", help="a viewer token (a TLS port)")
    p.add_argument("--signal-dir", required=True)
    p.add_argument("--stack", default="demo")
    p.add_argument("--timeout", type=float, default=120)
    a = p.parse_args()

    code = status_without_token(a.url) if a.token else 401
    if code != 401:
        print("FAIL: /api/state without a token answered %d, want 401" % code)
        return 1

    profile = tempfile.mkdtemp(prefix="upkeep-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--ignore-certificate-errors", "--no-first-run", "--window-size=390,844",
                "--user-data-dir=" + profile):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        return drive(driver, a)
    except Exception as e:  # a timeout: say what the page showed
        print("FAIL: %s: %s" % (type(e).__name__, e))
        print("summary:", driver.find_element(By.ID, "summary").text)
        print("live:", driver.find_element(By.ID, "live").text)
        print("states:", driver.execute_script("return window.upkeepHistory"))
        for entry in driver.get_log("browser"):
            print("console:", entry)
        return 1
    finally:
        driver.quit()


def drive(driver, a):
    if True:
        driver.get(a.url + ("?token=" + a.token if a.token else ""))
        wait = WebDriverWait(driver, a.timeout, poll_frequency=0.05)
        wait.until(lambda d: card_state(d, a.stack) == "healthy")
        wait.until(lambda d: d.execute_script("return document.getElementById('live').textContent")
                   == "live")
        loaded_at = driver.execute_script("return window.upkeepLoadedAt")
        signal(a.signal_dir, "ready")

        wait.until(lambda d: card_state(d, a.stack) == "degraded")
        codes = driver.execute_script(
            "return Array.from(document.querySelectorAll("
            "'[data-stack=\"' + arguments[0] + '\"] .finding')).map((e) => e.dataset.code);",
            a.stack)
        print("degraded with findings:", codes)
        if not codes:
            print("FAIL: degraded but no finding shown")
            return 1
        signal(a.signal_dir, "degraded")

        wait.until(lambda d: card_state(d, a.stack) == "healthy")
        history = driver.execute_script("return window.upkeepHistory[arguments[0]]", a.stack)
        print("states shown:", history)
        if driver.execute_script("return window.upkeepLoadedAt") != loaded_at:
            print("FAIL: the page reloaded")
            return 1
        if "degraded" not in history or history[-1] != "healthy":
            print("FAIL: history", history)
            return 1
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth")
        if overflow > 1:
            print("FAIL: %dpx wider than a phone screen" % overflow)
            return 1
        print("OK")
        return 0


if __name__ == "__main__":
    sys.exit(main())
