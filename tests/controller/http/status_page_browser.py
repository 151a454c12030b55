#!/usr/bin/python3
"""Drives Debian's headless Chromium (chromedriver, python3-selenium) against the status page.

Called by status_page_browser_test with the page URL and a directory where it signals its
progress to the test (files `ready`, `degraded`); the test injects the fault and repairs it.
Exits 0 when the page showed the stack healthy, then degraded (with its finding), then healthy
again, all without a reload, on a phone-sized window.

Over HTTPS (--ca, a viewer token in $UPKEEP_VIEWER_TOKEN) it first checks that the page
refuses requests without credentials or with a wrong token (an HTTPS client that verifies the
controller against the fleet CA, then the browser itself), then opens `?token=` once as a
viewer does. Chromium trusts the fleet CA as a viewer's browser would (certutil, libnss3-tools,
into the NSS database of a throw-away HOME), so it verifies the controller's certificate and
resumes TLS sessions on its later connections.
"""
import argparse
import os
import shutil
import ssl
import subprocess
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


def https_status(url, ca, headers=None):
    """The HTTP status of a GET over HTTPS, the server verified against the fleet CA."""
    ctx = ssl.create_default_context(cafile=ca)
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def trust_ca(home, ca):
    """Adds the fleet CA as a trusted root to the NSS database of a browser whose HOME is home."""
    db = os.path.join(home, ".pki", "nssdb")
    os.makedirs(db)
    subprocess.run(["certutil", "-N", "-d", "sql:" + db, "--empty-password"], check=True)
    subprocess.run(["certutil", "-A", "-d", "sql:" + db, "-n", "upkeep fleet CA", "-t", "C,,",
                    "-i", ca], check=True)


def refuses_without_credentials(a):
    """The security property: nothing but /healthz answers without a viewer."""
    ok = True
    for path in ("", "api/state", "api/events", "metrics", "app.js"):
        for headers in ({}, {"Authorization": "Bearer upk_not-a-token"},
                        {"Cookie": "upkeep_token=upk_not-a-token"}):
            code = https_status(a.url + path, a.ca, headers)
            if code != 401:
                print("FAIL: /%s with %s answered %d, want 401" % (path, headers or "nothing",
                                                                 code))
                ok = False
    if https_status(a.url + "healthz", a.ca) != 200:
        print("FAIL: /healthz without credentials is not 200")
        ok = False
    if https_status(a.url + "api/state", a.ca, {"Authorization": "Bearer " + a.token}) != 200:
        print("FAIL: /api/state with the viewer token is not 200")
        ok = False
    return ok


def network_errors_free(driver):
    """False (and says which) when the browser's console logged a failed load (net::ERR_...)."""
    errors = [e["message"] for e in driver.get_log("browser") if "net::ERR_" in e["message"]]
    for message in errors:
        print("FAIL: a load failed:", message)
    return not errors


def card_state(driver, stack):
    # Read in the page, in one go: the card is replaced on every update.
    return driver.execute_script(
        "const c = document.querySelector('[data-stack=\"' + arguments[0] + '\"]');"
        "return c ? c.dataset.state : null;", stack)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--ca", default="", help="the fleet CA (an HTTPS page)")
    p.add_argument("--signal-dir", required=True)
    p.add_argument("--stack", default="demo")
    p.add_argument("--timeout", type=float, default=120)
    a = p.parse_args()
    a.token = os.environ.get("UPKEEP_VIEWER_TOKEN", "")
    a.https = a.url.startswith("https://")
    if a.https and not (a.ca and a.token):
        print("FAIL: an https URL needs --ca and $UPKEEP_VIEWER_TOKEN")
        return 2
    if a.https and not refuses_without_credentials(a):
        return 1

    profile = tempfile.mkdtemp(prefix="upkeep-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--window-size=390,844", "--user-data-dir=" + profile):
        options.add_argument(arg)
    env = dict(os.environ)
    if a.https:
        # The viewer's browser trusts the fleet CA: Chromium reads $HOME/.pki/nssdb. No flag
        # that ignores certificate errors (Chromium caches no TLS session for such a
        # connection, so it would never resume one, which is what browsers do).
        env["HOME"] = profile
        trust_ca(profile, a.ca)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver", env=env), options=options)
    try:
        return drive(driver, a)
    except Exception as e:  # a timeout: say what the page showed
        print("FAIL: %s: %s" % (type(e).__name__, e))
        try:
            print("page:", driver.find_element(By.TAG_NAME, "body").text[:2000])
            print("states:", driver.execute_script("return window.upkeepHistory"))
        except Exception as inner:  # noqa: BLE001 -- a report, best effort
            print("page unreadable:", inner)
        for entry in driver.get_log("browser"):
            print("console:", entry)
        return 1
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def drive(driver, a):
    if True:
        wait = WebDriverWait(driver, a.timeout, poll_frequency=0.05)
        if a.https:
            # A browser without credentials gets the refusal, not the page.
            driver.get(a.url)
            body = driver.find_element(By.TAG_NAME, "body").text
            if not body.startswith("unauthenticated") or driver.find_elements(By.ID, "summary"):
                print("FAIL: the page without a token showed %r" % body[:200])
                return 1
            print("without a token:", body.strip())
        driver.get(a.url + ("?token=" + a.token if a.token else ""))
        if a.https:
            if driver.execute_script("return location.protocol") != "https:":
                print("FAIL: not an https page")
                return 1
            if "upkeep_token" in driver.execute_script("return document.cookie"):
                print("FAIL: the token cookie is readable by scripts (want HttpOnly)")
                return 1
        wait.until(lambda d: card_state(d, a.stack) == "healthy")
        wait.until(lambda d: d.execute_script("return document.getElementById('live').textContent")
                   == "live")
        loaded_at = driver.execute_script("return window.upkeepLoadedAt")
        # Every load must succeed, each on the first try: a dozen reads in a row open new
        # connections (the server closes a keep-alive connection after a few requests), which
        # a browser makes by resuming its TLS session. A server that refuses resumption fails
        # every third one with net::ERR_SSL_PROTOCOL_ERROR.
        statuses = driver.execute_async_script(
            "const done = arguments[arguments.length - 1]; const out = [];"
            "(async () => { for (let i = 0; i < 12; i++) {"
            "  try { out.push((await fetch('api/state', {cache: 'no-store'})).status); }"
            "  catch (e) { out.push(String(e)); } } done(out); })();")
        if any(s != 200 for s in statuses):
            print("FAIL: reads of api/state from the page:", statuses)
            network_errors_free(driver)  # says why
            return 1
        if not network_errors_free(driver):
            return 1
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
        if not network_errors_free(driver):
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
