#!/usr/bin/env python3
"""`make bench`: the cost of the presence step per operation (docs/security.md).

Plays the agent and the card in software against the running server: one
factory-credential device owned by the bench admin, with a presence key
recorded on its row, and generate_csr operations (which need presence and
read no escrow). Per operation it times, sequentially:

  challenge   POST /api/yubikey/{serial}/operations       -> 202 (nonce issued)
  sign        the card's ECDSA P-256 signature (here in software)
  presence    POST .../operations/{id}/presence          -> 201 (verify + authorise)
  baseline    POST /api/yubikey/{serial}/operations attest -> 201 (no presence)

Measures; asserts nothing. Usage: bench_presence.py BASE_URL USER PASSWORD DB_URL N
"""
import base64
import hashlib
import json
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils

BASE, USER, PASSWORD, DB_URL, N = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
TOKEN = ""
SERIAL = 9_000_001


def call(method, path, body=None):
    req = urllib.request.Request(BASE + path, method=method)
    if TOKEN:
        req.add_header("Authorization", "Bearer " + TOKEN)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, data) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def psql(sql):
    subprocess.run(["psql", DB_URL, "-qAt", "-c", sql], check=True, capture_output=True)


def main():
    global TOKEN
    s, login = call("POST", "/api/auth/login", {"username": USER, "password": PASSWORD})
    assert s == 200, login
    TOKEN = login["token"]
    me = {"session_id": login["session_id"], "user_id": login["user"]["id"]}
    agent = rsa.generate_private_key(65537, 3072)
    pem = agent.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    s, reg = call("POST", f"/api/session/{me['session_id']}/register-agent", {"public_key": pem})
    assert s == 200, reg
    fp = reg["agent_key_fingerprint"]

    card = ec.generate_private_key(ec.SECP256R1())
    spki = card.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    psql(
        f"INSERT INTO devices (serial, firmware, state, owner_id, presence_public_key) "
        f"VALUES ({SERIAL}, '5.7.1', 'active', '{me['user_id']}', '\\x{spki.hex()}') "
        f"ON CONFLICT (serial) DO UPDATE SET presence_public_key = EXCLUDED.presence_public_key"
    )

    t_ch, t_sig, t_pr, t_base = [], [], [], []
    body = {"operation": "generate_csr", "slot": "9a"}
    for _ in range(N):
        t0 = time.perf_counter()
        s, ch = call("POST", f"/api/yubikey/{SERIAL}/operations", body)
        t1 = time.perf_counter()
        assert s == 202, ch
        params = ch["request"]["params"]
        nonce = base64.b64decode(params["nonce"])
        digest = hashlib.sha256(
            b"kleidia-presence-v1" + nonce + uuid.UUID(params["operation_id"]).bytes + fp.encode()
        ).digest()
        sig = card.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        t2 = time.perf_counter()
        proof = {"signature": base64.b64encode(sig).decode(), "agent_key_fingerprint": fp,
                 "ticket_id": ch["challenge_id"]}
        s, op = call("POST", f"/api/yubikey/{SERIAL}/operations/{ch['operation_id']}/presence",
                     {"challenge_id": ch["challenge_id"], "proof": proof})
        t3 = time.perf_counter()
        assert s == 201, op
        s, base = call("POST", f"/api/yubikey/{SERIAL}/operations", {"operation": "attest", "slot": "9a"})
        t4 = time.perf_counter()
        assert s == 201, base
        t_ch.append(t1 - t0)
        t_sig.append(t2 - t1)
        t_pr.append(t3 - t2)
        t_base.append(t4 - t3)

    def line(name, xs):
        ms = [x * 1000 for x in xs]
        q = statistics.quantiles(ms, n=100)
        return f"{name:<44} mean {statistics.mean(ms):7.2f} ms   p50 {q[49]:7.2f}   p99 {q[98]:7.2f}"

    overhead = [c + (p - b) for c, p, b in zip(t_ch, t_pr, t_base)]
    print(f"presence step, {N} sequential operations (generate_csr, software card):")
    print(line("  challenge (POST operations -> 202)", t_ch))
    print(line("  card signature (software P-256)", t_sig))
    print(line("  proof verify + authorise (POST presence)", t_pr))
    print(line("  baseline authorise without presence (attest)", t_base))
    print(line("  presence overhead per operation (server)", overhead))


if __name__ == "__main__":
    main()
