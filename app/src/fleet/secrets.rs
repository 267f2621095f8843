//! New device secrets from the operating system's CSPRNG, by policy.
//! Values are wrapped in `Zeroizing` and never implement `Debug`/`Display`
//! beyond a redacted form, so they cannot reach a log by accident.

use rand::rngs::OsRng;
use rand::{CryptoRng, Rng, RngCore};
use zeroize::Zeroizing;

use super::policy::{ManagementKeyAlgorithm, Policy};

/// One complete set of escrowed credentials for a YubiKey.
#[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DeviceSecrets {
    pub pin: String,
    pub puk: String,
    /// Lowercase hex.
    pub management_key: String,
    pub management_key_algorithm: ManagementKeyAlgorithm,
}

impl std::fmt::Debug for DeviceSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSecrets")
            .field("management_key_algorithm", &self.management_key_algorithm)
            .finish_non_exhaustive()
    }
}

impl Drop for DeviceSecrets {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.pin.zeroize();
        self.puk.zeroize();
        self.management_key.zeroize();
    }
}

impl DeviceSecrets {
    /// The YubiKey factory defaults, for firmware before or from 5.7.
    pub fn factory(firmware_5_7_or_later: bool) -> Self {
        Self {
            pin: "123456".into(),
            puk: "12345678".into(),
            management_key: "010203040506070801020304050607080102030405060708".into(),
            management_key_algorithm: if firmware_5_7_or_later {
                ManagementKeyAlgorithm::Aes192
            } else {
                ManagementKeyAlgorithm::TripleDes
            },
        }
    }
}

/// A PIN (or PUK) the policy accepts: `min..=max` ASCII digits, no two equal
/// neighbours ("repeated"), no ascending or descending run of three
/// ("sequential"), and not one of the factory or well-known weak values.
pub fn acceptable_pin(pin: &str, min: usize, max: usize) -> bool {
    let b = pin.as_bytes();
    if b.len() < min || b.len() > max || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    if b.windows(2).any(|w| w[0] == w[1]) {
        return false;
    }
    let step = |a: u8, c: u8| i16::from(c) - i16::from(a);
    if b.windows(3)
        .any(|w| step(w[0], w[1]) == step(w[1], w[2]) && step(w[0], w[1]).abs() == 1)
    {
        return false;
    }
    !matches!(pin, "123456" | "12345678" | "654321" | "121212" | "131313")
}

fn digits<R: RngCore + CryptoRng>(rng: &mut R, len: usize) -> String {
    (0..len)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}

/// A random PIN of a random length in `min..=max` that [`acceptable_pin`] accepts.
pub fn generate_pin<R: RngCore + CryptoRng>(rng: &mut R, min: usize, max: usize) -> String {
    loop {
        let len = rng.gen_range(min..=max);
        let p = digits(rng, len);
        if acceptable_pin(&p, min, max) {
            return p;
        }
    }
}

pub fn generate_management_key<R: RngCore + CryptoRng>(
    rng: &mut R,
    alg: ManagementKeyAlgorithm,
) -> String {
    let mut key = Zeroizing::new(vec![0u8; alg.key_len()]);
    rng.fill_bytes(&mut key);
    hex::encode(&*key)
}

/// Fresh PIN, PUK and management key by policy.
pub fn generate(policy: &Policy) -> DeviceSecrets {
    generate_with(&mut OsRng, policy)
}

pub fn generate_with<R: RngCore + CryptoRng>(rng: &mut R, policy: &Policy) -> DeviceSecrets {
    let alg = policy.management_key_algorithm;
    DeviceSecrets {
        pin: generate_pin(rng, policy.pin_min_length, policy.pin_max_length),
        puk: generate_pin(rng, policy.puk_length, policy.puk_length),
        management_key: generate_management_key(rng, alg),
        management_key_algorithm: alg,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn weak_pins_are_refused() {
        for bad in [
            "123456",
            "112233",
            "111111",
            "654321",
            "12345",
            "123456789",
            "12a456",
            "987012",
        ] {
            assert!(!acceptable_pin(bad, 6, 8), "{bad}");
        }
        for good in ["135792", "602917", "48150362"] {
            assert!(acceptable_pin(good, 6, 8), "{good}");
        }
    }

    #[test]
    fn generated_secrets_follow_the_policy_and_differ() {
        let policy = Policy::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            let s = generate(&policy);
            assert!(
                acceptable_pin(&s.pin, policy.pin_min_length, policy.pin_max_length),
                "{}",
                s.pin
            );
            assert_eq!(s.puk.len(), policy.puk_length);
            assert!(s.puk.bytes().all(|b| b.is_ascii_digit()));
            assert_eq!(
                s.management_key.len(),
                policy.management_key_algorithm.key_len() * 2
            );
            assert!(seen.insert(s.management_key.clone()));
        }
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let s = generate(&Policy::default());
        let d = format!("{s:?}");
        assert!(
            !d.contains(&s.pin) && !d.contains(&s.puk) && !d.contains(&s.management_key),
            "{d}"
        );
    }
}
