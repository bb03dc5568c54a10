"""The built-in catalogue against its sources: every scene of 渝府办发〔2021〕130号 (seed 004,
rows 1-20) and every 身份识别 row of 渝府办发〔2024〕73号's task table (seed 000) that is a
place a card is shown, each scene citing its seed and row; the fixes issue 15 names."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.services.scenes import (
    CATEGORIES,
    SceneCatalogue,
    SceneInvalid,
    validate_scene,
)

CAT = SceneCatalogue.load()
#: 73号 rows whose 应用类别 includes 身份识别 (read from seed 000's table)
IDENTITY_ROWS_73 = {1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 29, 30, 31, 32,
                    33, 35, 36, 37, 38, 39, 40, 41}


def _rows(seed: str) -> set[int]:
    return {s.row for sc in CAT.all() for s in sc.sources if s.seed == seed}


def test_every_scene_of_130_hao_is_in_the_catalogue() -> None:
    assert _rows("004") == set(range(1, 21))


def test_every_identity_row_of_73_hao_is_cited() -> None:
    assert IDENTITY_ROWS_73 <= _rows("000")


def test_every_scene_cites_a_source_and_names_its_categories() -> None:
    for sc in CAT.all():
        assert sc.sources, sc.id
        assert sc.categories and set(sc.categories) <= set(CATEGORIES), sc.id
        assert sc.card_forms, sc.id


def test_the_fixes_the_issue_names() -> None:
    hotel = CAT.get("hotel")
    assert hotel is not None and hotel.permits("ssc_card")          # 73号 row 11
    assert ("000", 11) in {(s.seed, s.row) for s in hotel.sources}
    for medical, item in (("hospital", 54), ("pharmacy", 55)):
        sc = CAT.get(medical)
        assert sc is not None and sc.permits("essc", "SC") and sc.permits("essc", "GD")
        assert ("003", item) in {(s.seed, s.row) for s in sc.sources}
    site = CAT.get("construction_site")
    assert site is not None
    assert {(s.seed, s.row) for s in site.sources} == {("000", 5)}
    assert site.categories == ("identity", "disbursement")
    metro = CAT.get("metro")
    assert metro is not None and metro.categories == ("identity", "payment")  # row 29
    assert CAT.get("internet_cafe") is not None and not CAT.get("internet_cafe").permits(
        "ssc_card")  # 130号 row 6: 渝快码 only


def test_v0_scene_ids_keep_working() -> None:
    for sid in ("metro", "bus", "scenic_spot", "library", "museum", "community_door", "hotel",
                "internet_cafe", "pharmacy", "hospital", "service_hall", "campus",
                "construction_site"):
        assert sid in CAT


def _good() -> dict[str, Any]:
    sc = CAT.get("library")
    assert sc is not None
    return sc.to_json()


@pytest.mark.parametrize(("change", "field"), [
    ({"faces": []}, "faces"),
    ({"faces": ["ykm", "qr"]}, "faces/1"),
    ({"categories": ["identity", "fun"]}, "categories/1"),
    ({"categories": []}, "categories"),
    ({"attributes": ["citizen_id"]}, "attributes/0"),
    ({"essc_regions": []}, "essc_regions"),
    ({"essc_regions": ["Sichuan"]}, "essc_regions"),
    ({"name_zh": ""}, "name_zh"),
    ({"sources": [{"seed": "009", "row": 1}]}, "sources/0/seed"),
    ({"sources": [{"seed": "000", "row": "x"}]}, "sources/0/row"),
    ({"depth_target": {"2025": "四级"}}, "depth_target/2025"),
    ({"card_forms": ["磁条卡"]}, "card_forms/0"),
    ({"colour": "red"}, "colour"),
    ({"id": "Library"}, "id"),
])
def test_a_scene_that_does_not_validate_names_the_field(change: dict[str, Any],
                                                        field: str) -> None:
    raw = {**_good(), **change}
    with pytest.raises(SceneInvalid) as exc:
        validate_scene(raw)
    assert exc.value.field == field


@given(st.dictionaries(st.sampled_from(sorted(_good())), st.one_of(
    st.none(), st.integers(), st.text(max_size=5), st.lists(st.text(max_size=3), max_size=3))))
def test_validation_either_accepts_or_names_a_field(change: dict[str, Any]) -> None:
    raw = {**_good(), **change}
    try:
        sc = validate_scene(raw)
    except SceneInvalid as exc:
        assert exc.field.split("/")[0] in set(raw) | {"categories", ""}
    else:
        assert validate_scene(sc.to_json()) == sc  # what it answers reads back the same
