#!/usr/bin/env python3
"""Mixed load against a running fhirstream for a while, sampling its RSS.

Run by scripts/soak.sh, which starts the stack. Standard library only.

Workers loop over creates, updates, reads, searches, transactions, large
bodies and invalid requests; beside them, slow clients send half a body
and stall (the server must answer 408 and let go), and idle clients open
keep-alive connections and never use them (the header timeout must
reclaim them). Every SAMPLE seconds the server's VmRSS and VmHWM are read
from /proc/PID/status. The summary line (last line of stdout) is JSON.
"""

import argparse
import http.client
import json
import random
import socket
import sys
import threading
import time

stop = threading.Event()
lock = threading.Lock()
counts = {"requests": 0, "unavailable_503": 0, "errors_5xx": 0, "errors_other": 0, "slow_408": 0, "slow_other": 0, "idle_reclaimed": 0}


def count(key, n=1):
    with lock:
        counts[key] += n


def rss(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0])
    return out["VmRSS"], out["VmHWM"]


class Client:
    def __init__(self, host, port, tenant):
        self.host, self.port, self.tenant = host, port, tenant
        self.conn = http.client.HTTPConnection(host, port, timeout=30)

    def call(self, method, path, body=None, headers=None):
        h = {"content-type": "application/fhir+json"}
        h.update(headers or {})
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        for attempt in range(2):
            try:
                self.conn.request(method, f"/fhir/{self.tenant}/{path}", body=data, headers=h)
                res = self.conn.getresponse()
                payload = res.read()
                count("requests")
                if res.status == 503:
                    # Shed or a dependency too slow (pool timeout): the
                    # server says so and stays up, which is what overload
                    # should look like.
                    count("unavailable_503")
                elif res.status >= 500:
                    count("errors_5xx")
                    print(f"5xx: {method} {path} -> {res.status} {payload[:200]!r}", file=sys.stderr)
                return res.status, payload
            except (http.client.HTTPException, OSError):
                # The server may close a keep-alive connection between requests.
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt == 1:
                    count("errors_other")
                    return None, b""


def patient(n, size=0):
    p = {"resourceType": "Patient", "name": [{"family": f"Soak{n % 500}", "given": ["Ann"]}], "gender": "female"}
    if size:
        p["text"] = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">' + "x" * size + "</div>"}
    return p


def worker(host, port, tenant, seed):
    rnd = random.Random(seed)
    c = Client(host, port, tenant)
    mine = []
    n = 0
    while not stop.is_set():
        n += 1
        r = rnd.random()
        if r < 0.30 or not mine:
            status, body = c.call("POST", "Patient", patient(n))
            if status == 201:
                mine.append(json.loads(body)["id"])
                mine = mine[-200:]
        elif r < 0.50:
            pid = rnd.choice(mine)
            c.call("PUT", f"Patient/{pid}", dict(patient(n), id=pid))
        elif r < 0.75:
            c.call("GET", f"Patient/{rnd.choice(mine)}")
        elif r < 0.85:
            c.call("GET", f"Patient?name=Soak{rnd.randrange(500)}&_count=20")
        elif r < 0.90:
            entries = [{"resource": patient(n + i), "request": {"method": "POST", "url": "Patient"}} for i in range(10)]
            c.call("POST", "", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
        elif r < 0.95:
            c.call("POST", "Patient", patient(n, size=200_000))
        else:
            c.call("POST", "Patient", b'{"resourceType": "Patient", "name": [')


def slow_client(host, port, tenant, body_timeout):
    """Sends half of a 64 KiB body, then a byte now and then."""
    while not stop.is_set():
        s = socket.create_connection((host, port), timeout=body_timeout + 30)
        try:
            s.sendall(
                f"POST /fhir/{tenant}/Patient HTTP/1.1\r\nhost: x\r\ncontent-type: application/fhir+json\r\n"
                f"content-length: 65536\r\nconnection: close\r\n\r\n".encode() + b" " * 32768
            )
            s.settimeout(1)
            reply = b""
            deadline = time.time() + body_timeout + 30
            while time.time() < deadline and not stop.is_set():
                try:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
                except socket.timeout:
                    try:
                        s.sendall(b" ")
                    except OSError:
                        break
            if stop.is_set() and not reply:
                return
            count("slow_408" if reply.startswith(b"HTTP/1.1 408") else "slow_other")
        except OSError:
            count("slow_other")
        finally:
            s.close()


def idle_client(host, port):
    """Opens a connection, sends nothing, waits to be closed, repeats."""
    while not stop.is_set():
        try:
            with socket.create_connection((host, port), timeout=120) as s:
                if s.recv(1) in (b"", b"H"):
                    count("idle_reclaimed")
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--slow", type=int, default=50)
    ap.add_argument("--idle", type=int, default=100)
    ap.add_argument("--body-timeout", type=float, default=30)
    ap.add_argument("--sample", type=float, default=5)
    ap.add_argument("--csv", required=True)
    args = ap.parse_args()
    host = "127.0.0.1"

    tenant = f"soak-{random.randrange(1 << 30):08x}"
    c = http.client.HTTPConnection(host, args.port, timeout=30)
    c.request("POST", "/admin/tenants", body=json.dumps({"id": tenant, "name": "soak"}),
              headers={"content-type": "application/json"})
    res = c.getresponse()
    assert res.status == 201, (res.status, res.read())
    res.read()

    threads = [threading.Thread(target=worker, args=(host, args.port, tenant, i), daemon=True) for i in range(args.workers)]
    threads += [threading.Thread(target=slow_client, args=(host, args.port, tenant, args.body_timeout), daemon=True)
                for _ in range(args.slow)]
    threads += [threading.Thread(target=idle_client, args=(host, args.port), daemon=True) for _ in range(args.idle)]
    for t in threads:
        t.start()

    start = time.time()
    samples = []
    with open(args.csv, "w") as out:
        out.write("seconds,rss_kib,hwm_kib,requests,errors_5xx\n")
        while time.time() - start < args.minutes * 60:
            time.sleep(args.sample)
            r, hwm = rss(args.pid)
            with lock:
                snap = dict(counts)
            samples.append((time.time() - start, r))
            out.write(f"{time.time() - start:.0f},{r},{hwm},{snap['requests']},{snap['errors_5xx']}\n")
            out.flush()
            print(f"[soak] {time.time() - start:5.0f}s rss {r / 1024:7.1f} MiB peak {hwm / 1024:7.1f} MiB "
                  f"requests {snap['requests']} 503 {snap['unavailable_503']} other 5xx {snap['errors_5xx']} slow-408 {snap['slow_408']} "
                  f"idle-reclaimed {snap['idle_reclaimed']}", file=sys.stderr)
    stop.set()
    final, hwm = rss(args.pid)
    after_first_minute = [r for s, r in samples if s >= 60]
    summary = dict(counts, minutes=args.minutes, workers=args.workers, slow_clients=args.slow, idle_clients=args.idle,
                   final_rss_mib=round(final / 1024, 1), peak_rss_mib=round(hwm / 1024, 1),
                   rss_at_1min_mib=round(after_first_minute[0] / 1024, 1) if after_first_minute else None,
                   max_sampled_rss_after_1min_mib=round(max(after_first_minute) / 1024, 1) if after_first_minute else None)
    print(json.dumps(summary))
    return 1 if counts["errors_5xx"] else 0


if __name__ == "__main__":
    sys.exit(main())
