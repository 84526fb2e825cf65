//! The tonic interceptor that authenticates every call with the client's API key, sent as
//! `authorization: Bearer <key>`. The header value is marked sensitive, and neither the
//! interceptor's `Debug` output nor any log line ever contains the key.

use std::fmt;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::Error;

/// Adds `authorization: Bearer <key>` to each request (nothing when there is no key).
#[derive(Clone, Default)]
pub struct AuthInterceptor {
    header: Option<AsciiMetadataValue>,
}

impl AuthInterceptor {
    /// An interceptor for this API key (`None`: send no credentials).
    ///
    /// Fails with [`Error::InvalidArgument`] when the key holds characters that cannot
    /// appear in an HTTP header.
    pub fn new(api_key: Option<&str>) -> Result<Self, Error> {
        let header = match api_key.map(str::trim).filter(|k| !k.is_empty()) {
            None => None,
            Some(key) => {
                let mut value: AsciiMetadataValue =
                    MetadataValue::try_from(format!("Bearer {key}")).map_err(|_| {
                        Error::InvalidArgument(
                            "the API key holds characters that are not allowed in a header"
                                .to_owned(),
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Self { header })
    }

    /// True when requests carry credentials.
    pub fn has_credentials(&self) -> bool {
        self.header.is_some()
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl fmt::Debug for AuthInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthInterceptor")
            .field("api_key", &self.header.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn adds_bearer_header() {
        let mut i = AuthInterceptor::new(Some("sk_test_123")).unwrap();
        let req = i.call(Request::new(())).unwrap();
        assert_eq!(
            req.metadata()
                .get("authorization")
                .unwrap()
                .to_str()
                .unwrap(),
            "Bearer sk_test_123"
        );
        assert!(!format!("{i:?}").contains("sk_test_123"));
    }

    #[test]
    fn no_key_no_header() {
        for key in [None, Some(""), Some("  ")] {
            let mut i = AuthInterceptor::new(key).unwrap();
            assert!(!i.has_credentials());
            let req = i.call(Request::new(())).unwrap();
            assert!(req.metadata().get("authorization").is_none());
        }
    }

    #[test]
    fn rejects_keys_that_cannot_be_a_header() {
        let err = AuthInterceptor::new(Some("bad\nkey")).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(!err.to_string().contains("bad\nkey"));
    }
}
