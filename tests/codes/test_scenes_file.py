"""GATEWAY_SCENES_FILE: the operator's own scene catalogue (CONTRACT: the operator edits the
scene catalogue); a file that does not parse stops start-up instead of serving a guess."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.services.scenes import SceneCatalogueError
from gateway.settings import Settings

BUILT_IN = Path(__file__).resolve().parents[2] / "gateway" / "data" / "scenes.json"


async def test_an_edited_catalogue_is_served(make_gateway: Any, tmp_path: Path) -> None:
    doc = json.loads(BUILT_IN.read_text("utf-8"))
    doc["version"] = "ops-2026-11"
    doc["scenes"] = [s for s in doc["scenes"] if s["id"] != "internet_cafe"]
    path = tmp_path / "scenes.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), "utf-8")
    gw = await make_gateway(scenes_file=path)
    r = await gw.client.get("/v1/scenes")
    ids = {s["id"] for s in (await r.json())["scenes"]}
    assert "internet_cafe" not in ids and "metro" in ids


async def test_a_broken_catalogue_stops_start_up(make_gateway: Any, tmp_path: Path) -> None:
    path = tmp_path / "scenes.json"
    path.write_text('{"scenes": "not a list"}', "utf-8")
    with pytest.raises(SceneCatalogueError):
        await make_gateway(scenes_file=path)


def test_the_variable_is_read() -> None:
    s = Settings.from_env({"GATEWAY_SCENES_FILE": "/etc/gateway/scenes.json"})
    assert s.scenes_file == Path("/etc/gateway/scenes.json")
