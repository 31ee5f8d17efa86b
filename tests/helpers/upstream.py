"""Validate a document against the upstream runtime-spec v1.3.0 schemas (the test oracle in
../shared; never copied into the project)."""
from __future__ import annotations

import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO.parent / "shared" / "oci-runtime-spec" / "v1.3.0" / "schema"


def validate(schema_name: str, doc: dict) -> None:
    if not SCHEMA_DIR.is_dir():
        pytest.skip("upstream schemas (../shared) not available")
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    def load(p):
        # upstream v1.3.0 has "#definitions/uint32" (missing '/'), fixed on main later
        return json.loads(p.read_text().replace('"#definitions/', '"#/definitions/'))

    resources = []
    for p in SCHEMA_DIR.glob("*.json"):
        r = Resource.from_contents(load(p), default_specification=DRAFT4)
        resources += [(p.name, r), (f"file://{p}", r)]
    registry = Registry().with_resources(resources)
    jsonschema.Draft4Validator(load(SCHEMA_DIR / schema_name), registry=registry).validate(doc)
