//! `tickwire token`: prints an access token for a server that requires
//! them.

use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
pub(crate) struct TokenArgs {
    /// File with the server's secret; or set TICKWIRE_AUTH_SECRET.
    #[arg(long, env = "TICKWIRE_AUTH_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// Seconds from now until the token expires.
    #[arg(long, default_value_t = 3600)]
    exp_secs: u64,
    /// Seconds from now until the token becomes valid (the nbf claim).
    #[arg(long)]
    nbf_secs: Option<u64>,
    /// The only symbols the token lets its holder subscribe to,
    /// comma-separated. Without it, every symbol.
    #[arg(long, value_delimiter = ',')]
    symbols: Vec<String>,
}

pub(crate) fn run_token(args: TokenArgs) -> anyhow::Result<()> {
    use tickwire::server::guard::auth::{self, Secret};
    let secret = match (&args.secret_file, std::env::var("TICKWIRE_AUTH_SECRET")) {
        (Some(path), _) => Secret::from_file(path)?,
        (None, Ok(text)) => Secret::new(text.as_bytes())?,
        (None, Err(_)) => anyhow::bail!("give --secret-file or set TICKWIRE_AUTH_SECRET"),
    };
    let now = auth::now_secs();
    let mut claims = serde_json::json!({ "exp": now + args.exp_secs });
    if let Some(nbf) = args.nbf_secs {
        claims["nbf"] = (now + nbf).into();
    }
    if !args.symbols.is_empty() {
        claims["symbols"] = args.symbols.into();
    }
    println!("{}", auth::sign(&secret, &claims));
    Ok(())
}
