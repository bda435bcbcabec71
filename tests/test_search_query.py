"""The query parser, pure: whatever is typed becomes quoted FTS5 strings or a QueryError, and
the expression it gives is one FTS5 accepts and that finds what was typed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.search.index import TOKENIZER
from exporter.search.query import MAX_TERMS, QueryError, Term, fold, parse, to_match


@pytest.fixture(scope="module")
def fts() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE t USING fts5(text, tokenize='{TOKENIZER}')")
    yield db
    db.close()


def matches(db: sqlite3.Connection, query: str, text: str) -> bool:
    db.execute("DELETE FROM t")
    db.execute("INSERT INTO t(rowid, text) VALUES (1, ?)", (text,))
    return (
        db.execute("SELECT count(*) FROM t WHERE t MATCH ?", (to_match(parse(query)),)).fetchone()[
            0
        ]
        == 1
    )


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60))
def test_any_text_is_a_query_fts5_accepts_or_a_query_error(text: str) -> None:
    """Nothing typed reaches FTS5 as syntax: the expression always parses (no sqlite3.Error),
    or the query is refused with a QueryError."""
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE t USING fts5(text, tokenize='{TOKENIZER}')")
    db.execute("INSERT INTO t VALUES ('some text')")
    try:
        match = to_match(parse(text))
    except QueryError as exc:
        assert str(exc)
        return
    db.execute("SELECT count(*) FROM t WHERE t MATCH ?", (match,)).fetchone()
    db.close()


_FTS_SYNTAX = st.sampled_from(
    [
        '"',
        "*",
        "(",
        ")",
        "NEAR(",
        "AND",
        "OR",
        "NOT",
        ":",
        "^",
        "-",
        "+",
        "{",
        "}",
        "'",
        ";",
        "\x00",
    ]
)
_WORDS = st.text(
    alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd"), max_codepoint=0x24F),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_WORDS, _FTS_SYNTAX), min_size=1, max_size=8))
def test_syntax_and_words_mixed_never_break_the_expression(parts: list[str]) -> None:
    """FTS5's own operators typed among words are plain text to it."""
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE t USING fts5(text, tokenize='{TOKENIZER}')")
    try:
        match = to_match(parse(" ".join(parts)))
    except QueryError:
        return
    db.execute("SELECT count(*) FROM t WHERE t MATCH ?", (match,)).fetchone()
    db.close()


@settings(max_examples=200, deadline=None)
@given(st.lists(_WORDS, min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_words_typed_in_any_order_and_case_find_the_text(words: list[str], rnd: object) -> None:
    """Every word of a text, typed shuffled and in another case, finds it."""
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE t USING fts5(text, tokenize='{TOKENIZER}')")
    db.execute("INSERT INTO t(rowid, text) VALUES (1, ?)", (" ".join(words) + " tail",))
    typed = list(words)
    rnd.shuffle(typed)  # type: ignore[attr-defined]
    # Upper case where it folds back to the same letters (the upper case of ß is SS, of the
    # dotless i an I: other words, to FTS5 as to a reader).
    query = " ".join(w.upper() if w.upper().lower() == w.lower() else w for w in typed)
    rows = db.execute("SELECT rowid FROM t WHERE t MATCH ?", (to_match(parse(query)),)).fetchall()
    assert rows == [(1,)]
    db.close()


def test_the_forms_of_a_query() -> None:
    """Words, a phrase (spaces folded), a prefix, a phrase prefix; control characters are
    spaces; chunks with no letter or digit drop out."""
    assert parse('budget "new   york" resum* "of tal"* -- ()') == (
        Term("budget"),
        Term("new york", phrase=True),
        Term("resum", prefix=True),
        Term("of tal", phrase=True, prefix=True),
    )
    assert parse("a\x00b\u202ec") == (Term("a"), Term("b"), Term("c"))
    assert to_match((Term('say "hi"'), Term("x", prefix=True))) == '"say ""hi""" "x"*'


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ('"', "closes"),
        ('budget "new york', "closes"),
        ("*", "on its own"),
        ("budget ***", "on its own"),
        ("", "no word"),
        ("   \x00 \x1b ", "no word"),
        ("( ) - ; '", "no word"),
        ('""', "no word"),
        (" ".join(["w"] * (MAX_TERMS + 1)), "at most"),
    ],
)
def test_queries_that_cannot_be_searched_say_why(query: str, why: str) -> None:
    with pytest.raises(QueryError, match=why):
        parse(query)


def test_fts5_keywords_and_sql_are_plain_words(fts: sqlite3.Connection) -> None:
    """NEAR(, AND, OR, NOT and SQL are words to find, not operators to run."""
    assert matches(fts, "NEAR(", "it is near here")
    assert matches(fts, "a OR b", "a or b")
    assert not matches(fts, "a OR b", "a only")
    assert matches(fts, "NOT x", "not x")
    assert matches(fts, "'); DROP TABLE t; --", "drop table t")
    assert fts.execute("SELECT count(*) FROM t").fetchone()[0] == 1


def test_fold_ignores_case_accents_and_compatibility_forms() -> None:
    assert fold("Zoë ÅNGSTRÖM") == "zoe angstrom"
    assert fold("Zoe\u0308") == "zoe"
    assert fold("\uff21\uff22\uff23 \ufb01le") == "abc file"
    assert fold("STRASSE") == fold("straße")
