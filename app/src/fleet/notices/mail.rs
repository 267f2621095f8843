//! The notice mail: plain text, one per recipient and run, through SMTP.

use std::fmt::Write as _;
use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use super::{by_device, Item, Kind, MAX_LISTED};
use crate::config::{NoticesConfig, SmtpTls};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("bad address: {0}")]
    Address(String),
    #[error("composing the mail: {0}")]
    Build(String),
    #[error("SMTP: {0}")]
    Smtp(String),
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(n: &NoticesConfig) -> Result<Self, MailError> {
        let host = n.smtp_host.as_deref().unwrap_or_default();
        let builder = match n.smtp_tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
            SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                host,
            )),
        }
        .map_err(|e| MailError::Smtp(e.to_string()))?;
        let mut builder = builder
            .port(n.smtp_port)
            .timeout(Some(Duration::from_secs(n.timeout_secs)));
        if let (Some(user), Some(pass)) = (&n.smtp_username, &n.smtp_password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                pass.expose_secret().to_string(),
            ));
        }
        let from = n
            .from
            .parse::<Mailbox>()
            .map_err(|e| MailError::Address(e.to_string()))?;
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }

    pub async fn send(
        &self,
        to: &str,
        username: &str,
        admin: bool,
        items: &[Item],
    ) -> Result<(), MailError> {
        let to = Mailbox::new(
            None,
            to.parse()
                .map_err(|_| MailError::Address(format!("the address of {username}")))?,
        );
        let m = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject(items))
            .header(ContentType::TEXT_PLAIN)
            .body(body(username, admin, items))
            .map_err(|e| MailError::Build(e.to_string()))?;
        self.transport
            .send(m)
            .await
            .map(|_| ())
            .map_err(|e| MailError::Smtp(e.to_string()))
    }
}

fn count(items: &[Item], kind: Kind) -> usize {
    items.iter().filter(|i| i.kind == kind).count()
}

pub fn subject(items: &[Item]) -> String {
    let certs = count(items, Kind::CertificateExpiring);
    let factory = count(items, Kind::FactoryCredentials);
    let mut parts = Vec::new();
    if certs > 0 {
        parts.push(format!(
            "{certs} certificate{} expiring",
            if certs == 1 { "" } else { "s" }
        ));
    }
    if factory > 0 {
        parts.push(format!(
            "{factory} YubiKey{} on factory credentials",
            if factory == 1 { "" } else { "s" }
        ));
    }
    format!("Kleidia: {}", parts.join(", "))
}

fn date(t: &Option<time::OffsetDateTime>) -> String {
    t.map(|t| {
        let t = t.to_offset(time::UtcOffset::UTC);
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        )
    })
    .unwrap_or_default()
}

pub fn body(username: &str, admin: bool, items: &[Item]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Hello {username},\n");
    let _ = writeln!(
        s,
        "{}",
        if admin {
            "These YubiKeys in the fleet need attention:"
        } else {
            "Your YubiKeys need attention:"
        }
    );
    let devices = by_device(items);
    let total = devices.len();
    for (serial, its) in devices.into_iter().take(MAX_LISTED) {
        let owner = its
            .first()
            .and_then(|i| i.owner_username.as_deref())
            .unwrap_or("nobody");
        let _ = writeln!(s, "\nYubiKey {serial} (owner: {owner})");
        for i in &its {
            match i.kind {
                Kind::CertificateExpiring => {
                    let _ = writeln!(
                        s,
                        "  - the certificate in slot {} expires {}",
                        i.slot.as_deref().unwrap_or("?"),
                        date(&i.not_after)
                    );
                }
                Kind::FactoryCredentials => {
                    let _ = writeln!(s, "  - still has its factory PIN, PUK and management key");
                }
            }
        }
        if let Some(i) = its.first() {
            let _ = writeln!(s, "  {}", i.link);
        }
    }
    if total > MAX_LISTED {
        let _ = writeln!(
            s,
            "\n... and {} more YubiKeys: see the Devices page.",
            total - MAX_LISTED
        );
    }
    let _ = writeln!(
        s,
        "\nYou get this once a day at most while it stays so.\n-- Kleidia"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: Kind, serial: i64) -> Item {
        Item {
            kind,
            serial,
            item: String::new(),
            slot: Some("9a".into()),
            not_after: None,
            owner_id: None,
            owner_username: Some("alice".into()),
            link: format!("https://kleidia.example/devices/{serial}"),
        }
    }

    #[test]
    fn the_mail_names_each_device_with_its_link() {
        let items = [
            item(Kind::CertificateExpiring, 7),
            item(Kind::FactoryCredentials, 7),
            item(Kind::FactoryCredentials, 9),
        ];
        assert_eq!(
            subject(&items),
            "Kleidia: 1 certificate expiring, 2 YubiKeys on factory credentials"
        );
        let b = body("alice", false, &items);
        assert!(b.contains("YubiKey 7 (owner: alice)"), "{b}");
        assert!(b.contains("slot 9a expires"), "{b}");
        assert!(b.contains("https://kleidia.example/devices/9\n"), "{b}");
        assert_eq!(b.matches("https://kleidia.example/devices/7").count(), 1);
    }
}
