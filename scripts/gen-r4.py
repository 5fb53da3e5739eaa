#!/usr/bin/env python3
"""Derives the compact FHIR R4 definitions fhirstream needs at run time from
the official definitions in ../shared/fhir-r4, so the server never reads
../shared. Re-run after changing what is derived; the output is committed.

Usage: python3 scripts/gen-r4.py [PATH_TO_FHIR_R4_DIR]
"""
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "..", "shared", "fhir-r4")

schema = json.load(open(os.path.join(src, "fhir.schema.json")))
types = sorted(schema["discriminator"]["mapping"].keys())

out = os.path.join(root, "schemas", "src", "r4", "resource_types.rs")
with open(out, "w") as f:
    f.write("//! The FHIR R4 (4.0.1) resource types, derived from the official JSON schema\n")
    f.write("//! by `scripts/gen-r4.py`. Generated: do not edit by hand.\n\n")
    f.write("/// Every R4 resource type name, sorted so lookups can binary-search.\n")
    f.write("pub(crate) const RESOURCE_TYPES: &[&str] = &[\n")
    for t in types:
        f.write(f'    "{t}",\n')
    f.write("];\n")
print(f"wrote {len(types)} resource types to {os.path.relpath(out, root)}")
