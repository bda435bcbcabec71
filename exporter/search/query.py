"""The user's query -> FTS5 syntax: words (all must match), `"a phrase"`, `prefix*`; each
token quoted as an FTS5 string, so nothing typed is ever FTS5 syntax. Pure."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

MAX_TERMS = 64  # each term is one more doclist to merge: a pasted page is not a query


class QueryError(ValueError):
    """A query that cannot be searched for; str() says why, in a line."""


@dataclass(frozen=True, slots=True)
class Term:
    text: str  # as typed (a phrase's words with their spaces), control characters removed
    phrase: bool = False
    prefix: bool = False


def is_token_char(ch: str) -> bool:
    """What FTS5's unicode61 tokenizer keeps in a token: letters, numbers, private use, and
    the marks it folds away; everything else separates tokens."""
    cat = unicodedata.category(ch)
    return cat[0] in "LNM" or cat == "Co"


def _has_token(text: str) -> bool:
    return any(is_token_char(ch) for ch in text)


def _clean(text: str) -> str:
    """Control and format characters (NUL, escapes, direction overrides) separate words."""
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Cs") else ch for ch in text)


def parse(text: str) -> tuple[Term, ...]:
    """The terms of a query; QueryError for one with an unclosed quote, a lone `*`, or no
    word at all. Chunks with no letter or digit (`-`, `(`) are dropped: they match nothing."""
    text = _clean(text)
    terms: list[Term] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise QueryError(
                    'the query has a " that no other " closes: write a phrase as "two words"'
                )
            j = end + 1
            while j < n and text[j] == "*":
                j += 1
            body = " ".join(text[i + 1 : end].split())
            if _has_token(body):
                terms.append(Term(body, phrase=True, prefix=j > end + 1))
            i = j
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] != '"':
                j += 1
            chunk = text[i:j]
            word = chunk.rstrip("*")
            if not word.replace("*", ""):
                raise QueryError(
                    "a * on its own matches nothing: put it at the end of a word, as in resum*"
                )
            if _has_token(word):
                terms.append(Term(word, prefix=len(word) < len(chunk)))
            i = j
    if not terms:
        raise QueryError("the query has no word to search for (letters or digits)")
    if len(terms) > MAX_TERMS:
        raise QueryError(f"the query has {len(terms)} terms: at most {MAX_TERMS}")
    return tuple(terms)


def fts_string(text: str) -> str:
    """`text` as an FTS5 string literal: whatever it holds, it is only words to FTS5."""
    return '"' + text.replace('"', '""') + '"'


def to_match(terms: tuple[Term, ...]) -> str:
    """The FTS5 expression: every term must match (FTS5's implicit AND), each a string."""
    return " ".join(fts_string(t.text) + ("*" if t.prefix else "") for t in terms)


def fold(text: str) -> str:
    """Case- and accent-insensitive form of a name, for `--from`: compatibility forms
    unified, marks dropped, case folded."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
