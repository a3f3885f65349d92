//! `tickwire serve`'s flags: the settings ([`ServeConfig`] declares each
//! one) and the TOML file they are layered over.

use std::path::PathBuf;

use clap::{ArgMatches, Args};
use tickwire::config::ServeConfig;

/// Flags override environment variables, which override the config file,
/// which overrides the defaults.
#[derive(Args, Default)]
pub(crate) struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "TICKWIRE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: ServeConfig,
}

impl ServeArgs {
    /// The layered configuration; `matches` are the `serve` command's, to
    /// tell a setting given by flag or environment from its default.
    pub(crate) fn into_config(self, matches: Option<&ArgMatches>) -> anyhow::Result<ServeConfig> {
        use clap::parser::ValueSource;
        let was_given = |key: &str| {
            matches
                .and_then(|m| m.value_source(key))
                .is_some_and(|source| {
                    matches!(source, ValueSource::CommandLine | ValueSource::EnvVariable)
                })
        };
        let mut c = ServeConfig::layered(self.config.as_deref(), self.settings, was_given)?;
        // From the environment only: a flag would show it in `ps`.
        if let Ok(text) = std::env::var("TICKWIRE_AUTH_SECRET") {
            c.auth_secret = Some(tickwire::server::guard::auth::Secret::new(text.as_bytes())?);
        }
        Ok(c)
    }
}
