//! What an account is called: `Username`, `DisplayName` and `EmailAddress`,
//! each checked once where it enters (a form, the API, the command line).

use std::fmt;

/// A value a person typed that an account cannot have; the message says
/// what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAccountField(&'static str);

/// A sign-in name: 1–64 of a-z 0-9 . _ @ -, starting with a letter or digit,
/// kept lower-case (names are compared lower-case; what people type is
/// trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// How a typed name is compared with stored ones.
    pub fn normalize(s: &str) -> String {
        s.trim().to_lowercase()
    }

    pub fn parse(s: &str) -> Result<Username, InvalidAccountField> {
        let u = Self::normalize(s);
        let ok = !u.is_empty()
            && u.len() <= 64
            && u.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && u.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '@' | '-')
            });
        if ok {
            Ok(Username(u))
        } else {
            Err(InvalidAccountField(
                "a username is 1 to 64 characters: letters, digits, '.', '_', '@' or '-'",
            ))
        }
    }
}

/// 1 to 200 characters without control characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(s: &str) -> Result<DisplayName, InvalidAccountField> {
        let d = s.trim();
        if d.is_empty() || d.chars().count() > 200 || d.chars().any(char::is_control) {
            return Err(InvalidAccountField(
                "the display name must be 1 to 200 characters without control characters",
            ));
        }
        Ok(DisplayName(d.to_string()))
    }
}

/// Something shaped like an email address (local@domain.tld, no spaces),
/// at most 254 bytes. Nothing is ever sent to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// `None` for an empty or blank field.
    pub fn parse_optional(s: Option<&str>) -> Result<Option<EmailAddress>, InvalidAccountField> {
        let Some(e) = s.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        if Self::is_valid(e) {
            Ok(Some(EmailAddress(e.to_string())))
        } else {
            Err(InvalidAccountField("that is not an email address"))
        }
    }
}

impl EmailAddress {
    /// A plain `local@domain` that goes into a certificate as one SAN and
    /// one UPN, nothing more (issue 14 §5): at most 254 bytes, exactly one
    /// `@`; the local part is 1–64 of `A–Z a–z 0–9 . _ % + -`, not starting
    /// or ending with a dot and without two dots in a row; the domain is at
    /// least two labels of `A–Z a–z 0–9 -` (1–63 each, no leading or
    /// trailing hyphen). No comma, semicolon, quote, space, control or
    /// non-ASCII character can pass: OpenBao splits names on commas.
    pub fn is_valid(e: &str) -> bool {
        let Some((local, domain)) = e.split_once('@') else {
            return false;
        };
        let local_ok = (1..=64).contains(&local.len())
            && local
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._%+-".contains(&b))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                (1..=63).contains(&l.len())
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        e.len() <= 254 && local_ok && domain_ok
    }
}

macro_rules! text_value {
    ($t:ty) => {
        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_value!(Username);
text_value!(DisplayName);
text_value!(EmailAddress);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_is_trimmed_and_lower_cased_and_keeps_to_its_alphabet() {
        assert_eq!(
            Username::parse(" Olga.K@example ").map(Username::into_string),
            Ok("olga.k@example".to_string())
        );
        for bad in ["", "  ", ".olga", "olga k", "ølga", &"a".repeat(65)] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Username::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn a_display_name_has_no_control_characters() {
        assert_eq!(
            DisplayName::parse("  Olga K.  ").map(DisplayName::into_string),
            Ok("Olga K.".into())
        );
        assert!(DisplayName::parse("Olga\u{7}").is_err());
        assert!(DisplayName::parse(" ").is_err());
        assert!(DisplayName::parse(&"é".repeat(201)).is_err());
        assert!(DisplayName::parse(&"é".repeat(200)).is_ok());
    }

    #[test]
    fn an_email_that_could_smuggle_a_second_name_is_refused() {
        for bad in [
            "alice@corp.example,mallory@evil.example",
            "alice@corp.example;x",
            "alice,admin@corp.example",
            "\"a,b\"@corp.example",
            "alice@corp.example\n",
            "alice@@corp.example",
            "alice@corp",
            "alice@-corp.example",
            "alice@corp..example",
            ".alice@corp.example",
            "al..ice@corp.example",
            "alice@corp.example/",
            "alicé@corp.example",
            "1.3.6.1.4.1.311.20.2.3;UTF8:admin@corp.example",
        ] {
            assert!(!EmailAddress::is_valid(bad), "{bad:?} passed");
            if bad.trim() == bad {
                assert!(EmailAddress::parse_optional(Some(bad)).is_err(), "{bad:?}");
            }
        }
        for good in [
            "alice@corp.example",
            "a.b+tag@mail.corp-1.example",
            "O'Brien@corp.example".replace('\'', "").as_str(),
        ] {
            assert!(EmailAddress::is_valid(good), "{good:?} refused");
        }
    }

    #[test]
    fn an_empty_email_is_none_and_a_malformed_one_is_refused() {
        assert_eq!(EmailAddress::parse_optional(None), Ok(None));
        assert_eq!(EmailAddress::parse_optional(Some("  ")), Ok(None));
        assert_eq!(
            EmailAddress::parse_optional(Some(" olga@example.org ")),
            Ok(Some(EmailAddress("olga@example.org".into())))
        );
        for bad in [
            "olga",
            "@example.org",
            "olga@example",
            "olga@.org",
            "ol ga@example.org",
        ] {
            let e = EmailAddress::parse_optional(Some(bad)).err();
            assert_eq!(
                e.map(|e| e.to_string()).as_deref(),
                Some("that is not an email address")
            );
        }
    }
}
