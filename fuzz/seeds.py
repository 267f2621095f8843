#!/usr/bin/env python3
"""Write the hand-made seed inputs into corpus/<target>/seed-*.

Run from fuzz/ (python3 with `cryptography`). The signed seeds use the fixed
keys of the `fuzzing` entry points (ticket: 32 bytes of 7, license: 32 bytes
of 9), so they reach the code behind signature verification. `make fuzz`
adds what the fuzzer finds and minimises the lot.
"""
import base64, json, os, pathlib, re
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
import hashlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
C = ROOT / "fuzz" / "corpus"
SRC = ROOT / "fuzz" / "seeds"


def put(target, name, data):
    d = C / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data if isinstance(data, bytes) else data.encode())


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def compact(v):
    return json.dumps(v, separators=(",", ":"))


# ticket
tk = Ed25519PrivateKey.from_private_bytes(bytes([7] * 32))
raw_pub = tk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
claims = {
    "id": "6f1c2a9e-3b1d-4c5e-8f00-112233445566",
    "operation": "set_pin",
    "serial": 12345678,
    "agent_key_fingerprint": "ab" * 32,
    "params_hash": "cd" * 32,
    "issued_at": 1750000000,
    "expires_at": 1750000060,
}
signed = "kt1." + b64u(compact(claims).encode())
put("ticket", "signed", signed + "." + b64u(tk.sign(signed.encode())))
put("ticket", "claims", compact(claims))
put("ticket", "claims-generate-csr", compact(dict(claims, operation="generate_csr", serial=1)))
put("ticket", "key-response", compact({
    "algorithm": "Ed25519",
    "public_key": base64.b64encode(raw_pub).decode(),
    "key_id": hashlib.sha256(raw_pub).hexdigest()[:16],
}))
put("ticket", "malformed", "kt1.e30.AAAA")
put("ticket", "params", '{"serial":1,"b":[1,2.5,null,true],"a":{"z":"\\u00e9","y":-0}}')

# license_doc
lk = Ed25519PrivateKey.from_private_bytes(bytes([9] * 32))
payload = compact({
    "license_id": "lic-0001",
    "customer": "Example GmbH",
    "installation_id": "inst-1",
    "issued_at": 1750000000,
    "not_after": 1790000000,
    "limits": {"max_users": 100, "max_devices": 200},
    "features": ["escrow", "audit-export"],
}).encode()
doc = {
    "format": "kleidia-license-v1",
    "payload": base64.b64encode(payload).decode(),
    "signature": base64.b64encode(lk.sign(b"kleidia-license-v1\0" + payload)).decode(),
}
put("license_doc", "signed", json.dumps(doc, indent=2) + "\n")
put("license_doc", "payload", payload)
put("license_doc", "bad-signature", json.dumps(dict(doc, signature=base64.b64encode(bytes(64)).decode())))

# vyk_apdu: flags byte, then length-prefixed APDUs (0xFE = power cycle)
def session(flags, *apdus):
    out = bytearray([flags])
    for a in apdus:
        if a is None:
            out.append(0xFE)
        elif len(a) >= 0xFE:
            out += bytes([0xFF]) + len(a).to_bytes(2, "big") + a
        else:
            out.append(len(a))
            out += a
    return bytes(out)

h = bytes.fromhex
SEL_PIV = h("00a4040005a000000308")
SEL_MGMT = h("00a4040008a000000527471117")
put("vyk_apdu", "info", session(0, SEL_PIV, h("00fd0000"), h("00f80000"), h("00200080"),
                                 h("00cb3fff055c035fc102"), h("00f7009b"), h("00f70080"), None,
                                 SEL_MGMT, h("001d0000")))
put("vyk_apdu", "verify-change-pin", session(0, SEL_PIV, h("002000800831323334353637ff"),
                                          h("00240080103132333435363132333435ff3837363534333231"),
                                          h("002c0080103132333435363738363534333231ffff")))
put("vyk_apdu", "generate-attest-sign", session(3, h("0047009a05ac03800111"), h("00f99a00"),
                                             h("0087119a267c24820081" + "20" + "11" * 32),
                                             h("00f7009a"), h("00c00000")))
put("vyk_apdu", "generate-p384-policies", session(3, h("0047009c0bac09800114aa0103ab0101"), h("00f99c00")))
put("vyk_apdu", "mgm-auth", session(0, SEL_PIV, h("0087039b047c028000"), h("0087039b047c028100"),
                                 h("00ffffff1b039b18" + "01" * 24)))
put("vyk_apdu", "chained-put-data", session(2, h("10db3fff055c035fc105"), h("00db3fff0353010a"),
                                         h("00cb3fff055c035fc105")))
put("vyk_apdu", "extended", session(3, h("000047009a0005ac03800111"), h("00fb0000"), h("00fa0000")))
# The OATH applet (YKOATH): PUT as ykman builds it (property 78 without a
# length), LIST, CALCULATE, CALCULATE ALL (INS A4 with P1 00), SEND
# REMAINING, RENAME, DELETE, RESET. Flags 08: firmware 5.7.1 (flags 00 pick
# 4.3.4, which the emulator refuses, so such a seed stops at once).
def apdu(ins, p1, p2, data=b""):
    return bytes([0, ins, p1, p2]) + (bytes([len(data)]) + data if data else b"")
def tlv(tag, value):
    return bytes([tag, len(value)]) + value
SEL_OATH = apdu(0xA4, 4, 0, h("a0000005272101"))
OATH_PUT = apdu(0x01, 0, 0, tlv(0x71, b"GitHub:ada") + tlv(0x73, h("2106") + b"12345678901234567890")
                + h("7802") + tlv(0x7A, h("00000001")))
put("vyk_apdu", "oath", session(0x08, SEL_OATH, OATH_PUT, apdu(0xA1, 0, 0),
                                 apdu(0xA2, 0, 1, tlv(0x71, b"GitHub:ada") + tlv(0x74, h("0000000000000001"))),
                                 apdu(0xA4, 0, 1, tlv(0x74, h("0000000000000001"))), apdu(0xA5, 0, 0),
                                 apdu(0x05, 0, 0, tlv(0x71, b"GitHub:ada") + tlv(0x71, b"GitLab:ada")),
                                 apdu(0x02, 0, 0, tlv(0x71, b"GitLab:ada")), apdu(0x04, 0xDE, 0xAD), None,
                                 SEL_OATH, apdu(0xA1, 0, 0), SEL_PIV, h("00f80000")))

# agent_tlv: selector byte, then input
tdir = ROOT / "app" / "src" / "fleet" / "attestation" / "testdata"
pem = (tdir / "yubikey-5.4.3-serial-25515137-slot-9c.pem").read_text()
first = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", pem, re.S)
der = base64.b64decode("".join(first.group(1).split()))
put("agent_tlv", "slot-cert", b"\x00" + der)
put("agent_tlv", "attestation-der", b"\x01" + der)
put("agent_tlv", "import-pem", b"\x02" + first.group(0).encode())
put("agent_tlv", "subject", b"\x03CN=alice,O=Example,OU=IT+UID=7")
put("agent_tlv", "mgm-3des", b"\x04" + b"0102030405060708" * 3)
put("agent_tlv", "mgm-aes128", b"\x04" + b"00112233445566778899aabbccddeeff\n")
put("agent_tlv", "pin", b"\x05123456")

# csr_attestation: "<serial> <unix time>" line, then PEM blocks
for f, serial in [("yubikey-4.3.4-serial-5970478-slot-9a.pem", 5970478),
                  ("yubikey-5.4.3-serial-25515137-slot-9c.pem", 25515137),
                  ("yubikey-5.7.4-serial-38906121-slot-9c.pem", 38906121)]:
    put("csr_attestation", f.split("-slot")[0], f"{serial} 1750000000\n" + (tdir / f).read_text())
for f in ["ec.csr", "rsa.csr"]:
    put("csr_attestation", f.replace(".", "-"), "0 1750000000\n" + (SRC / f).read_text())
put("csr_attestation", "csr-and-chain", "5970478 1750000000\n" + (SRC / "ec.csr").read_text()
    + (tdir / "yubikey-4.3.4-serial-5970478-slot-9a.pem").read_text())

# json_bodies: selector byte, then JSON
ec_csr = (SRC / "ec.csr").read_text()
chain = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", pem, re.S)
agent_pub = (SRC / "agent.pub").read_text()
op = "6f1c2a9e-3b1d-4c5e-8f00-112233445566"
bodies = [
    {"operation_id": op, "csr_pem": ec_csr, "attestation_chain_pem": chain},
    {"reason": "lost on a train"},
    {"serial": 12345678, "model": "YubiKey 5 NFC", "firmware": "5.7.1", "form_factor": "usb-a"},
    {"state": "suspended", "reason": "  left at home  "},
    {"owner_id": None},
    {"public_key": agent_pub},
    {"operation": "generate_csr", "slot": "9a", "algorithm": "ecc_p256", "pin_policy": "once", "touch_policy": "never"},
    {"success": False, "error": "pin_blocked", "message": "blocked"},
    {"challenge_id": op, "proof": {"signature": "AAAA", "agent_key_fingerprint": "ab" * 32, "ticket_id": op}, "new_pin": "123456"},
    {"pin_min_length": 6, "pin_max_length": 8, "slots": {"9a": {"algorithms": ["ecc_p256"]}}},
    {"ticket": "kt1.e30.AAAA", "params": {"serial": 1, "current_pin": "AAAA", "new_pin": "AAAA"}},
    {"ticket": "t", "params": {"serial": 1, "slot": "9c", "algorithm": "rsa2048", "pin_policy": "default", "touch_policy": "always", "subject": "CN=a", "management_key": "AAAA", "pin": None}},
    {"ticket": "t", "params": {"serial": 1, "slot": "9d", "certificate_pem": chain[0], "management_key": "AAAA"}},
    {"ticket": "t", "params": {"serial": 1, "current_management_key": "AA", "new_management_key": "BB", "algorithm": "aes256", "require_touch": False}},
    {"ticket": "t", "params": {"serial": 1, "nonce": "AAAA", "operation_id": op, "establish": True}},
    {"ok": True, "operation": "reset", "serial": 1, "ticket_id": op},
    {"serial": 1, "slot": "9e", "attestation_chain_pem": chain, "ticket_id": op},
]
for i, b in enumerate(bodies):
    put("json_bodies", f"{i:02}", bytes([i]) + json.dumps(b).encode())
