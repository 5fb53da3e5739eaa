#!/usr/bin/env python3
"""Derives the search parameters fhirstream indexes from the official R4
SearchParameter definitions in ../shared/fhir-r4, compiling each FHIRPath
expression into simple path steps, so the server never evaluates FHIRPath
and never reads ../shared. The output, schemas/src/search/params.json, is
committed; re-run after changing what is derived.

The StructureDefinitions are read to know, for every step, the data type it
reaches and which elements are choices (`value[x]`): a plain path onto a
choice becomes an explicit list of its concrete JSON keys (`valueQuantity`,
`valueString`, ...), so the Rust side never guesses.

Step encoding (one JSON object per step):
  {"f": "name", "t": "HumanName"}   field; "t" is the data type when known
  {"c": [["valueQuantity", "Quantity"], ...]}  any of these choice keys
  {"w": ["system", "email"]}        keep objects whose field equals the string
  {"is": "Patient"}                 keep references whose target is that type
  {"i": 0}                          keep only that element of the collection
  {"truthy": true}                  the collection as one boolean: non-empty
                                    and not `false` (`X.exists() and X != false`)

Usage: python3 scripts/gen-search-params.py [-v] [PATH_TO_FHIR_R4_DIR]
(-v lists every unsupported parameter with the reason.)
"""
import gzip
import json
import os
import re
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
args = [a for a in sys.argv[1:] if not a.startswith("-")]
verbose = "-v" in sys.argv[1:]
src = args[0] if args else os.path.join(root, "..", "shared", "fhir-r4")

SUPPORTED = {"string", "token", "date", "reference", "number", "quantity", "uri"}
COMMON_BASES = {"Resource", "DomainResource"}

schema = json.load(open(os.path.join(src, "fhir.schema.json")))
resource_types = sorted(schema["discriminator"]["mapping"].keys())
bundle = json.load(open(os.path.join(src, "search-parameters.json")))
search_params = [e["resource"] for e in bundle["entry"]]


def structure_definitions(name):
    with gzip.open(os.path.join(src, name)) as f:
        entries = json.load(f)["entry"]
    return {e["resource"]["id"]: e["resource"] for e in entries if e["resource"]["resourceType"] == "StructureDefinition"}


resource_sds = structure_definitions("profiles-resources.json.gz")
type_sds = structure_definitions("profiles-types.json.gz")
elements = {}  # (sd id, element path) -> element definition
for sd_id, sd in list(resource_sds.items()) + list(type_sds.items()):
    for el in sd["snapshot"]["element"]:
        elements[(sd_id, el["path"])] = el
domain_resources = {
    t for t in resource_types if resource_sds.get(t, {}).get("baseDefinition", "").endswith("/DomainResource")
}


class Unsupported(Exception):
    """An expression (part) outside the grammar this compiler handles."""


# --- parsing: the FHIRPath subset actually used by the R4 definitions ------

TOKEN = re.compile(r"\s*(?:(?P<str>'[^']*')|(?P<num>\d+)|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>!=|[.()\[\]=|]))")


def tokenize(expr):
    pos, out = 0, []
    expr = expr.strip()
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise Unsupported(f"cannot tokenize at {expr[pos:]!r}")
        pos = m.end()
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
    return out


def split_union(expr):
    """The top-level `|` parts of an expression (none is inside quotes or
    brackets in R4, but a `|` there must not split)."""
    parts, depth, quoted, cur = [], 0, False, ""
    for ch in expr:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch in "([":
            depth += 1
        elif not quoted and ch in ")]":
            depth -= 1
        if ch == "|" and depth == 0 and not quoted:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


class Parser:
    """Parses one union part into (start identifier or None, [operation])
    where an operation is ("field", name), ("ofType", T), ("where_eq", f, s),
    ("where_is", T), ("index", n) or ("truthy",)."""

    def __init__(self, tokens):
        self.toks, self.i = tokens, 0

    def peek(self, k=0):
        return self.toks[self.i + k] if self.i + k < len(self.toks) else (None, None)

    def take(self, kind=None, value=None):
        tok = self.peek()
        if tok[0] is None or (kind and tok[0] != kind) or (value and tok[1] != value):
            raise Unsupported(f"expected {value or kind}, got {tok[1]!r}")
        self.i += 1
        return tok[1]

    def part(self):
        ops = self.path()
        if self.peek() == ("id", "as"):
            self.take()
            ops.append(("ofType", self.take("id")))
        if self.peek() == ("id", "and"):
            # `X.exists() and X != false`: only this exact form is understood.
            raise Unsupported("boolean expression")
        if self.peek()[0] is not None:
            raise Unsupported(f"trailing {self.peek()[1]!r}")
        return ops

    def path(self):
        if self.peek() == ("op", "("):
            self.take()
            ops = self.path()
            if self.peek() == ("id", "as"):
                self.take()
                ops.append(("ofType", self.take("id")))
            self.take("op", ")")
        else:
            ops = [("field", self.take("id"))]
        while True:
            if self.peek() == ("op", "."):
                self.take()
                name = self.take("id")
                if self.peek() == ("op", "("):
                    ops.append(self.call(name))
                else:
                    ops.append(("field", name))
            elif self.peek() == ("op", "["):
                self.take()
                ops.append(("index", int(self.take("num"))))
                self.take("op", "]")
            else:
                return ops

    def call(self, name):
        self.take("op", "(")
        if name == "ofType":
            op = ("ofType", self.take("id"))
        elif name == "where" and self.peek() == ("id", "resolve"):
            self.take()
            self.take("op", "(")
            self.take("op", ")")
            self.take("id", "is")
            op = ("where_is", self.take("id"))
        elif name == "where" and self.peek(1) == ("op", "=") and self.peek(2)[0] == "str":
            field = self.take("id")
            self.take("op", "=")
            op = ("where_eq", field, self.take("str")[1:-1])
        else:
            raise Unsupported(f"function {name}()")
        self.take("op", ")")
        return op


TRUTHY = re.compile(r"^\s*(?P<x>[A-Za-z.]+)\.exists\(\)\s+and\s+(?P=x)\s*!=\s*false\s*$")


def parse_part(text):
    m = TRUTHY.match(text)
    if m:
        return Parser(tokenize(m.group("x"))).part() + [("truthy",)]
    return Parser(tokenize(text)).part()


# --- compiling against the StructureDefinitions ----------------------------


def type_code(t):
    """The FHIR type of an element type entry; `id` elements say
    System.String and carry the FHIR type in an extension."""
    for ext in t.get("extension", []):
        if ext.get("url", "").endswith("structuredefinition-fhir-type"):
            return ext.get("valueUrl") or ext.get("valueUri")
    code = t["code"]
    return code.rsplit(".", 1)[-1].lower() if code.startswith("http://hl7.org/fhirpath/System.") else code


def node_for(sd_id, path, el):
    """Where field lookups continue after reaching `el`: its own children
    (backbone elements) or the root of its data type's definition."""
    if "contentReference" in el:
        target = el["contentReference"].lstrip("#")
        return (sd_id, target), None
    codes = [type_code(t) for t in el.get("type", [])]
    if len(codes) != 1:
        raise Unsupported(f"{path} has {len(codes)} types")
    code = codes[0]
    if code in ("BackboneElement", "Element"):
        return (sd_id, path), None
    if code in type_sds:
        return (code, code), code
    if code in resource_sds:
        return (code, code), code
    raise Unsupported(f"{path}: unknown type {code}")


def choice_key(field, code):
    return field + code[0].upper() + code[1:]


def compile_ops(start_type, ops):
    """Compiles operations (the first being the start type, already checked)
    into steps. State: the (sd, element path) node field lookups use, or a
    pending choice (field name, allowed type codes) that ofType may resolve."""
    steps = []
    node = (start_type, start_type)
    choice = None  # (field, [type codes]) not yet emitted

    def flush_choice():
        nonlocal choice, node
        field, codes = choice
        steps.append({"c": [[choice_key(field, c), c] for c in codes]})
        choice = None
        # Further fields after an unresolved choice would need a type per
        # branch; none of the R4 definitions do that.
        node = None

    for op in ops:
        if op[0] == "ofType":
            want = op[1]
            if choice is not None:
                field, codes = choice
                if want not in codes:
                    raise Unsupported(f"ofType({want}) not among {codes}")
                steps.append({"f": choice_key(field, want), "t": want})
                node = (want, want) if want in type_sds else None
                choice = None
            else:
                # A type filter on a single-typed element: a no-op when it
                # matches, an empty path otherwise.
                last = steps[-1].get("t") if steps else None
                if last != want:
                    raise Unsupported(f"ofType({want}) on {last}")
            continue
        if choice is not None:
            flush_choice()
        if op[0] == "field":
            if node is None:
                raise Unsupported("field after an unresolved choice")
            sd_id, path = node
            name = op[1]
            el = elements.get((sd_id, f"{path}.{name}"))
            if el is not None:
                node, dtype = node_for(sd_id, f"{path}.{name}", el)
                step = {"f": name}
                if dtype is None and "contentReference" not in el:
                    codes = [type_code(t) for t in el.get("type", [])]
                    dtype = codes[0] if codes and codes[0] not in ("BackboneElement", "Element") else None
                if dtype:
                    step["t"] = dtype
                steps.append(step)
                continue
            el = elements.get((sd_id, f"{path}.{name}[x]"))
            if el is None:
                raise Unsupported(f"no element {path}.{name}")
            choice = (name, [type_code(t) for t in el["type"]])
            node = None
        elif op[0] == "where_eq":
            steps.append({"w": [op[1], op[2]]})
        elif op[0] == "where_is":
            if steps and steps[-1].get("t") != "Reference":
                raise Unsupported("resolve() on a non-reference")
            steps.append({"is": op[1]})
        elif op[0] == "index":
            steps.append({"i": op[1]})
        elif op[0] == "truthy":
            steps.append({"truthy": True})
        else:
            raise Unsupported(f"operation {op[0]}")
    if choice is not None:
        flush_choice()
    final = steps[-1].get("t") if steps else None
    if final in resource_sds or final == "Resource":
        # e.g. `Bundle.entry[0].resource`: a whole inline resource, not a
        # reference the index could hold.
        raise Unsupported(f"path ends at a resource ({final})")
    return steps


def compile_for(param, base):
    """The compiled paths of `param` on `base` (a resource type or
    `Resource`), or raises Unsupported."""
    expr = param.get("expression")
    if not expr:
        raise Unsupported("no expression")
    paths = []
    for text in split_union(expr):
        if not text:
            raise Unsupported("empty part")
        ops = parse_part(text)
        first = ops[0]
        if first[0] != "field":
            raise Unsupported("part does not start with a name")
        if first[1] in resource_sds:
            if first[1] not in (base, "Resource"):
                continue  # this part is about another base type
            ops = ops[1:]
        # else: unprefixed (`name | alias`), relative to the base
        paths.append(compile_ops(base if base != "Resource" else "Resource", ops))
    if not paths:
        raise Unsupported(f"no part for {base}")
    return paths


def entry(param, paths):
    out = {"name": param["code"], "type": param["type"], "url": param["url"]}
    targets = sorted(t for t in param.get("target", []) if t in resource_types)
    if len(targets) > len(resource_types) // 2:
        # "Any" lists all but a few types; naming the few keeps the file small.
        out["target_except"] = sorted(set(resource_types) - set(targets))
    elif targets:
        out["target"] = targets
    out["paths"] = paths
    return out


common, common_unsupported = [], {}  # unsupported common name -> applies to DomainResource only
by_type = {t: {"params": [], "unsupported": []} for t in resource_types}
reasons = {}
for p in sorted(search_params, key=lambda p: p["code"]):
    bases = p["base"]
    if set(bases) & COMMON_BASES:
        only_domain = "DomainResource" in bases
        if p["type"] not in SUPPORTED:
            common_unsupported[p["code"]] = only_domain
            reasons[("*", p["code"])] = p["type"]
            continue
        try:
            common.append(entry(p, compile_for(p, "Resource")))
        except Unsupported as e:
            common_unsupported[p["code"]] = only_domain
            reasons[("*", p["code"])] = str(e)
        continue
    for base in bases:
        if base not in by_type:
            continue
        if p["type"] not in SUPPORTED:
            by_type[base]["unsupported"].append(p["code"])
            reasons[(base, p["code"])] = p["type"]
            continue
        try:
            by_type[base]["params"].append(entry(p, compile_for(p, base)))
        except Unsupported as e:
            by_type[base]["unsupported"].append(p["code"])
            reasons[(base, p["code"])] = str(e)

for t, d in by_type.items():
    for name, only_domain in common_unsupported.items():
        if not only_domain or t in domain_resources:
            d["unsupported"].append(name)
    d["unsupported"].sort()

out_doc = {
    "_": "Generated by scripts/gen-search-params.py from the official FHIR R4 definitions: do not edit by hand.",
    "common": common,
    "types": by_type,
}
text = json.dumps(out_doc, ensure_ascii=True, separators=(",", ":"))
# Rust borrows names and URLs straight from the embedded text, so no string
# may need unescaping.
assert "\\" not in text, "an escaped string would not borrow"
out = os.path.join(root, "schemas", "src", "search", "params.json")
with open(out, "w") as f:
    # One line per resource type keeps diffs of re-generations readable.
    f.write("{\n")
    f.write(f'"_":{json.dumps(out_doc["_"])},\n')
    f.write(f'"common":{json.dumps(common, separators=(",", ":"))},\n')
    f.write('"types":{\n')
    f.write(",\n".join(f'{json.dumps(t)}:{json.dumps(d, separators=(",", ":"))}' for t, d in by_type.items()))
    f.write("\n}}\n")

if verbose:
    for (t, name), why in sorted(reasons.items()):
        print(f"  unsupported {t}.{name}: {why}", file=sys.stderr)
n_sup = len(common) * len(by_type) + sum(len(d["params"]) for d in by_type.values())
n_uns = sum(len(d["unsupported"]) for d in by_type.values())
print(
    f"wrote {os.path.relpath(out, root)}: {n_sup} supported and {n_uns} unsupported (type, parameter) pairs "
    f"over {len(by_type)} resource types ({len(common)} common parameters on each), {os.path.getsize(out)} bytes"
)
