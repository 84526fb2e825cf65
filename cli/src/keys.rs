//! `stackshift keys create|list|revoke`: key management over `KeysService` (generated
//! client; the Rust SDK has no key-management calls). Needs an admin key, or a server in
//! open mode (no keys yet, loopback) to create the first one.

use clap::Subcommand;
use serde_json::{Value, json};
use stackshift::AuthInterceptor;
use stackshift::proto as pb;
use stackshift::proto::keys_service_client::KeysServiceClient;
use tonic::transport::Endpoint;

use crate::error::CliError;
use crate::table::Table;

/// `stackshift keys ...`
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once (the server stores only a hash).
    Create {
        /// The namespace the key acts in.
        #[arg(long)]
        namespace: String,
        /// A label for the key.
        #[arg(long, default_value = "")]
        name: String,
        /// Let the key manage keys too.
        #[arg(long)]
        admin: bool,
    },
    /// List keys (never their secrets).
    List {
        /// Only keys of this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Include revoked keys.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a key by id.
    Revoke {
        /// The key id (`key_...`).
        id: String,
    },
}

fn time(ts: &Option<stackshift_proto::prost_types::Timestamp>) -> Value {
    ts.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| Value::String(crate::render::time(&t)))
        .unwrap_or(Value::Null)
}

fn key_json(k: &pb::ApiKey) -> Value {
    json!({
        "id": k.id,
        "namespace": k.namespace,
        "name": k.name,
        "admin": k.admin,
        "created_at": time(&k.created_at),
        "revoked_at": time(&k.revoked_at),
    })
}

type Client = KeysServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, AuthInterceptor>,
>;

fn client(endpoint: &str, api_key: Option<&str>) -> Result<Client, CliError> {
    let channel = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| CliError::Input(format!("invalid endpoint {endpoint:?}: {e}")))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_lazy();
    let auth = AuthInterceptor::new(api_key).map_err(CliError::Sdk)?;
    Ok(KeysServiceClient::with_interceptor(channel, auth))
}

/// Runs a `keys` subcommand; prints JSON when `json`.
pub async fn run(
    endpoint: &str,
    api_key: Option<&str>,
    json_out: bool,
    command: KeysCommand,
) -> Result<(), CliError> {
    let mut c = client(endpoint, api_key)?;
    let status = |s: tonic::Status| CliError::from_status(endpoint, s);
    match command {
        KeysCommand::Create {
            namespace,
            name,
            admin,
        } => {
            let r = c
                .create_key(pb::CreateKeyRequest {
                    namespace,
                    name,
                    admin,
                })
                .await
                .map_err(status)?
                .into_inner();
            let key = r.key.unwrap_or_default();
            if json_out {
                println!("{:#}", json!({ "key": key_json(&key), "secret": r.secret }));
            } else {
                eprintln!(
                    "created {}key {} for namespace {}; the secret is shown only once:",
                    if key.admin { "admin " } else { "" },
                    key.id,
                    key.namespace
                );
                println!("{}", r.secret);
            }
        }
        KeysCommand::List { namespace, all } => {
            let keys = c
                .list_keys(pb::ListKeysRequest {
                    namespace: namespace.unwrap_or_default(),
                    include_revoked: all,
                })
                .await
                .map_err(status)?
                .into_inner()
                .keys;
            if json_out {
                println!(
                    "{:#}",
                    json!({ "keys": keys.iter().map(key_json).collect::<Vec<_>>() })
                );
            } else {
                let mut t = Table::new(&["ID", "NAMESPACE", "NAME", "ADMIN", "CREATED", "STATUS"]);
                for k in &keys {
                    t.row(vec![
                        k.id.clone(),
                        k.namespace.clone(),
                        k.name.clone(),
                        if k.admin { "yes" } else { "no" }.into(),
                        time(&k.created_at).as_str().unwrap_or_default().to_owned(),
                        if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        }
                        .into(),
                    ]);
                }
                print!("{}", t.render());
            }
        }
        KeysCommand::Revoke { id } => {
            let key = c
                .revoke_key(pb::RevokeKeyRequest { id })
                .await
                .map_err(status)?
                .into_inner()
                .key
                .unwrap_or_default();
            if json_out {
                println!("{:#}", key_json(&key));
            } else {
                println!("revoked {}", key.id);
            }
        }
    }
    Ok(())
}
