#!/usr/bin/env python3
"""Derives the Patient compartment (which search parameters of which types
point a resource at a Patient) from the official CompartmentDefinition in
../shared/fhir-r4, so the server never reads ../shared. Patient-level bulk
export uses it. Re-run after changing what is derived; the output is committed.

Usage: python3 scripts/gen-patient-compartment.py [PATH_TO_FHIR_R4_DIR]
"""
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "..", "shared", "fhir-r4")

d = json.load(open(os.path.join(src, "compartmentdefinition-patient.json")))
entries = sorted((r["code"], r["param"]) for r in d["resource"] if r.get("param"))

out = os.path.join(root, "schemas", "src", "r4", "patient_compartment.rs")
with open(out, "w") as f:
    f.write("//! The FHIR R4 Patient compartment: for each resource type in it, the search\n")
    f.write("//! parameters whose references put a resource in a Patient's compartment.\n")
    f.write("//! Derived from the official CompartmentDefinition by\n")
    f.write("//! `scripts/gen-patient-compartment.py`. Generated: do not edit by hand.\n\n")
    f.write("/// (type, parameters), sorted by type so lookups can binary-search.\n")
    f.write("pub(crate) const PATIENT_COMPARTMENT: &[(&str, &[&str])] = &[\n")
    for code, params in entries:
        ps = ", ".join(f'"{p}"' for p in params)
        f.write(f'    ("{code}", &[{ps}]),\n')
    f.write("];\n")
print(f"wrote {len(entries)} compartment types to {os.path.relpath(out, root)}")
