//! `cairn keys`: create, list and revoke API keys in the data dir.

use std::process::ExitCode;

use cairn::config::Config;
use cairn::error::Error;

use super::args::KeysCmd;

pub fn keys(config: &Config, cmd: KeysCmd) -> Result<ExitCode, Error> {
    let store = cairn::auth::keys::KeyStore::open(&config.data_dir)?;
    match cmd {
        KeysCmd::Create {
            name,
            tier,
            scopes,
            expires_in_days,
            json,
        } => {
            if !config.auth.tiers.contains_key(&tier) {
                let known: Vec<&String> = config.auth.tiers.keys().collect();
                return Err(Error::InvalidInput(format!(
                    "unknown tier `{tier}` (configured: {known:?})"
                )));
            }
            let scopes = scopes
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.parse().map_err(Error::InvalidInput))
                .collect::<Result<Vec<cairn::auth::Scope>, Error>>()?;
            let expires_at =
                expires_in_days.map(|d| chrono::Utc::now().timestamp() + i64::from(d) * 86_400);
            let k = store.create(&name, &tier, scopes, expires_at)?;
            if json {
                say!("{}", serde_json::to_string_pretty(&k)?);
            } else {
                say!("{}", k.key);
                eprintln!(
                    "key {} ({}, tier {}): shown once, store it now",
                    k.info.id, k.info.name, k.info.tier
                );
            }
        }
        KeysCmd::List { json } => {
            let keys = store.list()?;
            if json {
                say!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                for k in &keys {
                    let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                    say!(
                        "{}  {:<20} {:<9} {}",
                        k.id,
                        k.name,
                        k.tier,
                        scopes.join(",")
                    );
                }
                say!("{} keys", keys.len());
            }
        }
        KeysCmd::Revoke { id } => {
            store.revoke(&id)?;
            say!("revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
