"""MLflow's search syntax: filter strings, ``order_by`` terms and page tokens (pure functions).

A filter is comparisons joined by ``AND`` (MLflow has no ``OR``): ``metrics.acc > 0.5 AND
params.lr = '0.1' AND tags."mlflow.user" LIKE 'a%' AND attributes.status = 'FINISHED'``. Keys
may be quoted with double quotes or backticks; values are numbers, quoted strings, or for
``IN`` / ``NOT IN`` a parenthesized list of strings. Errors are ``BadRequestError`` naming what
is wrong (MLflow's INVALID_PARAMETER_VALUE).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from aicloud.errors import BadRequestError
from aicloud.store.tracking import Clause, ClauseKind, OrderKey

MAX_FILTER_CHARS = 10_000
MAX_MILLIS = 253_402_300_799_999  # the last millisecond of the year 9999

_PREFIXES: dict[str, ClauseKind] = {
    "metric": "metric",
    "metrics": "metric",
    "param": "param",
    "params": "param",
    "parameter": "param",
    "parameters": "param",
    "tag": "tag",
    "tags": "tag",
    "attribute": "attribute",
    "attributes": "attribute",
    "attr": "attribute",
    "run": "attribute",
}

#: MLflow's run statuses and aicloud's (SCHEDULED has no aicloud counterpart: it matches nothing).
STATUS_TO_AICLOUD = {"RUNNING": "running", "FINISHED": "succeeded", "FAILED": "failed", "KILLED": "cancelled"}
STATUS_FROM_AICLOUD = {v: k for k, v in STATUS_TO_AICLOUD.items()}

_RUN_ATTRIBUTES = {
    "status": "status",
    "run_name": "run_name",
    "run_id": "run_id",
    "start_time": "start_time",
    "created": "start_time",
    "end_time": "end_time",
}
_NUMERIC_OPS = {"=", "!=", "<", "<=", ">", ">="}
_TEXT_OPS = {"=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"}

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<backtick>`[^`]*`)
    | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    | (?P<op><=|>=|!=|<>|=|<|>)
    | (?P<punct>[(),])
    | (?P<word>[A-Za-z_][\w.:/-]*)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body) if text[0] in "'\"" else body


def _tokens(text: str) -> list[_Token]:
    if len(text) > MAX_FILTER_CHARS:
        raise BadRequestError(f"the filter is longer than {MAX_FILTER_CHARS} characters")
    out: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise BadRequestError(f"cannot parse the filter at {text[pos : pos + 20].strip()!r}")
        kind = match.lastgroup or ""
        out.append(_Token(kind, match.group(kind)))
        pos = match.end()
    return out


class _Reader:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise BadRequestError("the filter ends too early")
        self.i += 1
        return token

    def word(self, *words: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "word" and token.text.upper() in words:
            self.i += 1
            return True
        return False


def _identifier(reader: _Reader) -> tuple[str, str]:
    """(prefix, key) of ``metrics.acc``, ``tags."a b"``, ``params.`lr```, ``status``."""
    token = reader.take()
    if token.kind != "word":
        raise BadRequestError(f"expected a key such as metrics.accuracy, found {token.text!r}")
    prefix, dot, key = token.text.partition(".")
    if dot and not key:  # metrics."a key" or metrics.`a key`
        quoted = reader.take()
        if quoted.kind not in ("string", "backtick"):
            raise BadRequestError(f"expected a quoted key after {token.text!r}")
        key = _unquote(quoted.text)
    if not dot:
        prefix, key = "attributes", token.text
    return prefix.lower(), key


def _operator(reader: _Reader) -> str:
    if reader.word("NOT"):
        if not reader.word("IN"):
            raise BadRequestError("NOT must be followed by IN")
        return "NOT IN"
    for word in ("LIKE", "ILIKE", "IN"):
        if reader.word(word):
            return word
    token = reader.take()
    if token.kind != "op":
        raise BadRequestError(f"expected a comparison (=, !=, <, >, LIKE, IN ...), found {token.text!r}")
    return "!=" if token.text == "<>" else token.text


def _value(reader: _Reader, op: str) -> float | str | tuple[str, ...]:
    token = reader.take()
    if op in ("IN", "NOT IN"):
        if token.text != "(":
            raise BadRequestError(f"{op} takes a list in parentheses: ('a', 'b')")
        items: list[str] = []
        while True:
            item = reader.take()
            if item.kind != "string":
                raise BadRequestError(f"{op} lists quoted strings, found {item.text!r}")
            items.append(_unquote(item.text))
            sep = reader.take()
            if sep.text == ")":
                return tuple(items)
            if sep.text != ",":
                raise BadRequestError(f"expected , or ) in the {op} list, found {sep.text!r}")
    if token.kind == "number":
        return float(token.text)
    if token.kind == "string":
        return _unquote(token.text)
    raise BadRequestError(f"expected a number or a quoted string, found {token.text!r}")


def _kind(prefix: str) -> ClauseKind:
    kind = _PREFIXES.get(prefix)
    if kind is None:
        raise BadRequestError(
            f"unknown key type {prefix!r}: use metrics., params., tags. or attributes."
            + (" (dataset filters are not supported)" if prefix.startswith("dataset") else "")
        )
    return kind


_SEARCH_KEY = re.compile(r"[\w./ :-]{1,250}")


def _checked(kind: ClauseKind, key: str) -> str:
    """A metric, param or tag key as MLflow allows them (so it is a safe JSON path everywhere)."""
    if kind != "attribute" and not _SEARCH_KEY.fullmatch(key):
        raise BadRequestError(f"invalid key {key!r}: 1 to 250 letters, digits, spaces and _ - . / :")
    return key


def _alias(kind: ClauseKind, key: str) -> tuple[ClauseKind, str]:
    """MLflow's synonyms: the run name is also the tag ``mlflow.runName``, the user the attribute
    ``user_id`` and the tag ``mlflow.user`` (aicloud keeps the name as the run's, the user as a tag)."""
    if kind == "tag" and key == "mlflow.runName":
        return "attribute", "run_name"
    if kind == "attribute" and key == "user_id":
        return "tag", "mlflow.user"
    return kind, key


def _run_clause(prefix: str, key: str, op: str, value: Any) -> Clause:
    kind, key = _alias(_kind(prefix), key)
    key = _checked(kind, key)
    if kind == "tag" and key == "mlflow.user":
        prefix = "tags"
    if kind == "metric":
        if op not in _NUMERIC_OPS or not isinstance(value, float):
            raise BadRequestError(f"metrics.{key} compares with a number (=, !=, <, <=, >, >=)")
        return Clause(kind, key, op, value)
    if kind in ("param", "tag"):
        if op not in _TEXT_OPS or isinstance(value, float):
            raise BadRequestError(f"{prefix}.{key} compares with a quoted string (=, !=, LIKE, ILIKE, IN)")
        return Clause(kind, key, op, value)
    attribute = _RUN_ATTRIBUTES.get(key)
    if attribute is None:
        raise BadRequestError(f"unknown attribute {key!r}: use one of {', '.join(sorted(_RUN_ATTRIBUTES))}")
    if attribute in ("start_time", "end_time"):
        if op not in _NUMERIC_OPS or not isinstance(value, float) or not 0 <= value <= MAX_MILLIS:
            raise BadRequestError(f"attributes.{key} compares with a number of milliseconds since 1970")
        return Clause(kind, attribute, op, value)
    if op not in _TEXT_OPS or isinstance(value, float):
        raise BadRequestError(f"attributes.{key} compares with a quoted string")
    if attribute == "status":
        if op not in ("=", "!=", "IN", "NOT IN"):
            raise BadRequestError("attributes.status takes =, !=, IN or NOT IN")
        values = value if isinstance(value, tuple) else (value,)
        mapped = tuple(STATUS_TO_AICLOUD.get(str(v).upper(), "-") for v in values)
        return Clause(kind, attribute, op, mapped if isinstance(value, tuple) else mapped[0])
    return Clause(kind, attribute, op, value)


def parse_filter(text: str | None) -> list[tuple[str, str, str, Any]]:
    """(prefix, key, op, value) of each comparison of a filter, in order."""
    if not text or not text.strip():
        return []
    reader = _Reader(text)
    out = []
    while True:
        prefix, key = _identifier(reader)
        op = _operator(reader)
        out.append((prefix, key, op, _value(reader, op)))
        if reader.peek() is None:
            return out
        if not reader.word("AND"):
            token = reader.take()
            hint = " (MLflow's filters join comparisons with AND only)" if token.text.upper() == "OR" else ""
            raise BadRequestError(f"expected AND, found {token.text!r}{hint}")


def run_filter(text: str | None) -> tuple[Clause, ...]:
    """A ``search_runs`` filter as store clauses."""
    return tuple(_run_clause(*parsed) for parsed in parse_filter(text))


def parse_order(terms: list[str] | None) -> list[tuple[str, str, bool]]:
    """(prefix, key, ascending) of each ``order_by`` term (``metrics.acc DESC``)."""
    out = []
    for term in terms or []:
        reader = _Reader(term)
        prefix, key = _identifier(reader)
        ascending = True
        if reader.word("DESC"):
            ascending = False
        else:
            reader.word("ASC")
        if reader.peek() is not None:
            raise BadRequestError(f"cannot parse order_by {term!r}: a key, then ASC or DESC")
        out.append((prefix, key, ascending))
    return out


def run_order(terms: list[str] | None) -> tuple[OrderKey, ...]:
    """``search_runs``'s ``order_by`` as store order keys."""
    keys = []
    for prefix, key, ascending in parse_order(terms):
        kind, key = _alias(_kind(prefix), key)
        key = _checked(kind, key)
        if kind == "attribute":
            if key not in _RUN_ATTRIBUTES:
                raise BadRequestError(f"cannot order by attribute {key!r}")
            key = _RUN_ATTRIBUTES[key]
        keys.append(OrderKey(kind, key, ascending))
    return tuple(keys)


def page_offset(token: str | None) -> int:
    """The offset a page token stands for (0 without one)."""
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadRequestError("invalid page_token: pass next_page_token from the previous page") from None
    if not isinstance(offset, int) or offset < 0:
        raise BadRequestError("invalid page_token: pass next_page_token from the previous page")
    return offset


def page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def like(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    """SQL LIKE (``%`` any run, ``_`` one character) in Python."""
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def compare(left: Any, op: str, right: Any) -> bool:
    """One parsed comparison evaluated in Python (experiment search); None never matches."""
    if left is None:
        return False
    if op in ("IN", "NOT IN"):
        values = right if isinstance(right, tuple) else (right,)
        return (left in values) == (op == "IN")
    if op in ("LIKE", "ILIKE"):
        return like(str(right), str(left), ignore_case=op == "ILIKE")
    if isinstance(right, float) != isinstance(left, float | int):
        raise BadRequestError(f"cannot compare {left!r} with {right!r}")
    checks = {
        "=": left == right,
        "!=": left != right,
        "<": left < right,
        "<=": left <= right,
        ">": left > right,
        ">=": left >= right,
    }
    return bool(checks[op])
