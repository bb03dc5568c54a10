"""The layering is a test: imports point one way (import-linter contracts in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    r = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_private_key_material_is_tracked() -> None:
    r = subprocess.run(["git", "grep", "-l", "-E", "BEGIN ([A-Z]+ )?PRIVATE KEY", "--", "."],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.strip() == ""


def test_log_scrubber_redacts_secret_fields() -> None:
    from gateway.logs import _scrub

    event = {"event": "x", "client_secret": "s", "code": "YK1:...", "citizen_id": "5001",
             "access_token": "t", "reason_code": "ok", "status_code": 200}
    out = _scrub(None, "info", dict(event))
    assert out["client_secret"] == out["code"] == out["citizen_id"] == "[redacted]"
    assert out["access_token"] == "[redacted]"
    assert out["reason_code"] == "ok" and out["status_code"] == 200


def _environment_reads(path: Path) -> list[str]:
    """`os.environ`, `os.environb`, `os.getenv`, `os.putenv`, `from os import environ …`."""
    import ast

    names = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr in names and \
                isinstance(node.value, ast.Name) and node.value.id == "os":
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and \
                any(a.name in names for a in node.names):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} from os import …")
    return found


def test_nothing_but_settings_reads_the_environment() -> None:
    """Every setting is in gateway/settings.py, read once (issue 13): build_app(settings)
    depends on its Settings alone, never on the process environment."""
    settings = ROOT / "gateway" / "settings.py"
    reads = [hit for path in sorted((ROOT / "gateway").rglob("*.py")) if path != settings
             for hit in _environment_reads(path)]
    assert reads == []
    assert _environment_reads(settings)  # the scan does find a read where there is one
