#!/usr/bin/env python3
"""`make bench`: revoke latency as the CRL grows, Kleidia against raw OpenBao.

Signs N certificates in OpenBao (`pki_int/sign/piv-ec`, one P-256 CSR signed
over and over, each a new serial), records a handful in Kleidia's
`certificates` table on one device, then grows the CRL with raw revocations
(`pki_int/revoke`) and at each checkpoint times, sequentially:

  kleidia  POST /api/certificates/{id}/revoke  (revoke, audit; the CRL is
           rebuilt in the background since issue 17)
  raw      POST {bao}/v1/pki_int/revoke        (what OpenBao does alone)
  listed   from Kleidia's revoke to the CRL served at /pki/crl listing it
           (polled every 10 ms; the raw revocation waits for it)

Prints JSON: {"points": [{"crl": n, "kleidia_ms": .., "raw_ms": .., "listed_ms": ..}, ...]}.
Measures; asserts nothing.

Usage: bench_revoke.py BASE_URL TOKEN BAO_ADDR BAO_TOKEN DB_URL N SAMPLES CSR_FILE
"""
import concurrent.futures
import json
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid

BASE, TOKEN, BAO, BAO_TOKEN, DB_URL = sys.argv[1:6]
N, SAMPLES = int(sys.argv[6]), int(sys.argv[7])
CSR = open(sys.argv[8]).read()
SERIAL = 9_100_001


def post(url, body, headers):
    req = urllib.request.Request(url, method="POST", data=json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    for k, v in headers.items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def bao(path, body):
    return post(f"{BAO}/v1/{path}", body, {"X-Vault-Token": BAO_TOKEN})


def sign(_):
    d = bao("pki_int/sign/piv-ec", {"csr": CSR, "common_name": "bench", "ttl": "24h"})["data"]
    return d["serial_number"], d["certificate"]


def crl():
    with urllib.request.urlopen(f"{BASE}/pki/crl", timeout=60) as r:
        return r.read()


def psql(sql):
    subprocess.run(["psql", DB_URL, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql],
                   check=True, capture_output=True)


def main():
    checkpoints = sorted({0, N // 10, N // 2, N})
    kleidia_n = SAMPLES * len(checkpoints)
    raw_n = SAMPLES * len(checkpoints)
    total = N + kleidia_n + raw_n
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        certs = list(pool.map(sign, range(total)))
    grow, certs = certs[:N], certs[N:]
    mine, raw = certs[:kleidia_n], certs[kleidia_n:]
    psql(f"INSERT INTO devices (serial, firmware, state) VALUES ({SERIAL}, '5.7.1', 'active') "
         "ON CONFLICT DO NOTHING")
    ids = []
    serials = [sn for sn, _ in mine]
    values = []
    for sn, pem in mine:
        i = uuid.uuid4()
        ids.append(str(i))
        pem_sql = pem.replace("'", "''")
        values.append(f"('{i}', {SERIAL}, '9a', '{sn}', 'CN=bench', 'EccP256', now(), "
                      f"now() + interval '1 day', '{pem_sql}')")
    psql("INSERT INTO certificates (id, device_serial, slot, serial_number, subject, "
         "key_algorithm, not_before, not_after, pem) VALUES " + ",".join(values))

    points = []
    revoked = 0
    auth = {"Authorization": "Bearer " + TOKEN}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for cp in checkpoints:
            todo = grow[revoked:cp]
            list(pool.map(lambda c: bao("pki_int/revoke", {"serial_number": c[0]}), todo))
            revoked = cp
            k, r, listed = [], [], []
            for _ in range(SAMPLES):
                i = ids.pop()
                mine_sn = serials.pop()
                t0 = time.perf_counter()
                post(f"{BASE}/api/certificates/{i}/revoke", {"reason": "superseded"}, auth)
                k.append((time.perf_counter() - t0) * 1000)
                # The CRL is rebuilt in the background: wait until the CRL
                # served lists the certificate (and the rebuild no longer
                # competes with the raw revocation below).
                want = bytes.fromhex(mine_sn.replace(":", ""))
                while want not in crl():
                    time.sleep(0.01)
                listed.append((time.perf_counter() - t0) * 1000)
                sn, _ = raw.pop()
                t0 = time.perf_counter()
                bao("pki_int/revoke", {"serial_number": sn})
                r.append((time.perf_counter() - t0) * 1000)
            points.append({"crl": cp, "kleidia_ms": statistics.median(k),
                           "raw_ms": statistics.median(r),
                           "listed_ms": statistics.median(listed)})
    print(json.dumps({"points": points}))


if __name__ == "__main__":
    main()
