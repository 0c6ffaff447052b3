"""Statement building: MySQL literals escape exactly as PyMySQL does; ints stay ints."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymysql.converters import escape_string

from shard_store.mysql import quote, row_formatter
from shard_store.sqlite import _qmark


@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\0\\\n\r\x1a'\"%")))
def test_quote_matches_pymysql(value: str) -> None:
    assert quote(value) == "'" + escape_string(value) + "'"


def test_row_literal_refuses_what_is_not_an_int_or_a_str() -> None:
    fmt = row_formatter("isi")
    assert fmt((1, "it's", -2)) == "(1,'it\\'s',-2)"
    with pytest.raises(TypeError):
        fmt(("1; DROP TABLE x", "a", 2))
    with pytest.raises(TypeError):
        fmt((1, 5, 2))


def test_placeholders_become_qmarks() -> None:
    assert _qmark("SELECT %s, '100%%' WHERE a = %s") == "SELECT ?, '100%' WHERE a = ?"
