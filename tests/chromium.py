"""Headless Chromium for the tests that look at pages as a person does (Debian's chromium and
chromium-driver, driven by python3-selenium): tests/pages and tests/serve."""

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service


def headless_chromium(width, height):
    options = Options()
    # No sandbox and no /dev/shm: the tests run as root in containers with a small /dev/shm.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=%d,%d" % (width, height)):
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
