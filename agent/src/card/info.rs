//! Read-only: what the card says about its credentials and slots, from
//! metadata where the firmware has it. Nothing here can use up a retry.

use kleidia_protocol::agent::{
    DefaultCredentials, ManagementKeyAlgorithm, PivInfo, PivSlot, SlotCertificate, SlotInfo,
    SlotKey,
};
use yubikey::piv::{self, ManagementSlotId, SlotAlgorithmId, SlotId};
use yubikey::YubiKey;

use super::open::{open, release};
use super::wire::{
    algorithm_name, mgm_alg_to_wire, pin_policy_to_wire, slot_id, touch_policy_to_wire,
};
use super::{has_metadata, other_err, pin_err, CardError, ReaderPolicy};

struct Credentials {
    pin_retries: Option<u8>,
    puk_retries: Option<u8>,
    mgm_algorithm: Option<ManagementKeyAlgorithm>,
    defaults: DefaultCredentials,
}

/// PIN/PUK/management key state from metadata only: nothing here can use up a retry.
fn credentials(yk: &mut YubiKey) -> Result<Credentials, CardError> {
    if !has_metadata(yk) {
        // An empty VERIFY asks for the retry count without trying a PIN.
        let pin_retries = yk.get_pin_retries().map_err(pin_err)?;
        return Ok(Credentials {
            pin_retries: Some(pin_retries),
            puk_retries: None,
            mgm_algorithm: None,
            defaults: DefaultCredentials {
                pin: None,
                puk: None,
                management_key: None,
            },
        });
    }
    let pin = piv::metadata(yk, SlotId::Management(ManagementSlotId::Pin)).map_err(other_err)?;
    let puk = piv::metadata(yk, SlotId::Management(ManagementSlotId::Puk)).map_err(other_err)?;
    let mgm =
        piv::metadata(yk, SlotId::Management(ManagementSlotId::Management)).map_err(other_err)?;
    let mgm_algorithm = match mgm.algorithm {
        SlotAlgorithmId::Management(a) => Some(mgm_alg_to_wire(a)),
        _ => None,
    };
    Ok(Credentials {
        pin_retries: pin.retries.as_ref().map(|r| r.remaining_count),
        puk_retries: puk.retries.as_ref().map(|r| r.remaining_count),
        mgm_algorithm,
        defaults: DefaultCredentials {
            pin: pin.default,
            puk: puk.default,
            management_key: mgm.default,
        },
    })
}

pub fn check_defaults(
    serial: u32,
    policy: ReaderPolicy,
) -> Result<(bool, DefaultCredentials), CardError> {
    let (_, mut yk) = open(serial, policy)?;
    let supported = has_metadata(&yk);
    let c = credentials(&mut yk)?;
    release(yk);
    Ok((supported, c.defaults))
}

pub(super) fn cert_info(cert: &x509_cert::Certificate) -> SlotCertificate {
    let tbs = cert.tbs_certificate();
    let v = tbs.validity();
    SlotCertificate {
        subject: tbs.subject().to_string(),
        issuer: tbs.issuer().to_string(),
        not_before: v.not_before.to_unix_duration().as_secs() as i64,
        not_after: v.not_after.to_unix_duration().as_secs() as i64,
        serial_number: hex::encode(tbs.serial_number().as_bytes()),
    }
}

pub fn info(serial: u32, policy: ReaderPolicy) -> Result<PivInfo, CardError> {
    let (reader, mut yk) = open(serial, policy)?;
    let md = has_metadata(&yk);
    let creds = credentials(&mut yk)?;
    let mut slots = Vec::new();
    for slot in PivSlot::ALL {
        let id = slot_id(slot);
        let key = if md {
            match piv::metadata(&mut yk, id) {
                Ok(m) => Some(SlotKey {
                    algorithm: match m.algorithm {
                        SlotAlgorithmId::Asymmetric(a) => algorithm_name(a).to_string(),
                        _ => "unknown".to_string(),
                    },
                    pin_policy: m.policy.map(|(p, _)| pin_policy_to_wire(p)),
                    touch_policy: m.policy.map(|(_, t)| touch_policy_to_wire(t)),
                    origin: m.origin.map(|o| match o {
                        piv::Origin::Generated => "generated".to_string(),
                        piv::Origin::Imported => "imported".to_string(),
                    }),
                }),
                Err(yubikey::Error::NotFound) => None,
                Err(e) => return Err(other_err(e)),
            }
        } else {
            None
        };
        let certificate = yubikey::certificate::Certificate::read(&mut yk, id)
            .ok()
            .map(|c| cert_info(&c.cert));
        slots.push(SlotInfo {
            slot,
            key,
            certificate,
        });
    }
    let firmware = yk.version().to_string();
    release(yk);
    Ok(PivInfo {
        serial,
        firmware,
        reader,
        pin_retries: creds.pin_retries,
        puk_retries: creds.puk_retries,
        management_key_algorithm: creds.mgm_algorithm,
        metadata_supported: md,
        defaults: creds.defaults,
        slots,
    })
}
