"""Helper of `cargo xtask deploy-check` (xtask/src/deploy_check.rs), run by
the Python of the check's venv (target/deploy-check/venv).

Reads rendered manifests (multi-document YAML, one file per argument) and
prints one JSON object on stdout: {"documents": {path: [document, ...]},
"errors": [message, ...]}, so that the Rust side checks them with
serde_json.

Each PodMonitor is validated against prometheus-operator's models, which
are generated from its CRD (cloudcoil.models.prometheus_operator):
kubernetes-validate has no schema for custom resources. The models ignore
unknown fields, so strictness comes from a round trip: a field the model
did not keep is unknown to the CRD.
"""

import json
import sys

import pydantic
import yaml
from cloudcoil.models.prometheus_operator.v1 import PodMonitor


def dropped(given, kept, path):
    """Paths present in `given` that the model did not keep (or changed)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            where = f"{path}.{key}" if path else key
            if key not in kept:
                yield f"unknown field {where}"
            else:
                yield from dropped(value, kept[key], where)
    elif isinstance(given, list) and isinstance(kept, list):
        for index, (a, b) in enumerate(zip(given, kept)):
            yield from dropped(a, b, f"{path}[{index}]")
    elif given != kept:
        yield f"{path}: {given!r} read as {kept!r}"


def main():
    documents = {}
    errors = []
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as file:
            docs = [d for d in yaml.safe_load_all(file) if d is not None]
        for doc in docs:
            if (doc.get("apiVersion"), doc.get("kind")) != ("monitoring.coreos.com/v1", "PodMonitor"):
                continue
            name = f"{path}: PodMonitor {doc.get('metadata', {}).get('name')}"
            try:
                model = PodMonitor.model_validate(doc)
            except pydantic.ValidationError as error:
                errors.append(f"{name}: {error}")
                continue
            kept = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
            errors.extend(f"{name}: {problem}" for problem in dropped(doc, kept, ""))
        documents[path] = docs
    json.dump({"documents": documents, "errors": errors}, sys.stdout)


main()
