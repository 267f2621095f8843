//! A certificate authority made for one test (openssl, as `scripts/stack.sh`
//! does with `BAO_TLS=1`), and server certificates it issues for 127.0.0.1
//! and localhost: what a TLS OpenBao ([`crate::TestBao::spawn_tls`]) serves.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::openssl;

/// A CA's certificate and key, `{name}-ca.pem` and `{name}-ca.key` in `dir`.
#[derive(Clone, Debug)]
pub struct TestCa {
    dir: PathBuf,
    name: String,
    /// The CA certificate (PEM).
    pub pem: Vec<u8>,
}

impl TestCa {
    /// A new P-256 CA named `name`, valid for two days, written to `dir`.
    pub fn generate(dir: &Path, name: &str) -> Result<Self> {
        let (pem, key) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &pem,
                "-days",
                "2",
                "-subj",
                &format!("/CN=Kleidia test CA {name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )
        .with_context(|| format!("generate the test CA {name}"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            pem: std::fs::read(dir.join(&pem))?,
        })
    }

    /// The CA certificate's file (what `openbao.ca_file` names).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A server certificate for IP 127.0.0.1 and DNS localhost, signed by
    /// this CA, written to `cert` and `key` (PEM; the key mode 600).
    pub fn issue_server(&self, cert: &Path, key: &Path) -> Result<()> {
        let base = format!("{}-server", self.name);
        std::fs::write(
            self.dir.join(format!("{base}.ext")),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )?;
        let (k, csr, pem, ext) = (
            format!("{base}.key"),
            format!("{base}.csr"),
            format!("{base}.pem"),
            format!("{base}.ext"),
        );
        let (ca_pem, ca_key) = (
            format!("{}-ca.pem", self.name),
            format!("{}-ca.key", self.name),
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &k,
                "-out",
                &csr,
                "-subj",
                "/CN=127.0.0.1",
            ],
        )?;
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-set_serial",
                &format!("{}", rand_serial()),
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        )?;
        std::fs::copy(self.dir.join(&pem), cert)?;
        std::fs::copy(self.dir.join(&k), key)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }
}

fn rand_serial() -> u64 {
    use rand::Rng;
    rand::rngs::OsRng.gen_range(1..u64::MAX / 2)
}
