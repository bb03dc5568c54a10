"""The gate's answer is encoded by hand on the hot path (VerifyDecision.to_json_bytes): it must
be exactly what json.dumps makes of the dict, for any string a gate or the gateway puts in."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.services.decision import REASONS, VerifyDecision

_text = st.text(max_size=40)
_attributes = st.dictionaries(st.sampled_from(["concession", "adult", "name_masked", "x\"y"]),
                              st.one_of(st.none(), st.booleans(), _text), max_size=3)


@given(decision=st.sampled_from(["allow", "deny"]), reason=st.sampled_from(REASONS),
       face=st.one_of(st.none(), st.sampled_from(["ykm", "essc", "ssc_card"])),
       request_id=_text, verified_at=_text, subject=st.one_of(st.none(), _text),
       attributes=_attributes)
def test_bytes_are_json_dumps_of_the_dict(decision: Any, reason: Any, face: Any,
                                          request_id: str, verified_at: str,
                                          subject: str | None,
                                          attributes: dict[str, Any]) -> None:
    d = VerifyDecision(decision, reason, face, request_id, verified_at, subject=subject,
                       attributes=attributes)
    raw = d.to_json_bytes()
    assert raw == json.dumps(d.to_json()).encode("utf-8")
    assert json.loads(raw) == d.to_json()


def test_hostile_request_id_stays_one_string() -> None:
    d = VerifyDecision("deny", "replayed", "ykm", 'a", "decision": "allow', "t")
    assert json.loads(d.to_json_bytes())["decision"] == "deny"
