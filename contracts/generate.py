"""Generate the published artefacts from the code: infra/topics.yaml and one JSON Schema per event.

Run `python -m contracts.generate` after changing the catalogue; `--check` exits non-zero when
the checked-in files differ from what the code generates (the contract tests run it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from contracts import commands as _commands  # noqa: F401  (registers the commands)
from contracts.envelope import Envelope
from contracts.events import CATALOGUE
from contracts.topics import provisioning_document

ROOT = Path(__file__).resolve().parent.parent
TOPICS_FILE = ROOT / "infra" / "topics.yaml"
SCHEMA_DIR = ROOT / "contracts" / "schemas"

TOPICS_HEADER = (
    "# Topic catalogue: every Kafka topic gridwhistle uses, with its dead-letter twin.\n"
    "# Generated from contracts/topics.py (python -m contracts.generate); a test fails if it drifts.\n"
)


def event_schema(model: type) -> dict:
    """The JSON Schema of one event version: the envelope with this payload as `data`."""
    envelope = Envelope.model_json_schema()
    payload = model.model_json_schema()
    defs = {**envelope.pop("$defs", {}), **payload.pop("$defs", {})}
    envelope["properties"]["data"] = payload
    envelope["properties"]["type"] = {"const": model.event_type, "type": "string"}
    envelope["properties"]["version"] = {"const": model.version, "type": "integer"}
    envelope["title"] = f"{model.event_type} v{model.version}"
    envelope["$id"] = f"https://gridwhistle.example/schemas/{model.event_type}.v{model.version}.json"
    envelope["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    if defs:
        envelope["$defs"] = defs
    return envelope


def generated_files() -> dict[Path, str]:
    """Every generated file and its expected content."""
    files = {TOPICS_FILE: TOPICS_HEADER + yaml.safe_dump(provisioning_document(), sort_keys=False, allow_unicode=True)}
    for model in CATALOGUE.models():
        path = SCHEMA_DIR / f"{model.event_type}.v{model.version}.json"
        files[path] = json.dumps(event_schema(model), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the generated files."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if checked-in files are stale")
    args = parser.parse_args(argv)
    stale = []
    for path, content in generated_files().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    if args.check and stale:
        print("stale generated files (run `python -m contracts.generate`):", file=sys.stderr)
        for path in stale:
            print(f"  {path.relative_to(ROOT)}", file=sys.stderr)
        return 1
    print(f"{'checked' if args.check else 'wrote'} {len(generated_files())} files; {len(stale)} changed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
