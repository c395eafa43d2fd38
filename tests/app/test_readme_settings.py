"""The README's settings table lists every setting with its real default; compose passes them on."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_documents_every_setting_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `VIRALIENCY_(\w+)` \| `?([^`|]+?)`? \|", README.read_text(), re.M))
    fields = Settings.model_fields
    assert {name.lower() for name in rows} == set(fields)
    for name, documented in rows.items():
        field = fields[name.lower()]
        if field.default_factory is not None:
            continue  # computed at start-up (e.g. the CPU count)
        default = field.default
        if default is None:
            assert documented == "unset", name
        elif isinstance(default, bool):
            assert documented == str(default).lower(), name
        elif isinstance(default, (int, float)):
            assert float(documented) == float(default), name
        else:
            assert documented == str(default), name


def test_compose_passes_on_every_setting_but_the_images_own_address() -> None:
    compose = (README.parent / "docker-compose.yml").read_text()
    passed = set(re.findall(r"^ {6}- VIRALIENCY_(\w+)\b", compose, re.M))
    assert {name.lower() for name in passed} == set(Settings.model_fields) - {"host", "port"}
