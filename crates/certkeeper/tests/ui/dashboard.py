#!/usr/bin/env python3
"""Drives the web dashboard (/ui/) in headless Chromium and fails on any browser console
error or warning.

    python dashboard.py --base-url https://127.0.0.1:PORT --admin-token TOKEN \
        --auditor-token TOKEN --search NAME --output DIR

Needs Selenium 4 (PyPI) and Debian's chromium and chromium-driver. Screenshots of every
view go to DIR; on failure DIR/failure.png shows the page as it was. Exit status 0 on
success (a JSON summary on stdout), 1 on failure (the reason on stderr).
"""

import argparse
import json
import os
import sys

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

WAIT_SECONDS = 15
VIEWS = ["executive", "oncall", "debug", "inventory", "audit"]
# Chromium reports any fetch answered with an error status as a console error. Step 2 sends
# a wrong token on purpose, so this message (for the dashboard request only) is expected
# there and nowhere else.
EXPECTED_401 = "Failed to load resource: the server responded with a status of 401"


class Failure(Exception):
    pass


class Run:
    def __init__(self, args):
        self.args = args
        self.base = args.base_url.rstrip("/")
        self.out = args.output
        self.step = "start"
        self.screenshots = []
        self.console = []
        self.facts = {}
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--ignore-certificate-errors",
            "--window-size=1400,1000",
            "--disable-dev-shm-usage",
        ):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(
            service=Service(executable_path="/usr/bin/chromedriver"), options=options
        )

    # -- helpers ------------------------------------------------------------------------

    def wait(self, condition, what):
        try:
            return WebDriverWait(
                self.driver, WAIT_SECONDS, ignored_exceptions=[StaleElementReferenceException]
            ).until(condition)
        except TimeoutException:
            raise Failure(f"timed out after {WAIT_SECONDS} s waiting for {what}") from None

    def visible(self, css):
        return self.wait(EC.visibility_of_element_located((By.CSS_SELECTOR, css)), f"{css} visible")

    def text_of(self, css):
        elements = self.driver.find_elements(By.CSS_SELECTOR, css)
        return (elements[0].get_attribute("textContent") or "").strip() if elements else ""

    def wait_text(self, css, predicate, what):
        def check(driver):
            elements = driver.find_elements(By.CSS_SELECTOR, css)
            if elements and elements[0].is_displayed():
                value = elements[0].text.strip()
                if predicate(value):
                    return value
            return False

        return self.wait(check, what)

    def wait_attr(self, css, name, value):
        def check(driver):
            elements = driver.find_elements(By.CSS_SELECTOR, css)
            return bool(elements) and elements[0].get_attribute(name) == value

        return self.wait(check, f"{css}[{name}={value!r}]")

    def shot(self, name):
        path = os.path.join(self.out, name)
        if not self.driver.save_screenshot(path):
            raise Failure(f"could not save screenshot {path}")
        self.screenshots.append(path)

    def check_console(self, allow_401=False):
        bad = []
        for entry in self.driver.get_log("browser"):
            if entry.get("level") not in ("SEVERE", "WARNING"):
                continue
            message = entry.get("message", "")
            if allow_401 and "/api/v1/dashboard" in message and EXPECTED_401 in message:
                continue
            bad.append(f"[{self.step}] {entry.get('level')}: {message}")
        self.console.extend(bad)
        if bad:
            raise Failure("browser console reported:\n  " + "\n  ".join(bad))

    def login(self, token, role):
        self.visible("#token")
        field = self.driver.find_element(By.ID, "token")
        field.clear()
        field.send_keys(token)
        self.driver.find_element(By.ID, "login").click()
        self.wait_text("#whoami", lambda t: role in t, f"#whoami to contain {role!r}")

    def open_view(self, view):
        self.driver.find_element(By.ID, f"nav-{view}").click()
        self.visible(f"#view-{view}")

    def wait_view_ready(self, view):
        if view == "executive":
            self.wait_text("#exec-valid-ratio", bool, "#exec-valid-ratio to be filled")
        elif view in ("oncall", "debug"):
            self.wait_attr(f"#view-{view}", "data-loaded", "true")
        elif view == "inventory":
            self.wait_attr("#inventory-results", "data-loaded", "true")
            self.wait_attr("#managed-table", "data-loaded", "true")
        elif view == "audit":
            self.wait(
                lambda d: len(d.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr.audit-row")) > 0,
                "at least one row in #audit-table",
            )

    # -- the scenario -------------------------------------------------------------------

    def run(self):
        d = self.driver
        args = self.args

        self.step = "1 login form"
        d.get(f"{self.base}/ui/")
        self.visible("#token")
        self.visible("#login")
        self.shot("01-login.png")
        self.check_console()

        self.step = "2 wrong token"
        field = d.find_element(By.ID, "token")
        field.send_keys("ck_wrong")
        d.find_element(By.ID, "login").click()
        error = self.wait_text("#login-error", bool, "#login-error to show a message")
        self.facts["login_error"] = error
        if d.execute_script("return sessionStorage.length") != 0:
            raise Failure("a rejected token was stored in sessionStorage")
        self.check_console(allow_401=True)

        self.step = "3 admin views"
        self.login(args.admin_token, "admin")
        for number, view in enumerate(VIEWS, start=2):
            self.open_view(view)
            self.wait_view_ready(view)
            self.shot(f"0{number}-{view}.png")
            self.check_console()

        self.step = "4 inventory search"
        self.open_view("inventory")
        search = d.find_element(By.ID, "search-name")
        search.clear()
        search.send_keys(args.search)
        d.find_element(By.ID, "search-button").click()
        self.wait_attr("#inventory-results", "data-query", args.search.strip())
        self.wait_attr("#inventory-results", "data-loaded", "true")
        wanted = args.search.strip().lower()

        def matching_row(driver):
            for row in driver.find_elements(By.CSS_SELECTOR, "#inventory-results .cert-row"):
                if wanted in row.text.lower():
                    return row
            return False

        row = self.wait(matching_row, f"a .cert-row containing {args.search!r}")
        self.facts["search_rows"] = len(d.find_elements(By.CSS_SELECTOR, "#inventory-results .cert-row"))
        link = row.find_element(By.CSS_SELECTOR, ".cert-link")
        serial = link.get_attribute("data-serial")
        if not serial:
            raise Failure(".cert-link has no data-serial")
        link.click()
        self.visible("#cert-detail")
        shown = self.wait_text("#detail-serial", lambda t: t == serial, f"#detail-serial to read {serial}")
        self.facts["serial"] = shown
        self.shot("07-certificate.png")
        self.check_console()

        self.step = "5 admin write controls"
        managed = len(d.find_elements(By.CSS_SELECTOR, "#managed-table .managed-row"))
        renew = len(d.find_elements(By.CSS_SELECTOR, "#managed-table .renew-button"))
        print(f"admin: {managed} managed certificates, {renew} renew buttons", file=sys.stderr)
        if managed and not renew:
            raise Failure("the admin sees managed certificates but no .renew-button")
        self.facts["managed_certificates"] = managed
        self.facts["admin_renew_buttons"] = renew
        self.check_console()

        self.step = "6 auditor"
        d.find_element(By.ID, "logout").click()
        self.visible("#token")
        if d.execute_script("return sessionStorage.getItem('certkeeper.token')") is not None:
            raise Failure("logout left the token in sessionStorage")
        self.login(args.auditor_token, "auditor")
        self.open_view("inventory")
        self.wait_view_ready("inventory")
        buttons = d.find_elements(By.CSS_SELECTOR, ".renew-button")
        if buttons:
            raise Failure(f"the auditor sees {len(buttons)} .renew-button elements")
        if "role-auditor" not in (d.find_element(By.TAG_NAME, "body").get_attribute("class") or ""):
            raise Failure("body lacks the role-auditor class")
        self.facts["auditor_renew_buttons"] = 0
        self.shot("08-auditor.png")
        self.check_console()

    def report_page(self):
        """After a failure: the page's banner, any console entries, and DIR/failure.png."""
        try:
            banner = self.text_of("#banner-text")
            if banner:
                print(f"dashboard banner: {banner}", file=sys.stderr)
            for entry in self.driver.get_log("browser"):
                print(f"console {entry.get('level')}: {entry.get('message')}", file=sys.stderr)
            self.driver.save_screenshot(os.path.join(self.out, "failure.png"))
        except Exception as e:  # the browser may be gone
            print(f"could not save failure.png: {e}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="https://127.0.0.1:PORT")
    parser.add_argument("--admin-token", required=True)
    parser.add_argument("--auditor-token", required=True)
    parser.add_argument("--search", required=True, help="text a certificate's CN or SAN contains")
    parser.add_argument("--output", required=True, help="directory for screenshots")
    args = parser.parse_args()
    os.makedirs(args.output, exist_ok=True)

    try:
        run = Run(args)
    except Exception as e:
        print(f"dashboard test failed: cannot start chromium: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    try:
        run.run()
    except Exception as e:
        print(f"dashboard test failed at step {run.step}: {type(e).__name__}: {e}", file=sys.stderr)
        run.report_page()
        return 1
    finally:
        run.driver.quit()
    print(json.dumps({"screenshots": run.screenshots, "console_errors": len(run.console), **run.facts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
