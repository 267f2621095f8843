//! Issue 12, hole 1, tried as the insider would against the real
//! `kleidia serve`, PostgreSQL and OpenBao: Mallory owns one genuine YubiKey
//! (the software YubiKey's applet, driven in-process through its APDUs: no
//! pcscd needed) and wants a smart-card-logon certificate for a key that never
//! lived on a card. With her PIN she has the card sign a "slot attestation"
//! for a software key with a slot key of hers, and sends it above the genuine
//! slot attestation and f9 certificate. Kleidia must refuse it (422 naming the
//! rule), sign nothing, and audit the refusal; the same card's honest chain
//! still gets its certificate.

use std::str::FromStr;
use std::time::SystemTime;

use der::asn1::{BitString, ObjectIdentifier, OctetString, SetOfVec};
use der::{Decode, Encode};
use kleidia_tests::pki::random_serial;
use kleidia_tests::TestApp;
use kleidia_virtual_yubikey::attest::{pem, AttestationRoot};
use kleidia_virtual_yubikey::card::{Card, AID_PIV};
use kleidia_virtual_yubikey::piv::{mgm_decrypt, mgm_encrypt};
use kleidia_virtual_yubikey::state::{CardState, SlotKey, OBJ_ATTESTATION_CERT, ORIGIN_GENERATED};
use kleidia_virtual_yubikey::{attest, tlv};
use p256::ecdsa::signature::Signer;
use rand::rngs::OsRng;
use rand::RngCore;
use reqwest::StatusCode;
use rsa::pkcs8::EncodePublicKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo};
use x509_cert::serial_number::SerialNumber;
use x509_cert::{Certificate, TbsCertificate, Version};

const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const P256_ALG: u8 = 0x11;
const SLOT_9A: u8 = 0x9A;

/// The insider's genuine YubiKey, as the card answers APDUs.
struct YubiKey(Card<OsRng>);

impl YubiKey {
    /// A key fresh from the "factory": its f9 key certified by `root`.
    fn factory(root: &AttestationRoot, serial: u32) -> Self {
        let (f9, cert) = root
            .issue_device_attestation(SystemTime::now(), &mut OsRng)
            .unwrap();
        let f9 = SlotKey {
            algorithm: f9.algorithm(),
            pkcs8: f9.to_pkcs8().unwrap(),
            pin_policy: 1,
            touch_policy: 1,
            origin: 2,
        };
        let state = CardState::factory(serial, "5.7.1".parse().unwrap(), f9, cert);
        let mut yk = Self(Card::new(state, OsRng));
        yk.ok(0xA4, 4, 0, &AID_PIV[..5]);
        yk
    }

    /// A short APDU, chained above 255 bytes, following `61xx` with GET RESPONSE.
    fn send(&mut self, ins: u8, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[]]
        } else {
            data.chunks(255).collect()
        };
        let last = chunks.len() - 1;
        let mut raw = Vec::new();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut apdu = vec![if i < last { 0x10 } else { 0 }, ins, p1, p2];
            if !chunk.is_empty() {
                apdu.push(u8::try_from(chunk.len()).unwrap());
                apdu.extend_from_slice(chunk);
            }
            raw = self.0.process(&apdu);
        }
        let mut out = Vec::new();
        loop {
            let sw = u16::from_be_bytes([raw[raw.len() - 2], raw[raw.len() - 1]]);
            out.extend_from_slice(&raw[..raw.len() - 2]);
            if sw >> 8 != 0x61 {
                return (out, sw);
            }
            raw = self.0.process(&[0, 0xC0, 0, 0, 0]);
        }
    }

    fn ok(&mut self, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
        let (out, sw) = self.send(ins, p1, p2, data);
        assert_eq!(sw, 0x9000, "INS {ins:02X} answered {sw:04X}");
        out
    }

    /// Mutual authentication with the management key (what the agent does
    /// with the key Kleidia escrowed and sent it).
    fn authenticate(&mut self, mgm_key: &[u8]) {
        // The algorithm is public: GET METADATA for slot 9B reports it.
        let alg = self.0.state.management_key.algorithm;
        let r = self.ok(0x87, alg, 0x9B, &tlv::encode(0x7C, &tlv::encode(0x80, &[])));
        let witness = mgm_decrypt(alg, mgm_key, inner(&r, 0x80)).unwrap();
        let mut challenge = vec![0u8; witness.len()];
        OsRng.fill_bytes(&mut challenge);
        let mut body = tlv::encode(0x80, &witness);
        tlv::encode_into(0x81, &challenge, &mut body);
        let r = self.ok(0x87, alg, 0x9B, &tlv::encode(0x7C, &body));
        assert_eq!(
            inner(&r, 0x82),
            mgm_encrypt(alg, mgm_key, &challenge).unwrap(),
            "the card proved it holds the management key"
        );
    }

    fn verify_pin(&mut self, pin: &[u8]) {
        let mut p = pin.to_vec();
        p.resize(8, 0xFF);
        self.ok(0x20, 0, 0x80, &p);
    }

    /// GENERATE ASYMMETRIC KEY PAIR: P-256 in 9a, PIN once, touch never.
    fn generate_9a(&mut self) {
        let mut template = tlv::encode(0x80, &[P256_ALG]);
        tlv::encode_into(0xAA, &[2], &mut template);
        tlv::encode_into(0xAB, &[1], &mut template);
        self.ok(0x47, 0, SLOT_9A, &tlv::encode(0xAC, &template));
        let sk: &SlotKey = &self.0.state.slots[&SLOT_9A];
        assert_eq!(sk.origin, ORIGIN_GENERATED);
    }

    /// ATTEST: the genuine slot attestation, signed by the f9 key.
    fn attest_9a(&mut self) -> Vec<u8> {
        self.ok(0xF9, SLOT_9A, 0, &[])
    }

    /// The f9 certificate (object 5FFF01, readable by anyone).
    fn f9_certificate(&self) -> Vec<u8> {
        attest::cert_from_object(&self.0.state.objects[&OBJ_ATTESTATION_CERT]).unwrap()
    }

    /// GENERAL AUTHENTICATE with the 9a key: ECDSA over a SHA-256 digest,
    /// which is all the insider needs the card for (PIN once, already verified).
    fn sign_9a(&mut self, message: &[u8]) -> Vec<u8> {
        let digest = Sha256::digest(message);
        let mut body = tlv::encode(0x82, &[]);
        tlv::encode_into(0x81, &digest, &mut body);
        let r = self.ok(0x87, P256_ALG, SLOT_9A, &tlv::encode(0x7C, &body));
        inner(&r, 0x82).to_vec()
    }
}

/// The value of `tag` inside a `7C` template.
fn inner(resp: &[u8], tag: u16) -> &[u8] {
    let (outer, _) = tlv::parse(resp).unwrap();
    assert_eq!(outer.tag, 0x7C);
    let items = tlv::parse_all(outer.value).unwrap();
    tlv::find(&items, tag).unwrap()
}

fn raw_ext(oid: &str, value: &[u8]) -> Extension {
    Extension {
        extn_id: ObjectIdentifier::new_unwrap(oid),
        critical: false,
        extn_value: OctetString::new(value).unwrap(),
    }
}

fn ecdsa_sha256() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: ECDSA_SHA256,
        parameters: None,
    }
}

/// A "slot attestation" for `spki`, issued in the name of the genuine slot
/// attestation `issuer_der`, carrying Yubico's extensions for `serial`, signed
/// by `sign` (the card's 9a key).
fn forged_attestation(
    issuer_der: &[u8],
    spki: &[u8],
    serial: u32,
    sign: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Vec<u8> {
    let genuine = Certificate::from_der(issuer_der).unwrap();
    let mut sn = [0u8; 16];
    OsRng.fill_bytes(&mut sn);
    sn[0] = (sn[0] & 0x7F) | 1;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&sn).unwrap(),
        signature: ecdsa_sha256(),
        issuer: genuine.tbs_certificate.subject.clone(),
        validity: genuine.tbs_certificate.validity,
        // Not the issuer's own name (9a): that would make it look self-issued.
        subject: Name::from_str("CN=YubiKey PIV Attestation 9c").unwrap(),
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki).unwrap(),
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(vec![
            raw_ext("1.3.6.1.4.1.41482.3.3", &[5, 7, 1]),
            raw_ext(
                "1.3.6.1.4.1.41482.3.7",
                &der::asn1::Uint::new(&serial.to_be_bytes())
                    .unwrap()
                    .to_der()
                    .unwrap(),
            ),
            raw_ext("1.3.6.1.4.1.41482.3.8", &[2, 1]),
            raw_ext("1.3.6.1.4.1.41482.3.9", &[1]),
        ]),
    };
    let signature = sign(&tbs.to_der().unwrap());
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: ecdsa_sha256(),
        signature: BitString::from_bytes(&signature).unwrap(),
    }
    .to_der()
    .unwrap()
}

/// A PKCS#10 request for `spki`, signed by `sign`.
fn csr(spki: &[u8], sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let info = CertReqInfo {
        version: x509_cert::request::Version::V1,
        subject: Name::from_str("CN=Mallory").unwrap(),
        public_key: SubjectPublicKeyInfoOwned::from_der(spki).unwrap(),
        attributes: SetOfVec::new(),
    };
    let signature = sign(&info.to_der().unwrap());
    let req = CertReq {
        info,
        algorithm: ecdsa_sha256(),
        signature: BitString::from_bytes(&signature).unwrap(),
    };
    pem("CERTIFICATE REQUEST", &req.to_der().unwrap()).unwrap()
}

/// OpenBao (bootstrapped), a database, and `kleidia serve` trusting a
/// software attestation root, as the demo does.
async fn start() -> TestApp {
    TestApp::builder()
        .own_openbao()
        .attestation_root()
        .start()
        .await
}

async fn certificate_rows(f: &TestApp, serial: u32) -> i64 {
    f.db.count(&format!("certificates WHERE device_serial = {serial}"))
        .await
}

/// Who was refused a certificate for `serial`, and why (audit log).
async fn refusals(f: &TestApp, serial: u32) -> Vec<(String, Value)> {
    let pool = f.db.pool().await.unwrap();
    sqlx::query_as(
        "SELECT actor_name, details FROM audit_log \
         WHERE action = 'certificate.refused' AND target_id = $1 ORDER BY id",
    )
    .bind(serial.to_string())
    .fetch_all(&pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_slot_attestation_forged_with_a_genuine_slot_key_gets_no_certificate() {
    let stack = start().await;
    let root = stack.attestation_root();
    let serial = random_serial();

    // Mallory: a plain user with her own agent key and her own YubiKey.
    let mallory = stack.person("mallory", "user", "Mallory").await;
    mallory.register_ok(serial).await;
    let mut yk = YubiKey::factory(root, serial);

    // An honest key generation, as the agent would run it.
    let (s, op) = mallory
        .authorize(
            serial,
            json!({"operation": "generate_csr", "slot": "9a", "algorithm": "ecc_p256",
                   "pin_policy": "once", "touch_policy": "never"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    let op_id = op["operation_id"].as_str().unwrap().to_string();
    let params = &op["request"]["params"];
    let mgm_key = hex::decode(mallory.decrypt(&params["management_key"])).unwrap();
    let pin = mallory.decrypt(&params["pin"]);
    yk.authenticate(&mgm_key);
    yk.generate_9a();
    yk.verify_pin(pin.as_bytes());
    let genuine = yk.attest_9a();
    let f9 = yk.f9_certificate();
    let card_spki = Certificate::from_der(&genuine)
        .unwrap()
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap();

    // The forgery: a software key, certified in the genuine slot
    // attestation's name by the card's own 9a key (PIN only, nothing extracted).
    let software = p256::SecretKey::random(&mut OsRng);
    let software_spki = software
        .public_key()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec();
    let forged = forged_attestation(&genuine, &software_spki, serial, |tbs| yk.sign_9a(tbs));
    let software_csr = csr(&software_spki, |info| {
        let sig: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(&software).sign(info);
        sig.to_der().as_bytes().to_vec()
    });

    // OpenSSL, as an independent verifier, refuses the forged chain too.
    let dir = tempfile::tempdir().unwrap();
    for (name, der) in [
        ("root.pem", &root.cert_der),
        ("f9.pem", &f9),
        ("genuine.pem", &genuine),
        ("forged.pem", &forged),
    ] {
        std::fs::write(dir.path().join(name), pem("CERTIFICATE", der).unwrap()).unwrap();
    }
    let both = [
        pem("CERTIFICATE", &genuine).unwrap(),
        pem("CERTIFICATE", &f9).unwrap(),
    ]
    .concat();
    std::fs::write(dir.path().join("untrusted.pem"), both).unwrap();
    let verify = |leaf: &str| {
        kleidia_tests::openssl(
            dir.path(),
            &[
                "verify",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "untrusted.pem",
                leaf,
            ],
        )
    };
    let refused = verify("forged.pem").unwrap_err().to_string();
    assert!(refused.contains("invalid CA certificate"), "{refused}");
    assert!(verify("genuine.pem").unwrap().contains("genuine.pem: OK"));

    let issued_before = stack.issued_in_openbao().await;
    let chains = [
        vec![forged.clone(), genuine.clone(), f9.clone()],
        vec![forged.clone(), genuine.clone()],
        vec![
            forged.clone(),
            genuine.clone(),
            f9.clone(),
            root.cert_der.clone(),
        ],
    ];
    for chain in &chains {
        let chain: Vec<String> = chain
            .iter()
            .map(|d| pem("CERTIFICATE", d).unwrap())
            .collect();
        let (s, v) = mallory
            .api
            .sign_csr(
                serial,
                &json!({"operation_id": op_id, "csr_pem": software_csr, "attestation_chain_pem": chain}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        let message = v["message"].as_str().unwrap();
        assert!(
            message.contains("certificate 2")
                && message.contains("a slot attestation is only ever a leaf"),
            "{v}"
        );
    }

    // Nothing signed: no certificate row, nothing new in OpenBao's issuing CA,
    // and the key generation is still open.
    assert_eq!(certificate_rows(&stack, serial).await, 0);
    assert_eq!(stack.issued_in_openbao().await, issued_before);
    let (_, d) = mallory.api.device(serial).await;
    assert!(d["certificates"].as_array().unwrap().is_empty(), "{d}");
    assert_eq!(d["operations"][0]["id"], op_id.as_str(), "{d}");
    assert_eq!(d["operations"][0]["state"], "pending", "{d}");
    // Every refusal is audited, by whom and why.
    let refusals = refusals(&stack, serial).await;
    assert_eq!(refusals.len(), chains.len(), "{refusals:?}");
    for (actor, details) in &refusals {
        assert_eq!(actor, "mallory");
        assert_eq!(details["operation_id"], op_id.as_str());
        assert!(
            details["reason"]
                .as_str()
                .unwrap()
                .contains("only ever a leaf"),
            "{details}"
        );
    }

    // The same card's honest chain, for the key that is on it, is certified.
    let card_csr = csr(&card_spki, |info| yk.sign_9a(info));
    let chain = [
        pem("CERTIFICATE", &genuine).unwrap(),
        pem("CERTIFICATE", &f9).unwrap(),
    ];
    let (s, v) = mallory
        .api
        .sign_csr(
            serial,
            &json!({"operation_id": op_id, "csr_pem": card_csr, "attestation_chain_pem": chain}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(certificate_rows(&stack, serial).await, 1);
    assert_eq!(
        stack.issued_in_openbao().await.len(),
        issued_before.len() + 1
    );
}
