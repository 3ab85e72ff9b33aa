"""The console's pure pieces: CSRF tokens, the sign-in redirect guard, template filters, autoescape."""

from __future__ import annotations

import math

from aicloud.server.console.pages.signin import _safe_next
from aicloud.server.console.render import ENV, _num, _size
from aicloud.server.console.session import csrf_matches, csrf_token

TOKEN = "aic_tok_0123456789abcdef_" + "x" * 43


def test_a_csrf_token_belongs_to_its_session() -> None:
    token = csrf_token(TOKEN)
    assert len(token) == 64 and token == csrf_token(TOKEN)
    assert csrf_matches(TOKEN, token)
    assert not csrf_matches(TOKEN, None) and not csrf_matches(TOKEN, "")
    assert not csrf_matches(TOKEN, csrf_token(TOKEN[:-1] + "y"))
    assert TOKEN not in token  # derived, not the cookie itself


def test_sign_in_only_returns_to_a_path_of_this_site() -> None:
    assert _safe_next("/runs?p=lr") == "/runs?p=lr"
    for hostile in ["https://evil.example/", "//evil.example/x", "/\\evil.example", "", None, "javascript:x"]:
        assert _safe_next(hostile) == "/", hostile


def test_numbers_and_sizes_read_well() -> None:
    assert _num(1234) == "1,234" and _num(2.0) == "2" and _num(0.000123456) == "0.0001235"
    assert _num(None) == "" and _num("adam") == "adam" and _num(math.nan) == "nan" and _num(True) == "True"
    assert _size(512) == "512 B" and _size(1536) == "1.5 KiB" and _size(3 * 1024**3) == "3.0 GiB"


def test_templates_escape_markup() -> None:
    html = ENV.from_string("<p>{{ name }}</p>").render(name="<script>alert(1)</script>")
    assert html == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert (
        ENV.get_template("_error.html")
        .render(code=404, title="Not found", message="<b>x</b>")
        .count("&lt;b&gt;")
        == 1
    )
