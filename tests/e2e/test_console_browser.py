"""The console in headless Chromium against the whole system (six processes, real Kafka and PostgreSQL).

A grid worker reports from a phone-sized screen; the dispatcher's open queue shows it without a
reload; the officer reports for duty (报到) with one click and the dispatcher sees the report
status change live; a general matter left alone breaches its (shortened, 4 s) deadline, turns red
and gets an escalation; the supervisor sees a breach of their own making and a non-empty
time-to-report chart, in Chinese, in English and in another time zone. Screenshots of every view go
to test-artifacts/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.e2e.stack import Stack, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PASSWORD = "gridwhistle"


def _require_browser() -> None:
    if CHROMIUM and CHROMEDRIVER:
        return
    message = "headless Chromium needs the Debian packages chromium and chromium-driver (see .ci/run)"
    if os.environ.get("CI"):
        pytest.fail(f"missing browser on CI: {message}")
    pytest.skip(message, allow_module_level=True)


_require_browser()

from selenium import webdriver  # noqa: E402 - only once the browser is known to exist
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def open_browser(width: int, height: int) -> WebDriver:
    """A headless Chromium window of the given size, Chinese UI, Shanghai time."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}",
                "--lang=zh-CN"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Shanghai"})
    # Headless windows are at least 500 px wide; a phone viewport needs device emulation.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500},
    )
    return driver


@pytest.fixture(scope="module")
def browsers() -> Iterator[dict[str, WebDriver]]:
    opened: dict[str, WebDriver] = {}
    try:
        opened["dispatcher"] = open_browser(1366, 900)
        opened["responder"] = open_browser(1100, 800)
        opened["worker"] = open_browser(390, 844)
        yield opened
    finally:
        for driver in opened.values():
            driver.quit()


def wait(driver: WebDriver, condition: Callable[[WebDriver], object], what: str, timeout: float = 30) -> object:
    """Poll the page until `condition` is truthy; on failure keep a screenshot named after `what`."""
    try:
        # The live stream re-renders items while we read them: a vanished element means "not yet".
        return WebDriverWait(
            driver,
            timeout,
            poll_frequency=0.1,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        ).until(lambda d: condition(d), message=what)
    except TimeoutException:
        shot(driver, "failed-" + "".join(c if c.isalnum() else "-" for c in what)[:60])
        raise


def sign_in(driver: WebDriver, base: str, user_id: str) -> None:
    driver.get(base + "/")
    wait(driver, lambda d: d.find_element(By.ID, "login-user").is_displayed(), "login form")
    driver.find_element(By.ID, "login-user").send_keys(user_id)
    driver.find_element(By.ID, "login-password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver, lambda d: user_id in d.find_element(By.ID, "who").text, f"{user_id} signed in")
    wait(driver, lambda d: "实时" in d.find_element(By.ID, "live-state").text, "live stream connected")


def shot(driver: WebDriver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def report_from_phone(worker: WebDriver, description: str) -> str:
    worker.find_element(By.ID, "report-desc").send_keys(description)
    worker.find_element(By.ID, "report-address").send_keys("幸福路8号")
    worker.find_element(By.ID, "report-submit").click()
    result = wait(worker, lambda d: d.find_element(By.ID, "report-result").text.split()[-1]
                  if "编号" in d.find_element(By.ID, "report-result").text else None, "report accepted")
    return str(result)


def item_selector(incident_id: str) -> str:
    return f'#queue .item[data-incident="{incident_id}"]'


def present(driver: WebDriver, css: str) -> bool:
    """Whether an element matches `css` right now."""
    return bool(driver.execute_script("return document.querySelector(arguments[0]) !== null", css))


def text_of(driver: WebDriver, css: str) -> str | None:
    """The rendered text of the first match, read in one script call.

    The live stream replaces items wholesale (innerHTML), so a WebElement found a moment ago may be
    stale by the time its .text is read; reading inside the page is atomic.
    """
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : null", css)


def attribute_of(driver: WebDriver, css: str, name: str) -> str | None:
    """An attribute of the first match, read in one script call (see text_of)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null", css, name
    )


async def test_dispatcher_sees_a_phone_report_live_and_the_officers_report_for_duty(stack: Stack, browsers):
    base = stack.url("console")
    dispatcher, responder, worker = browsers["dispatcher"], browsers["responder"], browsers["worker"]
    worker.get(base + "/")
    wait(worker, lambda d: d.find_element(By.ID, "login-user").is_displayed(), "login form")
    shot(worker, "0-sign-in-phone")
    sign_in(dispatcher, base, "desk-S0101-1")
    sign_in(worker, base, "W0001")
    shot(worker, "3-grid-worker-phone")

    incident_id = report_from_phone(worker, "楼下有人打架，有人流血，请民警快来")
    # The dispatcher's page was loaded before the report: the item arrives over the live stream.
    wait(dispatcher, lambda d: present(d, item_selector(incident_id)), "incident appears in the dispatcher queue")
    wait(dispatcher, lambda d: "打架斗殴" in (text_of(d, item_selector(incident_id)) or "")
         and len(d.find_elements(By.CSS_SELECTOR, item_selector(incident_id) + " .handoff")) >= 2,
         "classified and dispatched to the officer and health")
    wait(dispatcher, lambda d: "紧急" in (text_of(d, item_selector(incident_id)) or ""), "urgent badge")
    wait(dispatcher, lambda d: "剩余" in (text_of(d, item_selector(incident_id) + " .countdown") or ""),
         "live countdown")
    wait(dispatcher, lambda d: d.find_element(By.CSS_SELECTOR, item_selector(incident_id)).click() or True, "open detail")
    wait(dispatcher, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#detail .timeline li")) >= 3, "timeline shown")
    shot(dispatcher, "1-dispatcher-queue-and-detail")

    # The co-operating health unit reports in the browser; whoever leads reports through the API.
    sign_in(responder, base, "health-D01-1")
    waiting_card = "#my-handoffs .handoff-card[data-state='dispatched']"
    handoff_id = wait(responder, lambda d: attribute_of(d, waiting_card, "data-handoff"), "health's handoff")
    shot(responder, "2-responder-before-report")
    ack_button = f".handoff-card[data-handoff='{handoff_id}'] .btn-ack"
    wait(responder, lambda d: d.find_element(By.CSS_SELECTOR, ack_button).click() or True, "click 报到")
    wait(responder, lambda d: present(d, f".handoff-card[data-handoff='{handoff_id}'][data-state='acknowledged']"),
         "responder's card shows the report")
    chip = f"{item_selector(incident_id)} .handoff[data-handoff='{handoff_id}']"
    wait(dispatcher, lambda d: present(d, chip + "[data-state='acknowledged']"), "dispatcher sees 已报到 live")
    assert present(dispatcher, item_selector(incident_id) + " .countdown[data-due]"), "the lead has not reported yet"

    async with httpx.AsyncClient(timeout=10) as client:
        admin = stack.as_user("admin")
        detail = (await client.get(f"{stack.url('intake')}/api/v1/incidents/{incident_id}", headers=admin)).json()
        for handoff in detail["handoffs"]:
            if handoff["handoff_id"] == handoff_id:
                continue
            unit = (await client.get(f"{stack.url('routing')}/api/v1/units/{handoff['unit_id']}", headers=admin)).json()
            login = await client.post(f"{base}/api/v1/login", json={"user_id": unit["members"][0], "password": PASSWORD})
            acked = await client.post(f"{base}/api/v1/handoffs/{handoff['handoff_id']}/acknowledge",
                                      headers={"Authorization": f"Bearer {login.json()['token']}"})
            assert acked.status_code == 200, acked.text
    wait(dispatcher, lambda d: present(d, item_selector(incident_id) + " .countdown.stopped"),
         "countdown stops once every summoned unit reported")
    assert not present(dispatcher, item_selector(incident_id) + " .countdown[data-due]")
    shot(dispatcher, "4-dispatcher-after-report")


async def test_an_unreported_general_matter_breaches_turns_red_and_escalates(stack: Stack, browsers):
    dispatcher, worker = browsers["dispatcher"], browsers["worker"]
    incident_id = report_from_phone(worker, f"广场舞音响太吵，影响休息 {uuid.uuid4().hex[:4]}")
    wait(dispatcher, lambda d: present(d, item_selector(incident_id)), "incident appears")
    breached = item_selector(incident_id) + ".breached"
    text = wait(dispatcher, lambda d: text_of(d, breached), "item turns red after the 4 s report deadline", timeout=45)
    assert "已超时" in text and "▲" in text  # not colour alone
    wait(dispatcher, lambda d: "升级" in (text_of(d, item_selector(incident_id)) or ""),
         "an escalation appears on the item", timeout=45)
    # Read inside the page and inside the wait: a live re-render may replace the item at any moment.
    wait(dispatcher, lambda d: d.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? getComputedStyle(e).backgroundColor : null",
        breached,
    ) == "rgb(253, 226, 225)", "the breached item is drawn red")
    shot(dispatcher, "5-dispatcher-breach-and-escalation")


async def a_breached_and_late_reported_incident(stack: Stack) -> str:
    """Through the console API: W0001 reports a general matter, it breaches its 4 s report deadline, then
    its lead reports late, so today's breaches and the time-to-report chart both have an entry of ours."""
    base = stack.url("console")
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:

        async def bearer(user_id: str) -> dict[str, str]:
            login = await client.post("/api/v1/login", json={"user_id": user_id, "password": PASSWORD})
            assert login.status_code == 200, login.text
            return {"Authorization": f"Bearer {login.json()['token']}"}

        reported = await client.post(
            "/api/v1/incidents",
            json={"grid_id": "G0001", "description": f"小区门口垃圾堆积无人清运 {uuid.uuid4().hex[:4]}", "address": "幸福路8号"},
            headers={**await bearer("W0001"), "Idempotency-Key": uuid.uuid4().hex},
        )
        assert reported.status_code in (200, 202), reported.text
        incident_id = reported.json()["incident_id"]
        supervisor = await bearer("sup-1")

        async def todays_breaches() -> list[str]:
            body = (await client.get("/api/v1/supervisor", headers=supervisor)).json()
            return [b["incident_id"] for b in body.get("breaches_today", [])]

        await eventually(todays_breaches, lambda ids: incident_id in ids, timeout=45)
        detail = (await client.get(f"/api/v1/incidents/{incident_id}", headers=supervisor)).json()
        lead = next(h for h in detail["handoffs"] if h["role"] == "lead" and h["state"] == "dispatched")
        units = f"{stack.url('routing')}/api/v1/units"
        unit = (await client.get(f"{units}/{lead['unit_id']}", headers=stack.as_user("admin"))).json()
        acked = await client.post(
            f"/api/v1/handoffs/{lead['handoff_id']}/acknowledge", headers=await bearer(unit["members"][0])
        )
        assert acked.status_code == 200, acked.text

        async def reports_counted() -> int:
            body = (await client.get("/api/v1/supervisor", headers=supervisor)).json()
            return sum(b["count"] for b in body.get("time_to_report", []))

        await eventually(reports_counted, lambda count: count > 0, timeout=30)
    return incident_id


def tallest_bar(driver: WebDriver) -> int:
    """The height of the tallest bar of the time-to-report chart (0 when every bucket is empty)."""
    return int(driver.execute_script(
        "return Math.max(0, ...[...document.querySelectorAll('#ttr-svg rect')].map((r) => Number(r.getAttribute('height'))))"
    ))


async def test_supervisor_view_shows_rates_a_real_breach_and_the_time_to_report_chart(stack: Stack, browsers):
    base = stack.url("console")
    incident_id = await a_breached_and_late_reported_incident(stack)
    supervisor = browsers["responder"]
    supervisor.delete_all_cookies()
    sign_in(supervisor, base, "sup-1")
    our_breach = f'#breaches li.breach[data-incident="{incident_id}"]'
    text = wait(supervisor, lambda d: text_of(d, our_breach), "our breach is listed among today's breaches")
    assert "▲" in text
    wait(supervisor, lambda d: tallest_bar(d) > 0, "the time-to-report chart has a non-empty bar")
    rates = wait(supervisor, lambda d: text_of(d, "#rates"), "rates shown")
    assert "响应率" in rates and "按时报到率" in rates and "%" in rates
    shot(supervisor, "6-supervisor")
    supervisor.find_element(By.ID, "lang-toggle").click()
    wait(supervisor, lambda d: "Response rate" in (text_of(d, "#rates") or ""), "English switch")
    shot(supervisor, "7-supervisor-english")

    # Times follow the browser's zone: the same breach, seen from New York.
    supervisor.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "America/New_York"})
    try:
        supervisor.refresh()
        wait(supervisor, lambda d: text_of(d, our_breach), "the breach after switching to New York time")
        breached_at = datetime.fromisoformat(str(attribute_of(supervisor, our_breach, "data-at")))
        shown = wait(supervisor, lambda d: text_of(d, our_breach + " time"), "the breach's time")
        assert breached_at.astimezone(ZoneInfo("America/New_York")).strftime("%H:%M:%S") in str(shown)
        assert breached_at.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%H:%M:%S") not in str(shown)
    finally:
        supervisor.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Shanghai"})
