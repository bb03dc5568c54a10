"""The offline upload's answer is written from each result's JSON as stored for the upload
sent again (gateway/services/offline.py `results_body`), and the body's nesting check skips
the bytes that cannot nest (gateway/web/http.py `_json_depth`): both must say exactly what the
slower, obvious code said."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.services.offline import Answered, OfflineResult, results_body, results_json
from gateway.web.http import _json_depth

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_RESULTS = st.builds(
    OfflineResult, st.none() | _TEXT, st.sampled_from(["confirmed", "double_use", "invalid"]),
    st.none() | _TEXT, st.none() | st.tuples(_TEXT, _TEXT))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_RESULTS, st.booleans()), max_size=8))
def test_the_answer_is_the_results_json(rows: list[tuple[OfflineResult, bool]]) -> None:
    answered = [Answered(r, r.dumps() if stored else None) for r, stored in rows]
    body = results_body(answered)
    assert json.loads(body) == results_json([r for r, _ in rows])
    for r, _ in rows:  # what the idempotency store keeps reads back as the same result
        assert OfflineResult.loads(r.dumps()) == r


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=30)


def _depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(_JSON, st.booleans())
def test_json_depth_is_the_nesting(value: Any, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert _json_depth(raw) == _depth(value)
