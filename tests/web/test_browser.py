"""The web client in headless Chromium (selenium), against a cluster of real node processes.

Two browser users (alice, bob) and one user of the real terminal client (carol, `soim --plain`
on a pipe) befriend each other and chat 1:1 and in a group: the browsers see each other's
typing and receipt marks (sent, delivered, read; read counts in the group), an edit, a recall,
a search hit, and carol's messages; bob reloads the page, is back without a password, and pages
back through 62 group messages by scrolling up. Then
the gateway both browsers are on is frozen (so what alice types now is certainly not
acknowledged, and carol's messages to alice cannot be pushed), given up by the cluster, and
killed with SIGKILL: both pages resume on the other gateway, and every message of the outage
arrives once, in order. Last, logging out forgets the token. Every wait is a WebDriverWait or
a `LineClient.expect` with a deadline, never a sleep (selenium's calls block the test's event
loop; only the observer's view waits meanwhile).

With SOIM_WEB_SCREENSHOTS=DIR set, the chat view is saved as DIR/web-chat-desktop.png and
DIR/web-chat-phone.png, the phone's conversation list as DIR/web-list-phone.png (docs/img holds
the committed ones).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.harness import Cluster, running_cluster
from tests.processes import NodeProcess
from tests.support import async_wait_until
from tests.tui.lines import LineClient

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PASSWORD = "correct-horse"
WAIT_S = 20.0
DESKTOP = (1100, 760)
PHONE = (390, 780)
T = TypeVar("T")


class Page:
    """One headless Chromium (its own profile, so its own localStorage) showing the client."""

    def __init__(self, url: str, profile: Path, log: Path) -> None:
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-features=Translate,OptimizationHints,MediaRouter",
            f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
            f"--user-data-dir={profile}",
        ):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.d = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER, log_output=str(log)))
        self.d.get(url)

    def quit(self) -> None:
        self.d.quit()

    # ---- waiting and finding
    def until(self, cond: Callable[[], T], what: str, timeout: float = WAIT_S) -> T:
        """Poll `cond` (stale elements count as not yet) until it returns something truthy."""

        def check(_: object) -> T:
            try:
                return cond()
            except StaleElementReferenceException:
                return None  # type: ignore[return-value]

        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.05).until(check)
        except TimeoutException:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; status: {self.text('#status')!r}"
                f", last notice: {self.text('#toast')!r}, console: {self.console()}"
            ) from None

    def console(self) -> list[str]:
        """The page's console errors so far."""
        return [e["message"] for e in self.d.get_log("browser") if e["level"] == "SEVERE"]

    def all(self, css: str) -> list[WebElement]:
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def one(self, css: str) -> WebElement:
        return self.until(lambda: next((e for e in self.all(css) if e.is_displayed()), None), css)

    def text(self, css: str) -> str:
        found = self.all(css)
        return found[0].text if found else ""

    # ---- the client
    def register(self, account: str) -> None:
        self.one("#login-account").send_keys(account)
        self.one("#login-password").send_keys(PASSWORD)
        self.one("#register-submit").click()
        self.until(lambda: self.text("#status").startswith(f"{account} ·"), "logged in")

    def people(self) -> None:
        """Open the "Friends and groups" panel."""
        if self.one("#people").get_attribute("open") is None:
            self.one("#people summary").click()

    def befriend(self, account: str) -> None:
        self.people()
        box = self.one("#friend-input")
        box.clear()
        box.send_keys(account, Keys.ENTER)
        self.one(f'#user-results button[aria-label="Add friend {account}"]').click()

    def accept(self) -> None:
        self.one('#request-list button[data-act="accept"]').click()

    def conv(self, title: str) -> WebElement:
        """The conversation list's button of `title`."""

        def find() -> WebElement | None:
            for b in self.all("#conversations button.conv"):
                if b.find_element(By.CSS_SELECTOR, ".title").text == title:
                    return b
            return None

        return self.until(find, f"conversation {title!r} listed")

    def unread(self, title: str) -> str:
        badge = self.conv(title).find_elements(By.CSS_SELECTOR, ".unread")
        return badge[0].text if badge else ""

    def open(self, title: str) -> None:
        self.until(lambda: self.conv(title).click() or True, f"{title!r} clicked")
        self.until(lambda: self.text("#pane-title") == title, f"{title!r} open")

    def type(self, text: str) -> None:
        self.one("#compose-input").send_keys(text)

    def say(self, text: str) -> None:
        self.type(text + Keys.ENTER)

    def bodies(self) -> list[str]:
        """The stored messages of the open conversation, top to bottom."""
        return [e.text for e in self.all("#messages li.msg[data-seq] .body")]

    def shows(self, *texts: str) -> list[str]:
        """Wait until the open conversation ends with `texts`; return all its messages."""
        want = list(texts)
        return self.until(
            lambda: (b := self.bodies())[-len(want) :] == want and b, f"messages {want}"
        )

    def mark(self, body: str) -> str:
        """The receipt mark (sent, delivered, read) of my stored message `body`."""
        for li in self.all("#messages li.msg.mine[data-seq]"):
            if li.find_element(By.CSS_SELECTOR, ".body").text == body:
                return li.find_element(By.CSS_SELECTOR, ".mark").get_attribute("data-mark") or ""
        return ""

    def marked(self, body: str, mark: str) -> None:
        self.until(lambda: self.mark(body) == mark, f"{body!r} marked {mark}")

    def typing(self) -> str:
        return self.text("#typing")

    def connected_to(self, host_port: str) -> None:
        self.until(
            lambda: self.text("#status").endswith(f"connected to {host_port}"),
            f"connected to {host_port}",
        )

    def hover_click(self, over: str, button: str) -> None:
        """Point at `over` (which shows its buttons), then click its `button`."""
        target = self.one(over)
        ActionChains(self.d).move_to_element(target).perform()
        self.until(lambda: target.find_element(By.CSS_SELECTOR, button).is_displayed(), button)
        target.find_element(By.CSS_SELECTOR, button).click()

    def screenshot(self, path: Path, size: tuple[int, int]) -> None:
        self.d.set_window_size(*size)
        self.until(lambda: self.d.execute_script("return window.innerWidth") <= size[0], "resized")
        self.d.save_screenshot(str(path))
        self.d.set_window_size(*DESKTOP)


def rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def endpoint(cluster: Cluster, node: NodeProcess, name: str) -> str:
    """One endpoint ("client", "web") of a live gateway, from its discovery record."""
    assert cluster.view is not None
    peer = next(p for p in cluster.view.membership.alive("gateway") if p.node_id == node.node_id)
    return peer.info.endpoints[name]


def page_url(cluster: Cluster, node: NodeProcess) -> str:
    """The web client's address on a gateway: ws://host:port/ws -> http://host:port/."""
    return endpoint(cluster, node, "web").replace("ws://", "http://").removesuffix("ws")


@pytest.mark.timeout(120)
def test_two_browsers_and_soim_chat_and_survive_a_gateway_kill(
    tmp_path: Path, cluster_name: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            core = cluster.start("directory") + cluster.start("router") + cluster.start("storage")
            gw_a, gw_b = cluster.start("gateway", 2, SOIM_WEB_PORT="0")
            await cluster.wait_alive([*core, gw_a, gw_b])
            [(_, key), *_] = cluster.gateways()
            server = ["--server", endpoint(cluster, gw_b, "client"), "--server-key", key.decode()]
            carol = LineClient(server, tmp_path, "carol")
            pages: list[Page] = []
            try:
                for name in ("alice", "bob"):
                    profile, log = tmp_path / f"chromium-{name}", tmp_path / f"{name}.driver"
                    pages.append(Page(page_url(cluster, gw_a), profile, log))
                a = await chat(pages[0], pages[1], carol)
                other = page_url(cluster, gw_b).removeprefix("http://").rstrip("/")
                await failover(cluster, pages[0], pages[1], carol, a, gw_a, other)
            finally:
                for page in pages:
                    page.quit()
                carol.close()

    asyncio.run(main())


async def chat(alice: Page, bob: Page, carol: LineClient) -> str:
    """The chat; alice's user id."""
    alice.register("alice")
    bob.register("bob")
    await carol.run(f"register -u carol -p {PASSWORD}", [rx(r"uid=\d+, entryHost=.*")])

    # friends: alice asks bob in the page, bob accepts; carol asks alice from soim
    alice.befriend("bob")
    bob.accept()
    alice.conv("bob")
    bob.conv("alice")
    alice.until(lambda: "online" in alice.conv("bob").get_attribute("aria-label"), "bob online")
    _, m = await carol.run(
        "search -u alice", ["uid | account | nickname", rx(r"(\d+) \| alice .*")]
    )
    a = m[1]
    await carol.run(f"add -u {a}", [f"friend request sent to {a}"])
    alice.accept()
    await carol.expect([f"* alice (uid {a}) accepted your friend request"])

    # 1:1 in the browsers: typing, then read (bob has it open), delivered (he has not), read
    alice.open("bob")
    bob.open("alice")
    alice.type("hi b")
    bob.until(lambda: bob.typing() == "alice is typing…", "alice typing")
    alice.say("ob")
    bob.shows("hi bob")
    alice.marked("hi bob", "read")
    bob.one("#compose-input").send_keys(Keys.ESCAPE)  # back to the list: nothing open
    bob.until(lambda: not bob.text("#pane-title"), "nothing open")
    alice.say("are you there?")
    alice.marked("are you there?", "delivered")
    bob.until(lambda: bob.unread("alice") == "1", "1 unread")
    bob.open("alice")
    alice.marked("are you there?", "read")
    bob.type("y")
    alice.until(lambda: alice.typing() == "bob is typing…", "bob typing")
    bob.say("es")
    alice.shows("hi bob", "are you there?", "yes")
    bob.marked("yes", "read")
    # an edit: ArrowUp in the empty composer takes my last message
    alice.type(Keys.ARROW_UP)
    alice.until(
        lambda: alice.one("#compose-input").get_attribute("value") == "are you there?", "edit"
    )
    alice.type(Keys.CONTROL + "a")
    alice.say("still there?")
    bob.shows("hi bob", "still there?", "yes")
    bob.until(lambda: bob.all('#messages li.msg[data-seq="2"] .edited'), "(edited)")

    # carol (soim) and alice 1:1
    await carol.run(f"send -u {a} hi alice, carol here", [f"sent to {a} seq=1"])
    alice.until(lambda: alice.unread("carol") == "1", "carol's message unread")
    alice.open("carol")
    alice.shows("hi alice, carol here")
    alice.say("hi carol")
    await carol.expect(["alice: hi carol"])

    # a group of three: created and joined in the pages, joined from soim
    alice.people()
    alice.one("#group-input").send_keys("crew")
    alice.one("#group-create").click()
    alice.until(lambda: alice.text("#pane-title") == "crew", "crew open")
    bob.people()
    bob.one("#group-input").send_keys("cr", Keys.ENTER)
    bob.one('#group-results button[aria-label="Join crew"]').click()
    bob.until(lambda: bob.text("#pane-title") == "crew", "bob in crew")
    _, m = await carol.run("group search crew", [rx("gid .*"), rx(r"(\d+) \| crew \| .*")])
    g = m[1]
    await carol.run(f"group join {g}", [rx(rf"joined group crew gid={g} \(3/\d+\)")])
    alice.say("hello crew")
    bob.shows("hello crew")
    await carol.expect([f"[g:{g}] alice: hello crew"])
    alice.until(lambda: alice.all("#messages .mark[aria-label='read by 2 of 2']"), "read 2/2")
    await carol.run(f"send -g {g} carol was here", [f"sent to g:{g} seq=2"])
    alice.shows("hello crew", "carol was here")
    bob.shows("hello crew", "carol was here")
    alice.hover_click('#messages li[data-seq="1"]', 'button[aria-label="Recall message 1"]')
    bob.until(lambda: bob.bodies() == ["message recalled", "carol was here"], "recalled")
    await carol.expect([f"[g:{g}] alice recalled #1"])

    # search: a result opens its conversation at the message
    alice.open("bob")
    alice.one("#search-input").send_keys("carol", Keys.ENTER)
    hit = alice.until(
        lambda: next(
            (b for b in alice.all("#search-list button[data-act=jump]") if "was here" in b.text),
            None,
        ),
        "the search result",
    )
    hit.click()
    alice.until(lambda: alice.text("#pane-title") == "crew", "crew open at the hit")
    alice.one('#messages li.found[data-seq="2"]')
    alice.one("#compose-input").send_keys(Keys.ESCAPE)  # closes the search results
    alice.until(lambda: not alice.text("#search-title"), "search results closed")

    # a long history, which bob pages back through after his reload
    burst = [f"line {i}" for i in range(1, 61)]
    for text in burst:
        carol.send(f"send -g {g} {text}")
    await carol.expect([f"sent to g:{g} seq={seq}" for seq in range(4, 64)])

    # bob reloads: back in without a password, everything there
    bob.d.refresh()
    bob.until(lambda: bob.text("#status").startswith("bob ·"), "resumed")
    assert not bob.one("#chat-view").get_attribute("hidden")
    bob.conv("alice")
    bob.d.switch_to.active_element.send_keys(Keys.ALT, Keys.ARROW_DOWN)  # the first conversation
    bob.until(lambda: bob.text("#pane-title") == "alice", "alice open from the keyboard")
    bob.shows("hi bob", "still there?", "yes")
    bob.marked("yes", "read")
    bob.open("crew")
    bob.until(lambda: bob.bodies() == burst[-50:], "the newest 50")
    bob.d.execute_script("document.getElementById('messages').scrollTop = 0")
    bob.until(lambda: bob.bodies() == ["message recalled", "carol was here", *burst], "older ones")
    assert bob.text("#messages li.note") == "start of the conversation"

    shots = os.environ.get("SOIM_WEB_SCREENSHOTS")
    if shots:
        alice.open("bob")
        alice.until(lambda: not alice.all("#toast")[0].is_displayed(), "no notice on screen")
        alice.screenshot(Path(shots) / "web-chat-desktop.png", DESKTOP)
        alice.screenshot(Path(shots) / "web-chat-phone.png", PHONE)
        alice.one("#compose-input").send_keys(Keys.ESCAPE)  # back to the list
        alice.screenshot(Path(shots) / "web-list-phone.png", PHONE)
    return a


async def failover(
    cluster: Cluster,
    alice: Page,
    bob: Page,
    carol: LineClient,
    a: str,
    gw_a: NodeProcess,
    other: str,
) -> None:
    """alice and bob are on gateway A, carol on B; A is frozen, then killed."""
    before = ["hi bob", "still there?", "yes"]
    outage = ["one while down", "two while down", "three while down"]
    away = ["while you were away 1", "while you were away 2"]
    alice.open("bob")
    bob.open("alice")
    os.kill(gw_a.pid, signal.SIGSTOP)  # frozen: nothing alice sends now can be acknowledged
    try:
        for text in outage:
            alice.say(text)
        alice.until(lambda: len(alice.all("#messages li[data-pending]")) == 3, "3 sending")
        for seq, text in enumerate(away, start=3):
            await carol.run(f"send -u {a} {text}", [f"sent to {a} seq={seq}"])
        # the worst case: the cluster has already given the gateway up when the pages come to
        # the other one, with the dead one's Origin
        await async_wait_until(
            lambda: gw_a.node_id not in cluster.alive("gateway"), what="the frozen gateway dead"
        )
    finally:
        gw_a.kill()  # kill -9 (a stopped process dies too)
    alice.connected_to(other)
    bob.connected_to(other)
    got = alice.shows(*outage)
    assert got == before + outage  # once each, in order, nothing left pending
    assert not alice.all("#messages li[data-pending]")
    assert bob.shows(*outage) == before + outage
    alice.open("carol")
    assert alice.shows(*away) == ["hi alice, carol here", "hi carol", *away]

    # logging out forgets the token
    token = "return localStorage.getItem('soim.token')"
    assert bob.d.execute_script(token)
    bob.one("#logout").click()
    bob.one("#login-account")
    assert bob.d.execute_script(token) is None
