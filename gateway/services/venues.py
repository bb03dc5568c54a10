"""The venue registry (点位): where gates stand.

73号 三(二) asks the departments to keep 应用场景点位清单 — per scene, the list of places
where the card is used. A venue is one such place: `id`, `name`, `scene` (catalogue id),
`district` (one of Chongqing's 38 区县, by its administrative division code, GB/T 2260),
`operator` (the organisation running it), `status` (`active` | `inactive`) and an optional
`address`. Every gate belongs to one venue; application depth (gateway/services/stats.py)
counts active venues with at least one active gate.

The CSV import is all or nothing: every row is validated first and a single bad row refuses
the whole file, naming each bad row's number and field; a valid file is written in one atomic
step and importing it again changes nothing (idempotent).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from gateway.services.ports import VenueStore
from gateway.services.scenes import SceneCatalogue

#: 重庆市 38 区县 by administrative division code (26 区, 8 县, 4 自治县).
DISTRICTS: Final[Mapping[str, str]] = MappingProxyType({
    "500101": "万州区", "500102": "涪陵区", "500103": "渝中区", "500104": "大渡口区",
    "500105": "江北区", "500106": "沙坪坝区", "500107": "九龙坡区", "500108": "南岸区",
    "500109": "北碚区", "500110": "綦江区", "500111": "大足区", "500112": "渝北区",
    "500113": "巴南区", "500114": "黔江区", "500115": "长寿区", "500116": "江津区",
    "500117": "合川区", "500118": "永川区", "500119": "南川区", "500120": "璧山区",
    "500151": "铜梁区", "500152": "潼南区", "500153": "荣昌区", "500154": "开州区",
    "500155": "梁平区", "500156": "武隆区",
    "500229": "城口县", "500230": "丰都县", "500231": "垫江县", "500233": "忠县",
    "500235": "云阳县", "500236": "奉节县", "500237": "巫山县", "500238": "巫溪县",
    "500240": "石柱土家族自治县", "500241": "秀山土家族苗族自治县",
    "500242": "酉阳土家族苗族自治县", "500243": "彭水苗族土家族自治县",
})
STATUSES: Final = ("active", "inactive")
CSV_COLUMNS: Final = ("id", "name", "scene", "district", "operator", "status", "address")
MAX_CSV_ROWS: Final = 50_000
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class VenueInvalid(ValueError):
    def __init__(self, field: str, message: str, row: int | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.row = row

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "message": self.message}
        if self.row is not None:
            out["row"] = self.row
        return out


class CsvRefused(ValueError):
    """The file is refused whole: every bad row with its number (1 = the header line)."""

    def __init__(self, errors: Sequence[VenueInvalid]) -> None:
        super().__init__(f"{len(errors)} bad row(s)")
        self.errors = list(errors)


@dataclass(frozen=True)
class Venue:
    id: str
    name: str
    scene: str
    district: str
    operator: str
    status: str = "active"
    address: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "scene": self.scene,
                "district": self.district, "district_name": DISTRICTS[self.district],
                "operator": self.operator, "status": self.status, "address": self.address}

    def stored(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "scene": self.scene,
                "district": self.district, "operator": self.operator, "status": self.status,
                "address": self.address}


def _text(raw: Mapping[str, Any], name: str, max_len: int, required: bool = True) -> str:
    value = raw.get(name)
    if value is None or value == "":
        if required:
            raise VenueInvalid(name, "is required")
        return ""
    if not isinstance(value, str) or len(value) > max_len or not value.strip():
        raise VenueInvalid(name, f"must be a string of at most {max_len} characters")
    if any(ord(c) < 32 for c in value):
        raise VenueInvalid(name, "must not hold control characters")
    return value.strip()


def validate_venue(raw: Any, scenes: SceneCatalogue, *, venue_id: str | None = None) -> Venue:
    if not isinstance(raw, Mapping):
        raise VenueInvalid("", "a venue must be an object")
    unknown = sorted(set(raw) - set(CSV_COLUMNS) - {"district_name"})
    if unknown:
        raise VenueInvalid(unknown[0], "is not a venue member")
    vid = raw.get("id", venue_id)
    if not isinstance(vid, str) or not _ID.match(vid):
        raise VenueInvalid("id", "must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'")
    if vid == "import":
        raise VenueInvalid("id", "import is reserved (POST /admin/v1/venues/import)")
    if venue_id is not None and vid != venue_id:
        raise VenueInvalid("id", "differs from the venue id in the path")
    scene = _text(raw, "scene", 48)
    if scene not in scenes:
        raise VenueInvalid("scene", f"{scene!r} is not a scene of the catalogue")
    district = _text(raw, "district", 6)
    if district not in DISTRICTS:
        raise VenueInvalid("district", f"{district!r} is not one of Chongqing's 38 区县 codes "
                                       "(500101 万州区 … 500243 彭水县)")
    status = _text(raw, "status", 16, required=False) or "active"
    if status not in STATUSES:
        raise VenueInvalid("status", "must be active or inactive")
    return Venue(id=vid, name=_text(raw, "name", 200), scene=scene, district=district,
                 operator=_text(raw, "operator", 200), status=status,
                 address=_text(raw, "address", 500, required=False))


def parse_csv(text: str, scenes: SceneCatalogue) -> list[Venue]:
    """Every row of a venue CSV (header: CSV_COLUMNS, `address` optional), or CsvRefused
    with every bad row. Row numbers count the header as row 1, as a spreadsheet shows them."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")), strict=True)
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise CsvRefused([VenueInvalid("header", f"not CSV: {exc}", 1)]) from None
    missing = [c for c in CSV_COLUMNS if c != "address" and c not in header]
    extra = [c for c in header if c not in CSV_COLUMNS]
    if missing or extra:
        msg = (f"missing column(s) {', '.join(missing)}" if missing
               else f"unknown column(s) {', '.join(extra)}")
        raise CsvRefused([VenueInvalid("header", msg, 1)])
    venues: list[Venue] = []
    errors: list[VenueInvalid] = []
    seen: dict[str, int] = {}
    row_no = 1
    try:
        for row in reader:
            row_no = reader.line_num
            if len(venues) + len(errors) >= MAX_CSV_ROWS:
                errors.append(VenueInvalid("", f"more than {MAX_CSV_ROWS} rows", row_no))
                break
            if None in row or any(v is None for v in row.values()):
                errors.append(VenueInvalid("", "wrong number of columns", row_no))
                continue
            try:
                v = validate_venue({k: v for k, v in row.items() if v != ""}, scenes)
            except VenueInvalid as exc:
                exc.row = row_no
                errors.append(exc)
                continue
            if v.id in seen:
                errors.append(VenueInvalid("id", f"repeats row {seen[v.id]}", row_no))
                continue
            seen[v.id] = row_no
            venues.append(v)
    except csv.Error as exc:
        errors.append(VenueInvalid("", f"not CSV: {exc}", row_no + 1))
    if errors:
        raise CsvRefused(errors)
    return venues


@dataclass(frozen=True)
class ImportReport:
    created: int
    updated: int
    unchanged: int

    def to_json(self) -> dict[str, int]:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged}


class VenueRegistry:
    def __init__(self, store: VenueStore, scenes: SceneCatalogue) -> None:
        self.store = store
        self.scenes = scenes

    async def put(self, raw: Any, venue_id: str | None = None) -> tuple[Venue, bool]:
        """Create or replace one venue; (venue, created)."""
        venue = validate_venue(raw, self.scenes, venue_id=venue_id)
        existing = await self.store.get(venue.id)
        await self.store.put_many([venue.stored()])
        return venue, existing is None

    async def import_csv(self, text: str) -> ImportReport:
        venues = parse_csv(text, self.scenes)
        current = {v["id"]: v for v in await self.store.list()}
        changed = [v.stored() for v in venues if current.get(v.id) != v.stored()]
        created = sum(1 for v in venues if v.id not in current)
        if changed:
            await self.store.put_many(changed)
        return ImportReport(created=created, updated=len(changed) - created,
                            unchanged=len(venues) - len(changed))

    async def get(self, venue_id: str) -> Venue | None:
        raw = await self.store.get(venue_id)
        return _venue(raw) if raw else None

    async def list(self, district: str | None = None, scene: str | None = None) -> list[Venue]:
        out = [_venue(v) for v in await self.store.list()]
        return sorted((v for v in out if (district is None or v.district == district)
                       and (scene is None or v.scene == scene)), key=lambda v: v.id)

    async def assign_gate(self, gate_id: str, gate_scene: str | None, venue_id: str) -> Venue:
        """Put a gate in a venue: the venue exists and serves the gate's scene."""
        venue = await self.get(venue_id)
        if venue is None:
            raise VenueInvalid("venue", f"no venue {venue_id}")
        if gate_scene is not None and venue.scene != gate_scene:
            raise VenueInvalid("venue", f"venue {venue_id} is a {venue.scene} venue, the gate "
                                        f"is registered for {gate_scene}")
        await self.store.assign_gate(gate_id, venue_id)
        return venue


def _venue(raw: Mapping[str, Any]) -> Venue:
    return Venue(id=raw["id"], name=raw["name"], scene=raw["scene"], district=raw["district"],
                 operator=raw["operator"], status=raw.get("status", "active"),
                 address=raw.get("address", ""))


class VenueIndex:
    """A worker's in-memory view: gate → (venue, district, scene), rebuilt when the venue
    registry's version moves. Metrics and statistics label by district from here."""

    def __init__(self) -> None:
        self.version = -1
        self.gates: Mapping[str, tuple[str, str, str]] = MappingProxyType({})
        self.venues: Mapping[str, Venue] = MappingProxyType({})

    def district_of(self, gate_id: str) -> str:
        entry = self.gates.get(gate_id)
        return entry[1] if entry else "unassigned"

    async def refresh(self, store: VenueStore, force: bool = False) -> bool:
        v = await store.version()
        if v == self.version and not force:
            return False
        venues = {raw["id"]: _venue(raw) for raw in await store.list()}
        gates = {}
        for gate, vid in (await store.gate_venues()).items():
            venue = venues.get(vid)
            if venue is not None:
                gates[gate] = (vid, venue.district, venue.scene)
        self.venues = MappingProxyType(venues)
        self.gates = MappingProxyType(gates)
        self.version = v
        return True

