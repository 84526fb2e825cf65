//! CLI errors and their messages. Every error ends the process with exit code 1 (usage
//! errors are clap's and exit with 2); see `docs/cli.md`.

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server could not be reached.
    #[error(
        "cannot reach StackShift at {endpoint}: {detail} (is the server running? set \
         STACKSHIFT_ENDPOINT or --endpoint)"
    )]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// What the transport reported.
        detail: String,
    },
    /// The server refused the API key (or none was given).
    #[error(
        "the server at {endpoint} rejected the request: {detail} (set STACKSHIFT_API_KEY or \
         --api-key to a valid key; create one with \
         `stackshift keys create` (admin key) or `stackshift-server keys create`)"
    )]
    Unauthenticated {
        /// The endpoint called.
        endpoint: String,
        /// The server's message.
        detail: String,
    },
    /// The key is valid but may not do this (e.g. key management without an admin key).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Any other error from the server or the SDK.
    #[error("{0}")]
    Sdk(stackshift::Error),
    /// Bad input noticed by the CLI itself (e.g. a value that is not JSON).
    #[error("{0}")]
    Input(String),
}

impl CliError {
    /// Classifies an SDK error for the endpoint that was called.
    pub fn from_sdk(endpoint: &str, e: stackshift::Error) -> Self {
        match e {
            stackshift::Error::Unavailable(detail) => Self::Unreachable {
                endpoint: endpoint.to_owned(),
                detail,
            },
            stackshift::Error::Unauthenticated(detail) => Self::Unauthenticated {
                endpoint: endpoint.to_owned(),
                detail,
            },
            stackshift::Error::PermissionDenied(detail) => {
                Self::PermissionDenied(if detail.is_empty() {
                    "the API key may not do this".into()
                } else {
                    detail
                })
            }
            other => Self::Sdk(other),
        }
    }

    /// Classifies a raw gRPC status (calls made with generated clients).
    pub fn from_status(endpoint: &str, s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::Unavailable => Self::Unreachable {
                endpoint: endpoint.to_owned(),
                detail: s.message().to_owned(),
            },
            tonic::Code::Unauthenticated => Self::Unauthenticated {
                endpoint: endpoint.to_owned(),
                detail: s.message().to_owned(),
            },
            tonic::Code::PermissionDenied => Self::PermissionDenied(s.message().to_owned()),
            _ => Self::Sdk(stackshift::Error::from(s)),
        }
    }
}
