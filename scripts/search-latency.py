#!/usr/bin/env python3
"""Search latency on Synthea data, alone and beside a neighbour tenant that
holds ten times more (the isolation ratio). A benchmark, not a test.

Against a running server (`make run` in another terminal):

    python3 scripts/search-latency.py --token "$(make -s token)"

It creates two fresh tenants, imports the 119 Synthea bundles into the
first with `target/release/fhirstream import`, times five representative
searches (median of --runs), then imports ten relabelled copies of the
bundles (new ids, same shape) into the neighbour, waits for the projector,
and times the same searches again. Prints a Markdown table.
"""
import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def call(args, method, path, body=None, ctype="application/json"):
    req = urllib.request.Request(args.base + path, method=method, data=body)
    if args.token:
        req.add_header("Authorization", "Bearer " + args.token)
    if body is not None:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=120) as res:
        return json.loads(res.read() or b"null")


def bundles(src):
    for name in sorted(os.listdir(src)):
        with gzip.open(os.path.join(src, name)) as f:
            yield name, json.load(f)


def relabel(bundle, copy):
    """A copy of a Bundle with every urn:uuid (and resource id) replaced."""
    text = json.dumps(bundle)
    for e in bundle["entry"]:
        old = e["fullUrl"].removeprefix("urn:uuid:")
        new = str(uuid.uuid5(uuid.NAMESPACE_URL, f"copy-{copy}-{old}"))
        text = text.replace(old, new)
    return text


def import_dir(args, tenant, path):
    cmd = [args.binary, "import", "--tenant", tenant, "--quiet", "--nats-url", args.nats_url, path]
    started = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - started


def wait_projected(args, tenant, expected):
    while True:
        got = call(args, "GET", f"/fhir/{tenant}/_history?_count=0")["total"]
        if got >= expected:
            return
        time.sleep(1)


def timed(args, tenant, query):
    samples = []
    for _ in range(args.runs):
        started = time.perf_counter()
        call(args, "GET", f"/fhir/{tenant}/{query}")
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def searches_for(loaded):
    patient = next(e["resource"] for _, b in loaded for e in b["entry"] if e["resource"]["resourceType"] == "Patient")
    family = patient["name"][0]["family"][:4]
    return [
            ("Patient by family", f"Patient?family={family}"),
            ("Patient by birthdate range and gender", "Patient?birthdate=ge1970-01-01&birthdate=lt1980-01-01&gender=female"),
            ("Observation by code, date and subject",
             f"Observation?code=http://loinc.org|8302-2&date=ge2010-01-01&subject=Patient/{patient['id']}"),
            ("Encounter by year with _include", "Encounter?date=2015&_include=Encounter:subject&_count=50"),
            ("Condition by chained family", f"Condition?subject:Patient.family={family}"),
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="http://127.0.0.1:8080")
    p.add_argument("--token", default=os.environ.get("FHIRSTREAM_TOKEN"))
    p.add_argument("--nats-url", default="nats://127.0.0.1:4233")
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "fhirstream"))
    p.add_argument("--synthea", default=os.path.join(ROOT, "..", "shared", "data", "synthea-r4"))
    p.add_argument("--copies", type=int, default=10)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--time-only", metavar="TENANT", help="only time the searches in an already loaded tenant")
    args = p.parse_args()

    if args.time_only:
        loaded = list(bundles(args.synthea))
        for name, q in searches_for(loaded):
            print(f"{name}: {timed(args, args.time_only, q):.1f} ms")
        return
    suffix = uuid.uuid4().hex[:6]
    mine, neighbour = f"lat-{suffix}", f"lat-n-{suffix}"
    for t in (mine, neighbour):
        call(args, "POST", "/admin/tenants", json.dumps({"id": t, "name": t}).encode())

    loaded = list(bundles(args.synthea))
    count = sum(len(b["entry"]) for _, b in loaded)
    import_dir(args, mine, args.synthea)
    # Organizations and Practitioners repeat across bundles: wait for most.
    wait_projected(args, mine, int(count * 0.98))

    searches = searches_for(loaded)
    alone = {name: timed(args, mine, q) for name, q in searches}

    with tempfile.TemporaryDirectory() as tmp:
        for copy in range(args.copies):
            for name, b in loaded:
                with open(os.path.join(tmp, f"c{copy}-{name.removesuffix('.gz')}"), "w") as f:
                    f.write(relabel(b, copy))
        seconds = import_dir(args, neighbour, tmp)
    wait_projected(args, neighbour, int(count * args.copies * 0.98))
    beside = {name: timed(args, mine, q) for name, q in searches}

    print(f"tenant {mine}: {count} Synthea entries; neighbour {neighbour}: {args.copies}x "
          f"(imported in {seconds:.0f} s); median of {args.runs} runs each\n")
    print("| search | alone (ms) | neighbour 10x (ms) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, _ in searches:
        print(f"| {name} | {alone[name]:.1f} | {beside[name]:.1f} | {beside[name] / alone[name]:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
