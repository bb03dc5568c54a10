"""The scene catalogue (场景目录) v0: where a code or card may be used, and what it may disclose.

Source: 渝府办发〔2021〕130号 附件 (the 20 "一卡通一码通" scenes) and 渝府办发〔2024〕73号 (card
forms 实体卡/电子卡 and application categories 身份识别/缴费支付). docs/scenes.md documents the
catalogue and the data-minimisation rule: a gate of a scene receives ONLY the attribute names
listed for that scene (个人信息保护法 第六条, minimum necessary), and door scenes receive nothing
but the pairwise subject.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

__all__ = [
    "ATTRIBUTES",
    "CATEGORIES",
    "FACES",
    "Category",
    "Scene",
    "SceneCatalogue",
    "SceneCatalogueError",
]

Category = Literal["identity", "payment"]

#: 身份识别 / 缴费支付 (渝府办发〔2024〕73号 三大功能; 资金发放 has no gate scene).
CATEGORIES: Final[frozenset[str]] = frozenset({"identity", "payment"})
#: 渝快码, 电子社保卡 code, 实体社保卡 tap.
FACES: Final[frozenset[str]] = frozenset({"ykm", "essc", "ssc_card"})
#: The attribute vocabulary the identity service can disclose (docs/scenes.md).
ATTRIBUTES: Final[frozenset[str]] = frozenset(
    {"concession", "adult", "name_masked", "ssc_card_no", "essc_region"}
)

DEFAULT_PATH: Final = Path(__file__).resolve().parent.parent / "data" / "scenes.json"


class SceneCatalogueError(ValueError):
    """The catalogue file is not a valid catalogue (raised at load, never on a request)."""


@dataclass(frozen=True)
class Scene:
    """One scene: its accepted faces, its category and the only attributes it may receive."""

    id: str
    name_zh: str
    name_en: str
    category: Category
    faces: frozenset[str]
    attributes: tuple[str, ...]
    essc_regions: frozenset[str]
    notes: str = ""

    def permits(self, face: str, region: str | None = None) -> bool:
        """Scene policy: the face is accepted and, for e-SSC, the issuing region too."""
        if face not in self.faces:
            return False
        if face == "essc":
            return region is not None and region in self.essc_regions
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name_zh": self.name_zh,
            "name_en": self.name_en,
            "category": self.category,
            "faces": sorted(self.faces),
            "attributes": list(self.attributes),
            "essc_regions": sorted(self.essc_regions),
            "notes": self.notes,
        }


def _scene(raw: Mapping[str, Any]) -> Scene:
    try:
        sid = str(raw["id"])
        category = raw["category"]
        faces = frozenset(str(f) for f in raw["faces"])
        attributes = tuple(str(a) for a in raw.get("attributes", ()))
        regions = frozenset(str(r) for r in raw.get("essc_regions", ()))
        scene = Scene(id=sid, name_zh=str(raw["name_zh"]), name_en=str(raw["name_en"]),
                      category=category, faces=faces, attributes=attributes,
                      essc_regions=regions, notes=str(raw.get("notes", "")))
    except (KeyError, TypeError) as exc:
        raise SceneCatalogueError(f"scene entry missing or mistyped field: {exc}") from exc
    if category not in CATEGORIES:
        raise SceneCatalogueError(f"scene {sid}: unknown category {category!r}")
    if not faces or not faces <= FACES:
        raise SceneCatalogueError(f"scene {sid}: faces must be a non-empty subset of FACES")
    unknown = set(attributes) - ATTRIBUTES
    if unknown or len(set(attributes)) != len(attributes):
        raise SceneCatalogueError(f"scene {sid}: bad attributes {sorted(unknown)}")
    if "essc" in faces and not regions:
        raise SceneCatalogueError(f"scene {sid}: accepts essc but names no essc_regions")
    return scene


class SceneCatalogue:
    """The loaded catalogue; immutable once built (reload = build a new one)."""

    def __init__(self, scenes: Iterable[Scene], version: str = "0") -> None:
        by_id: dict[str, Scene] = {}
        for s in scenes:
            if s.id in by_id:
                raise SceneCatalogueError(f"duplicate scene id {s.id}")
            by_id[s.id] = s
        self._by_id: Mapping[str, Scene] = MappingProxyType(by_id)
        self.version = version

    @classmethod
    def load(cls, path: Path | str | None = None) -> SceneCatalogue:
        """Read a catalogue file (default: gateway/data/scenes.json)."""
        p = Path(path) if path is not None else DEFAULT_PATH
        try:
            doc = json.loads(p.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise SceneCatalogueError(f"cannot read scene catalogue {p}: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("scenes"), list):
            raise SceneCatalogueError("scene catalogue must be an object with a 'scenes' list")
        return cls((_scene(s) for s in doc["scenes"]), version=str(doc.get("version", "0")))

    def get(self, scene_id: str) -> Scene | None:
        return self._by_id.get(scene_id)

    def all(self) -> tuple[Scene, ...]:
        return tuple(self._by_id.values())

    def __contains__(self, scene_id: object) -> bool:
        return scene_id in self._by_id

    def to_json(self) -> dict[str, Any]:
        """What GET /v1/scenes serves."""
        return {"version": self.version, "scenes": [s.to_json() for s in self.all()]}
