"""The web client's relations in headless Chromium (selenium), against a cluster of real nodes.

Two browser users (alice, bob) and one `ClientSession` user (carol), on one SQLite cluster:
- groups: alice creates crew and sees herself as its owner in the member panel; she invites
  bob (who joins from the invitation in his page) and carol (who gets NOTICE_GROUP_INVITE and
  joins); bob's panel marks alice as the owner and offers him no owner's controls. Removing a
  member asks first (Escape cancels); a removal that comes too late (carol left meanwhile) shows
  the server's NOT_MEMBER. alice hands crew to bob from the keyboard: bob's owner controls
  appear, hers go. bob removes alice: crew leaves her list. He invites her again; at phone
  width she joins from the invitation and leaves the group: it leaves her list, and his panel;
- friends: bob blocks alice (after a confirmation): her message is refused as BLOCKED, and his
  Blocked list names her; he unblocks her and the next one arrives. alice unfriends bob: the
  conversation leaves her list, and bob's is marked "no longer friends", read-only, until he
  removes it from his list.
Every wait is a WebDriverWait or an asyncio deadline, never a sleep. The cluster runs on its own
event loop (`ModuleCluster`), so carol's session lives on while selenium blocks this thread.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from schema import client_pb2
from tests.harness import Cluster
from tests.web.test_browser import DESKTOP, PASSWORD, PHONE, WAIT_S, Page
from tests.web.web_cluster import ModuleCluster
from tui.session import ClientSession, EventKind


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleCluster]:
    tmp = tmp_path_factory.mktemp("browser_relations")
    mc = ModuleCluster(tmp, f"t{uuid.uuid4().hex[:12]}", f"sqlite:{tmp / 'data'}", gateways=1)
    yield mc
    mc.close()


async def _carol(cluster: Cluster) -> ClientSession:
    client = await cluster.client(0)
    await client.register("carol", PASSWORD)
    return client


async def _notice(session: ClientSession, kind: int) -> client_pb2.Notice:
    """The next notice of `kind` carol's session gets (other events are passed over)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            event = await session.events.get()
            push = event.push
            if (
                event.kind is EventKind.PUSH
                and push is not None
                and push.HasField("notice")
                and push.notice.kind == kind
            ):
                return push.notice


def members(page: Page) -> list[str]:
    """The member panel's rows, as labelled: "bob, online, owner", "alice, online, you"."""
    return [li.get_attribute("aria-label") or "" for li in page.all("#member-list li[data-user]")]


def listed(page: Page) -> list[str]:
    """The titles of the conversation list."""
    return [e.text for e in page.all("#conversations button.conv .title")]


def dialog(page: Page, question: str) -> None:
    """Wait for the confirmation dialog asking `question` (its start)."""
    page.until(
        lambda: page.all("#confirm[open]") and page.text("#confirm-text").startswith(question),
        f"the question {question!r}",
    )


def closed(page: Page) -> None:
    page.until(lambda: not page.all("#confirm[open]"), "the dialog closed")


def shown(page: Page, css: str) -> bool:
    """Whether the element `css` is on screen now (`Page.one` would wait for it)."""
    return any(e.is_displayed() for e in page.all(css))


def toast(page: Page, text: str) -> None:
    page.until(lambda: text in page.text("#toast"), f"the notice {text!r}")


@pytest.mark.timeout(90)
def test_group_members_invitations_and_friend_relations_in_the_browser(
    web: ModuleCluster, tmp_path: Path
) -> None:
    cluster = web.cluster
    assert cluster is not None
    url = cluster.web_urls()[0].replace("ws://", "http://").removesuffix("ws")
    carol = web.run(_carol(cluster))
    pages: list[Page] = []
    try:
        for name in ("alice", "bob"):
            profile, log = tmp_path / f"chromium-{name}", tmp_path / f"{name}.driver"
            pages.append(Page(url, profile, log))
        alice, bob = pages
        alice.register("alice")
        bob.register("bob")
        alice.befriend("bob")
        bob.accept()
        alice.conv("bob")
        bob.conv("alice")
        alice_id = web.run(carol.search_users("alice")).users[0].user_id
        web.run(carol.add_friend(alice_id))
        alice.accept()
        alice.conv("carol")

        group_id = groups(web, alice, bob, carol)
        friends(alice, bob)
        assert not web.run(carol.groups()).groups  # she left crew
        assert group_id
        assert alice.console() == [] and bob.console() == []
    finally:
        for page in pages:
            page.quit()
        web.run(carol.close())


def groups(web: ModuleCluster, alice: Page, bob: Page, carol: ClientSession) -> str:
    """The member panel, invitations, a refused removal, the hand-over, a removal, leaving."""
    alice.people()
    alice.one("#group-input").send_keys("crew")
    alice.one("#group-create").click()
    alice.until(lambda: alice.text("#pane-title") == "crew", "crew open")
    alice.one("#members-toggle").click()
    alice.until(lambda: members(alice) == ["alice, online, owner, you"], "alice owns crew")
    assert alice.one("#members-toggle").get_attribute("aria-expanded") == "true"
    assert "you own it" in alice.text("#pane-sub")

    # invitations: bob joins from his page, carol from her notice
    invite = Select(alice.one("#invite-select"))
    assert [o.text for o in invite.options] == ["bob", "carol"]
    invite.select_by_visible_text("bob")
    alice.one("#invite-submit").click()
    toast(alice, "invited bob to crew")
    bob.one('#request-list button[data-act="join-invite"]').click()
    bob.until(lambda: bob.text("#pane-title") == "crew", "bob in crew")
    group_id = bob.all("#conversations button.conv.open")[0].get_attribute("data-conv") or ""
    alice.until(lambda: [o.text for o in invite.options] == ["carol"], "only carol to invite")
    invite.select_by_visible_text("carol")
    alice.one("#invite-submit").click()
    notice = web.run(_notice(carol, client_pb2.NOTICE_GROUP_INVITE))
    assert notice.conv_id == int(group_id) and notice.user.account == "alice"
    web.run(carol.group_join(notice.conv_id))
    everyone = ["alice, online, owner, you", "bob, online", "carol, online"]
    alice.until(lambda: members(alice) == everyone, "three members")
    alice.until(lambda: alice.text("#pane-sub").startswith("group · 3 members"), "3 members")
    bob.one("#members-toggle").click()
    bob.until(
        lambda: members(bob) == ["alice, online, owner", "bob, online, you", "carol, online"],
        "bob sees alice as the owner",
    )
    assert not bob.all("#member-list button") and not shown(bob, "#invite-form")

    # removing asks first; Escape says no
    remove_carol = '#member-list button[aria-label="Remove carol from the group"]'
    alice.one(remove_carol).click()
    dialog(alice, "Remove carol from crew?")
    assert alice.d.switch_to.active_element.get_attribute("id") == "confirm-no"
    alice.d.switch_to.active_element.send_keys(Keys.ESCAPE)
    closed(alice)
    assert alice.text("#pane-title") == "crew"  # Escape closed only the dialog
    assert members(alice) == everyone
    # too late: carol leaves while alice is asked; the server's code is shown
    alice.one(remove_carol).click()
    dialog(alice, "Remove carol from crew?")
    web.run(carol.group_leave(int(group_id)))
    alice.one("#confirm-yes").click()
    toast(alice, "NOT_MEMBER: they are not a member")
    alice.until(lambda: members(alice) == everyone[:2], "carol gone")

    # alice hands crew to bob, from the keyboard: Shift+Tab from Cancel to the button, Enter
    alice.one('#member-list button[aria-label="Make bob the owner"]').click()
    dialog(alice, "Hand crew to bob?")
    alice.d.switch_to.active_element.send_keys(Keys.SHIFT, Keys.TAB)
    assert alice.d.switch_to.active_element.text == "Make bob the owner"
    alice.d.switch_to.active_element.send_keys(Keys.ENTER)
    toast(bob, "alice handed you crew: you own it now")
    bob.until(lambda: members(bob) == ["alice, online", "bob, online, owner, you"], "bob owns")
    bob.one('#member-list button[aria-label="Make alice the owner"]')
    bob.until(lambda: "you own it" in bob.text("#pane-sub"), "bob owns crew")
    bob.one("#invite-form")
    alice.until(lambda: members(alice) == ["alice, online, you", "bob, online, owner"], "handed")
    alice.until(lambda: not alice.all("#member-list button"), "no owner controls for alice")
    assert not shown(alice, "#invite-form")

    # bob removes alice: crew leaves her list
    bob.one('#member-list button[aria-label="Remove alice from the group"]').click()
    dialog(bob, "Remove alice from crew?")
    bob.one("#confirm-yes").click()
    toast(alice, "bob removed you from crew")
    alice.until(lambda: "crew" not in listed(alice), "crew gone from alice's list")
    assert alice.text("#pane-title") != "crew"
    bob.until(lambda: members(bob) == ["bob, online, owner, you"], "alice gone")

    # at phone width: alice joins again from bob's invitation, and leaves
    alice.d.set_window_size(*PHONE)
    alice.until(lambda: alice.d.execute_script("return window.innerWidth") <= PHONE[0], "phone")
    Select(bob.one("#invite-select")).select_by_visible_text("alice")
    bob.one("#invite-submit").click()
    alice.one('#request-list button[data-act="join-invite"]').click()
    alice.until(lambda: alice.text("#pane-title") == "crew", "alice in crew again")
    assert not shown(alice, "#sidebar")  # one pane at a time
    alice.one("#members-toggle").click()
    alice.until(lambda: "alice, online, you" in members(alice), "the panel on a phone")
    bob.until(lambda: members(bob) == ["alice, online", "bob, online, owner, you"], "back")
    alice.one("#leave").click()
    dialog(alice, "Leave crew?")
    alice.one("#confirm-yes").click()
    alice.until(lambda: shown(alice, "#sidebar"), "the list again")
    alice.until(lambda: "crew" not in listed(alice), "crew gone after leaving")
    bob.until(lambda: members(bob) == ["bob, online, owner, you"], "alice left")
    alice.d.set_window_size(*DESKTOP)
    return group_id


def friends(alice: Page, bob: Page) -> None:
    """Block, unblock, unfriend."""
    alice.open("bob")
    bob.open("alice")
    bob.one('#block[aria-label="Block alice"]').click()
    dialog(bob, "Block alice?")
    bob.one("#confirm-yes").click()
    bob.until(lambda: bob.text("#pane-sub") == "online · blocked", "alice blocked")
    assert "refused" in bob.text("#pane-note")
    bob.until(lambda: "blocked" in (bob.conv("alice").get_attribute("aria-label") or ""), "mark")
    alice.say("let me in")
    alice.until(
        lambda: "not sent: they have blocked you" in alice.text("#messages li.failed .mark"),
        "refused: blocked",
    )
    bob.people()
    bob.one('#blocked-list button[aria-label="Unblock alice"]')  # the Blocked list has her
    bob.one('#block[aria-label="Unblock alice"]').click()  # no question for undoing a block
    bob.until(lambda: bob.text("#pane-sub") == "online", "unblocked")
    assert not shown(bob, "#pane-note")
    bob.until(lambda: not shown(bob, "#blocked"), "nobody blocked")
    alice.say("thanks")
    bob.shows("thanks")

    alice.one("#unfriend").click()
    dialog(alice, "Unfriend bob?")
    alice.one("#confirm-yes").click()
    alice.until(lambda: "bob" not in listed(alice), "bob gone from alice's list")
    toast(bob, "alice ended your friendship")
    bob.until(lambda: bob.text("#pane-sub") == "no longer friends", "marked")
    assert bob.text("#pane-note") == "alice ended your friendship: this conversation is read-only"
    assert not shown(bob, "#composer")
    assert "no longer friends" in (bob.conv("alice").get_attribute("aria-label") or "")
    assert bob.bodies()[-1] == "thanks"  # what was loaded stays readable
    bob.one('#forget[aria-label="Remove alice from the list"]').click()
    bob.until(lambda: "alice" not in listed(bob), "alice gone from bob's list")
