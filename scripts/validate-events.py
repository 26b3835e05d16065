#!/usr/bin/env python3
"""Validates the event contract with a real JSON Schema validator (jsonschema, draft 2020-12).

    python scripts/validate-events.py                      # schema, documented examples, hostile corpus
    python scripts/validate-events.py --events FILE.jsonl  # also: every event of FILE (one JSON per line)

Checks:
- docs/event.schema.json is a valid draft 2020-12 schema;
- every ```json block of docs/events.md is an event the schema accepts;
- every file of Fuzz/corpus: `ok--*` files are accepted; every other file is rejected (not UTF-8,
  not JSON, or invalid), unless Fuzz/schema-exceptions.tsv lists it with the reason the schema
  cannot reject it — and then it must really be accepted, so the list stays true.
Exit status 0 when everything holds, 1 otherwise (each failure is printed).
"""
import argparse
import json
import pathlib
import re
import sys

from jsonschema import Draft202012Validator

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_instance(raw: bytes):
    """The JSON value of a record, or None when it is not UTF-8 JSON at all."""
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        return None
    def no_constants(name):
        raise ValueError(f"not JSON: {name}")
    try:
        return ("ok", json.loads(text, parse_constant=no_constants))
    except (ValueError, RecursionError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", action="append", default=[], help="JSON-lines file of events that must be valid")
    args = parser.parse_args()

    schema = json.loads((ROOT / "docs/event.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    failures = []

    def valid(instance) -> bool:
        return validator.is_valid(instance)

    # Documented examples.
    doc = (ROOT / "docs/events.md").read_text()
    examples = re.findall(r"```json\n(.*?)```", doc, flags=re.S)
    if len(examples) < 4:
        failures.append(f"docs/events.md: expected an example of every type, found {len(examples)} json blocks")
    for i, text in enumerate(examples, 1):
        try:
            instance = json.loads(text)
        except ValueError as e:
            failures.append(f"docs/events.md example {i}: not JSON: {e}")
            continue
        for error in validator.iter_errors(instance):
            failures.append(f"docs/events.md example {i}: {error.message}")

    # The hostile corpus.
    exceptions = {}
    for line in (ROOT / "Fuzz/schema-exceptions.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.partition("\t")
            if not reason.strip():
                failures.append(f"Fuzz/schema-exceptions.tsv: {name} has no reason")
            exceptions[name] = reason
    corpus = sorted((ROOT / "Fuzz/corpus").iterdir())
    for path in corpus:
        loaded = load_instance(path.read_bytes())
        accepted = loaded is not None and valid(loaded[1])
        if path.name.startswith("ok--"):
            if not accepted:
                failures.append(f"Fuzz/corpus/{path.name}: the decoder accepts it, the schema does not")
        elif path.name in exceptions:
            if not accepted:
                failures.append(f"Fuzz/corpus/{path.name}: listed in schema-exceptions.tsv but the schema rejects it: remove it from the list")
        elif accepted:
            failures.append(f"Fuzz/corpus/{path.name}: the decoder rejects it, the schema accepts it, and schema-exceptions.tsv gives no reason")
    for name in exceptions:
        if not (ROOT / "Fuzz/corpus" / name).exists():
            failures.append(f"Fuzz/schema-exceptions.tsv: {name} is not in Fuzz/corpus")

    # Events from producers.
    produced = 0
    for file in args.events:
        for n, line in enumerate(pathlib.Path(file).read_text().splitlines(), 1):
            if not line.strip():
                continue
            produced += 1
            instance = json.loads(line)
            for error in validator.iter_errors(instance):
                failures.append(f"{file}:{n}: {error.message}: {line[:200]}")

    for f in failures:
        print("FAIL " + f)
    print(f"event contract: {len(examples)} documented examples, {len(corpus)} corpus files "
          f"({len(exceptions)} listed exceptions), {produced} produced events: "
          + ("ok" if not failures else f"{len(failures)} failures"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
