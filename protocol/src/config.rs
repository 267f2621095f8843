//! The configuration loader of the server and the license service (feature
//! `config`): defaults, then an optional TOML file (`--config`), then
//! environment variables under a prefix (`KLEIDIA_…`, `KLEIDIA_LICENSE_…`),
//! then, optionally, command-line flags.
//!
//! The configuration types do the rest with serde: `#[serde(default)]` gives
//! the defaults, `#[serde(deny_unknown_fields)]` turns a typo into an error
//! that names the key instead of a silently ignored setting, and secrets are
//! [`SecretString`]s, whose `Debug` output is redacted. Each secret has a
//! `…_file` twin that reads it from a file (Kubernetes secrets mounted as
//! files), resolved with [`resolve_secret_file`].

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::{Figment, Provider};
use secrecy::SecretString;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration error: {0}")]
    Invalid(String),
    #[error("cannot read {what} from {path}: {source}")]
    SecretFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        // One line per error, each naming the offending key and where it came from.
        let msgs: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
        ConfigError::Invalid(msgs.join("; "))
    }
}

/// A configuration [`load`] can fill in.
pub trait Settings: DeserializeOwned + 'static {
    /// Variables under the prefix that are not configuration keys (the
    /// config file's path, say), compared without regard to case.
    const NOT_KEYS: &'static [&'static str] = &[];
    /// Whether keys sit in sections: then the first `_` after the prefix
    /// separates the section (`KLEIDIA_DATABASE_URL` → `database.url`);
    /// otherwise keys are flat (`KLEIDIA_LICENSE_OPENBAO_ADDR` → `openbao_addr`).
    const SECTIONS: bool = false;

    /// Replace each secret whose `…_file` twin is set by that file's content.
    fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Check what serde cannot (URL schemes, non-zero limits, …).
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Load: defaults ← TOML `file` (if given; it must exist) ← `env`, usually
/// `Env::prefixed("KLEIDIA_")`. Then the secret files are read and the
/// result validated.
pub fn load<T: Settings>(file: Option<&Path>, env: Env) -> Result<T, ConfigError> {
    load_with_flags(file, env, Figment::new())
}

/// [`load`] with one more layer over the environment: command-line `flags`
/// (e.g. `figment::providers::Serialized::defaults(overrides)`).
pub fn load_with_flags<T: Settings>(
    file: Option<&Path>,
    env: Env,
    flags: impl Provider,
) -> Result<T, ConfigError> {
    let mut fig = Figment::new();
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::Invalid(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    // figment hands the filter the variable's own (upper) case.
    let env = env.filter(|k| {
        !T::NOT_KEYS
            .iter()
            .any(|n| k.as_str().eq_ignore_ascii_case(n))
    });
    let env = if T::SECTIONS {
        env.map(|k| k.as_str().replacen('_', ".", 1).into())
    } else {
        env
    };
    let mut cfg: T = fig.merge(env).merge(flags).extract()?;
    cfg.resolve_secret_files()?;
    cfg.validate()?;
    Ok(cfg)
}

/// When `file` is set, read the secret from it (trimmed) into `secret`, a
/// `SecretString` or an `Option<SecretString>`; `what` names the key in errors.
pub fn resolve_secret_file<S: From<SecretString>>(
    secret: &mut S,
    file: Option<&Path>,
    what: &'static str,
) -> Result<(), ConfigError> {
    if let Some(path) = file {
        *secret = read_secret_file(what, path)?.into();
    }
    Ok(())
}

/// The secret in `path`, without surrounding whitespace (a trailing newline).
pub fn read_secret_file(what: &'static str, path: &Path) -> Result<SecretString, ConfigError> {
    let s = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    Ok(SecretString::from(s.trim().to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use figment::providers::Serialized;
    use secrecy::ExposeSecret as _;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Sectioned {
        server: Server,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Server {
        bind: String,
        token: Option<SecretString>,
        token_file: Option<PathBuf>,
    }

    impl Settings for Sectioned {
        const NOT_KEYS: &'static [&'static str] = &["config"];
        const SECTIONS: bool = true;

        fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
            let s = &mut self.server;
            resolve_secret_file(&mut s.token, s.token_file.as_deref(), "server.token_file")
        }

        fn validate(&self) -> Result<(), ConfigError> {
            if self.server.bind == "nowhere" {
                return Err(ConfigError::Invalid("server.bind is nowhere".into()));
            }
            Ok(())
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Flat {
        listen: String,
        api_token: SecretString,
        api_token_file: Option<PathBuf>,
    }

    impl Default for Flat {
        fn default() -> Self {
            Self {
                listen: "127.0.0.1:1".into(),
                api_token: SecretString::from("default-token"),
                api_token_file: None,
            }
        }
    }

    impl Settings for Flat {
        const NOT_KEYS: &'static [&'static str] = &["config", "url"];

        fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
            resolve_secret_file(
                &mut self.api_token,
                self.api_token_file.as_deref(),
                "api_token_file",
            )
        }
    }

    fn env_none() -> Env {
        Env::prefixed("KLEIDIA_TEST_NOTHING_AT_ALL_")
    }

    fn toml(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("k.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn without_file_or_environment_the_defaults_apply() {
        let c: Flat = load(None, env_none()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:1");
        assert_eq!(c.api_token.expose_secret(), "default-token");
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = load::<Flat>(Some(Path::new("/nonexistent/k.toml")), env_none())
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = toml(&dir, "[server]\nbindd = \"127.0.0.1:1\"\n");
        let err = load::<Sectioned>(Some(&p), env_none())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bindd"), "{err}");
    }

    #[test]
    fn an_unknown_section_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = toml(&dir, "[servr]\nbind = \"127.0.0.1:1\"\n");
        let err = load::<Sectioned>(Some(&p), env_none())
            .unwrap_err()
            .to_string();
        assert!(err.contains("servr"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn environment_keys_sit_in_sections_or_flat_and_the_not_keys_are_skipped() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("KLEIDIA_T_SERVER_BIND", "0.0.0.0:9");
            jail.set_env("KLEIDIA_T_CONFIG", "/nowhere.toml");
            let c: Sectioned = load(None, Env::prefixed("KLEIDIA_T_")).unwrap();
            assert_eq!(c.server.bind, "0.0.0.0:9");

            jail.set_env("KLEIDIA_F_LISTEN", "0.0.0.0:7");
            jail.set_env("KLEIDIA_F_URL", "http://elsewhere");
            let c: Flat = load(None, Env::prefixed("KLEIDIA_F_")).unwrap();
            assert_eq!(c.listen, "0.0.0.0:7");

            jail.set_env("KLEIDIA_F_LISTEN_ADDR", "0.0.0.0:7");
            let err = load::<Flat>(None, Env::prefixed("KLEIDIA_F_"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("listen_addr"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn the_environment_overrides_the_file_and_flags_override_both() {
        let dir = tempfile::tempdir().unwrap();
        let p = toml(&dir, "listen = \"127.0.0.1:1000\"\n");
        figment::Jail::expect_with(|jail| {
            let c: Flat = load(Some(&p), Env::prefixed("KLEIDIA_F_")).unwrap();
            assert_eq!(c.listen, "127.0.0.1:1000");
            jail.set_env("KLEIDIA_F_LISTEN", "127.0.0.1:2000");
            let c: Flat = load(Some(&p), Env::prefixed("KLEIDIA_F_")).unwrap();
            assert_eq!(c.listen, "127.0.0.1:2000");
            let flags = Serialized::defaults(serde_json::json!({"listen": "127.0.0.1:3000"}));
            let c: Flat = load_with_flags(Some(&p), Env::prefixed("KLEIDIA_F_"), flags).unwrap();
            assert_eq!(c.listen, "127.0.0.1:3000");
            Ok(())
        });
    }

    #[test]
    fn a_secret_file_wins_over_the_inline_secret_trimmed_and_never_prints() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("token");
        std::fs::write(&tok, "  from-the-file\n").unwrap();
        let p = toml(
            &dir,
            &format!(
                "api_token = \"inline\"\napi_token_file = {:?}\n",
                tok.display().to_string()
            ),
        );
        let c: Flat = load(Some(&p), env_none()).unwrap();
        assert_eq!(c.api_token.expose_secret(), "from-the-file");
        assert!(!format!("{c:?}").contains("from-the-file"));

        let p = toml(
            &dir,
            &format!("[server]\ntoken_file = {:?}\n", tok.display().to_string()),
        );
        let c: Sectioned = load(Some(&p), env_none()).unwrap();
        assert_eq!(
            c.server.token.as_ref().unwrap().expose_secret(),
            "from-the-file"
        );
    }

    #[test]
    fn an_unreadable_secret_file_and_an_invalid_value_are_errors_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = toml(&dir, "[server]\ntoken_file = \"/nonexistent/token\"\n");
        let err = load::<Sectioned>(Some(&p), env_none())
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.token_file"), "{err}");
        let p = toml(&dir, "[server]\nbind = \"nowhere\"\n");
        let err = load::<Sectioned>(Some(&p), env_none())
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.bind"), "{err}");
    }
}
