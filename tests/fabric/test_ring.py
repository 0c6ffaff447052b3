"""The consistent-hash ring: agreement, balance, and minimal movement on join and leave."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pytest import MonkeyPatch

from fabric import ring as ring_module
from fabric.ring import Ring

KEYS = range(1, 20_001)


def test_same_members_same_owners_in_any_order() -> None:
    a, b = Ring(["r1", "r2", "r3"]), Ring(["r3", "r1", "r2"])
    assert a == b
    assert all(a.owner(k) == b.owner(k) for k in KEYS)


def test_keys_spread_evenly() -> None:
    ring = Ring([f"router-{i}" for i in range(4)])
    counts = {m: len(ks) for m, ks in ring.owners(KEYS).items()}
    assert set(counts) == ring.members
    assert max(counts.values()) < 1.35 * len(KEYS) / 4
    assert min(counts.values()) > 0.65 * len(KEYS) / 4


def test_join_moves_only_to_the_newcomer_and_leave_only_from_the_leaver() -> None:
    old = Ring(["r1", "r2"])
    new = Ring(["r1", "r2", "r3"])
    moved = [k for k in KEYS if old.owner(k) != new.owner(k)]
    assert all(new.owner(k) == "r3" for k in moved)
    assert 0.2 < len(moved) / len(KEYS) < 0.45
    back = [k for k in KEYS if new.owner(k) != old.owner(k)]
    assert all(new.owner(k) == "r3" for k in back)


@given(
    st.sets(st.text(min_size=1, max_size=12), min_size=1, max_size=6),
    st.lists(st.integers(0, 2**64 - 1), max_size=50),
)
def test_owner_is_always_a_member(members: set[str], keys: list[int]) -> None:
    ring = Ring(members)
    assert all(ring.owner(k) in members for k in keys)


def test_remembered_owners_are_the_computed_ones_and_bounded(monkeypatch: MonkeyPatch) -> None:
    monkeypatch.setattr(ring_module, "OWNERS_CACHED", 100)
    members = ["s1", "s2", "s3"]
    ring = Ring(members)
    keys = range(1, 1001)
    first = [ring.owner(k) for k in keys]
    assert [ring.owner(k) for k in keys] == first  # asked again: remembered or computed anew
    assert first == [Ring(members).owner(k) for k in keys]  # each a fresh ring's first answer
    assert len(ring._owned) <= 100
