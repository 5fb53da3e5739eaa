#!/usr/bin/env python3
"""Compiles the official FHIR R4 StructureDefinitions and core value sets in
../shared/fhir-r4 into the table the write-path validator walks
(schemas/src/validate/r4.json, embedded at build time), so the server never
reads ../shared and never walks a generic schema.

What is derived, per type (resources, data types, and every backbone element
as a type of its own named by its path, e.g. `Patient.contact`):
  elements   JSON key -> {"t": type, "m": 1 if max is "*",
                          "c": choice base name for value[x] variants,
                          "b": url of a required, enumerable value set,
                          "s": 1 if isSummary, "x": 1 if isModifier}
  required   lists of JSON keys of which one must be present (min 1);
             a choice contributes all of its variants as one list
  kind       "resource" | "complex" | "primitive"
Primitives carry their JSON type and the spec's regular expression.
Value sets: only those bound `required` somewhere and enumerable from the
core definitions (explicit concepts, whole code systems present with their
concepts, other enumerable value sets); each as {system: [codes]}.

Usage: python3 scripts/gen-structure.py [PATH_TO_FHIR_R4_DIR]
"""
import gzip
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "..", "shared", "fhir-r4")
out = os.path.join(root, "schemas", "src", "validate", "r4.json")

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
NUMBER_TYPES = {"integer", "positiveInt", "unsignedInt", "decimal"}


def load_bundle(name):
    return [e["resource"] for e in json.load(gzip.open(os.path.join(src, name)))["entry"]]


def type_code(t):
    """The FHIR type of an ElementDefinition.type entry (System.String -> its fhir-type)."""
    code = t["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in t.get("extension", []):
            if ext["url"] == FHIR_TYPE_EXT:
                return ext["valueUrl"]
        return "string"
    return {"SimpleQuantity": "Quantity", "MoneyQuantity": "Quantity"}.get(code, code)


def strip_version(url):
    return url.split("|", 1)[0]


def flags(entry, e):
    """The summary and modifier flags `_summary` and `_elements` need."""
    if e.get("isSummary"):
        entry["s"] = 1
    if e.get("isModifier"):
        entry["x"] = 1


sds = [
    sd
    for sd in load_bundle("profiles-types.json.gz") + load_bundle("profiles-resources.json.gz")
    if sd["resourceType"] == "StructureDefinition"
    and sd.get("derivation") != "constraint"
    and sd["kind"] in ("primitive-type", "complex-type", "resource")
]

types = {}
primitives = {}
bindings = set()

for sd in sds:
    name = sd["id"]
    if sd["kind"] == "primitive-type":
        value = next(e for e in sd["snapshot"]["element"] if e["path"] == f"{name}.value")
        regex = next(
            (x["valueString"] for t in value.get("type", []) for x in t.get("extension", []) if x["url"] == REGEX_EXT),
            None,
        )
        json_type = "boolean" if name == "boolean" else "number" if name in NUMBER_TYPES else "string"
        primitives[name] = {"json": json_type, **({"regex": regex} if regex else {})}
        continue
    elements = sd["snapshot"]["element"]
    by_path = {e["path"]: e for e in elements}
    # A path with children is a type of its own (the root, backbone elements).
    parents = {e["path"].rsplit(".", 1)[0] for e in elements if "." in e["path"]}
    kind = "resource" if sd["kind"] == "resource" else "complex"
    for p in sorted(parents):
        types.setdefault(p, {"kind": kind if p == name else "complex", "elements": {}, "required": []})
    for e in elements:
        path = e["path"]
        if "." not in path or e.get("max") == "0":
            continue
        parent, leaf = path.rsplit(".", 1)
        t = types[parent]
        many = e.get("max") == "*"
        binding = None
        b = e.get("binding")
        if b and b.get("strength") == "required" and b.get("valueSet"):
            binding = strip_version(b["valueSet"])
        if "contentReference" in e:
            codes = [e["contentReference"].lstrip("#")]
        elif path in parents:
            codes = [path]
        else:
            codes = [type_code(x) for x in e.get("type", [])]
            if path == f"{name}.id" and kind == "resource" or path == "Resource.id":
                codes = ["id"]
        def entry(code, choice=None):
            row = {"t": code}
            if choice:
                row["c"] = choice
            if many:
                row["m"] = 1
            if binding:
                row["b"] = binding
            flags(row, e)
            return row

        if leaf.endswith("[x]"):
            base = leaf[:-3]
            keys = [base + c[0].upper() + c[1:] for c in codes]
            for key, c in zip(keys, codes):
                t["elements"][key] = entry(c, base)
        else:
            assert len(codes) == 1, (path, codes)
            keys = [leaf]
            t["elements"][leaf] = entry(codes[0])
        if e.get("min", 0) >= 1:
            t["required"].append(keys)
        if binding:
            bindings.add(binding)

# Abstract bases stand for "any resource" (contained, Bundle.entry.resource).
for abstract in ("Resource", "DomainResource"):
    types[abstract]["kind"] = "abstract"

# --- value sets -------------------------------------------------------------
vs_bundle = load_bundle("valuesets.json.gz")
code_systems = {cs["url"]: cs for cs in vs_bundle if cs["resourceType"] == "CodeSystem"}
value_sets = {vs["url"]: vs for vs in vs_bundle if vs["resourceType"] == "ValueSet"}


def concepts(cs_concepts):
    for c in cs_concepts:
        yield c["code"]
        yield from concepts(c.get("concept", []))


def expand(url, seen=()):
    """{system: set(codes)} or None when not enumerable from the core definitions."""
    vs = value_sets.get(url)
    if vs is None or url in seen:
        return None
    compose = vs.get("compose")
    if not compose or compose.get("exclude"):
        return None
    result = {}
    for inc in compose.get("include", []):
        if inc.get("filter"):
            return None
        part = {}
        if inc.get("valueSet"):
            for other in inc["valueSet"]:
                sub = expand(strip_version(other), seen + (url,))
                if sub is None:
                    return None
                for s, cs in sub.items():
                    part.setdefault(s, set()).update(cs)
        system = inc.get("system")
        if system:
            if inc.get("concept"):
                codes = {c["code"] for c in inc["concept"]}
            else:
                cs = code_systems.get(system)
                if cs is None or cs.get("content") != "complete":
                    return None
                codes = set(concepts(cs.get("concept", [])))
            if inc.get("valueSet"):
                codes &= part.get(system, set())
                part = {system: codes}
            else:
                part.setdefault(system, set()).update(codes)
        for s, cs in part.items():
            result.setdefault(s, set()).update(cs)
    return result or None


enumerable = {}
for url in sorted(bindings):
    expanded = expand(url)
    if expanded:
        enumerable[url] = {s: sorted(c) for s, c in sorted(expanded.items())}

# A binding the table cannot enumerate is dropped (and counted below).
for t in types.values():
    for entry in t["elements"].values():
        if "b" in entry and entry["b"] not in enumerable:
            del entry["b"]

doc = {
    "fhirVersion": "4.0.1",
    "primitives": dict(sorted(primitives.items())),
    "types": {k: types[k] for k in sorted(types)},
    "valueSets": enumerable,
}
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as f:
    json.dump(doc, f, separators=(",", ":"), sort_keys=False)
    f.write("\n")
n_elements = sum(len(t["elements"]) for t in types.values())
print(
    f"wrote {len(types)} types, {len(primitives)} primitives, {n_elements} element keys, "
    f"{len(enumerable)} of {len(bindings)} required value sets to {os.path.relpath(out, root)}"
)
