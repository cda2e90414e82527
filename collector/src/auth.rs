//! Who is calling: agents by client certificate (mutual TLS), SOC clients by
//! bearer token or client certificate.

use tonic::{Request, Status};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The identity in the caller's verified client certificate: its subject
/// common name, else its first DNS name. `None` without a certificate.
pub fn peer_identity<T>(request: &Request<T>) -> Option<String> {
    let certs = request.peer_certs()?;
    let (_, cert) = X509Certificate::from_der(certs.first()?.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    cn.or_else(|| {
        let san = cert.subject_alternative_name().ok().flatten()?;
        san.value.general_names.iter().find_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
    })
}

/// Checks a SOC call: a verified client certificate, or `authorization:
/// Bearer <token>` equal to the configured token. With no token configured
/// and no TLS client auth, SOC calls are refused unless `open` (loopback
/// development only).
#[derive(Clone)]
pub struct SocAuth {
    pub token: Option<String>,
    pub open: bool,
}

impl SocAuth {
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.open || peer_identity(&request).is_some() {
            return Ok(request);
        }
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match (&self.token, given) {
            (Some(token), Some(given)) if constant_time_eq(token.as_bytes(), given.as_bytes()) => Ok(request),
            (_, None) => Err(Status::unauthenticated(
                "a bearer token or a client certificate is required",
            )),
            _ => Err(Status::unauthenticated("invalid token")),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(v) = value {
            request.metadata_mut().insert("authorization", v.parse().unwrap());
        }
        request
    }

    #[test]
    fn tokens_are_checked() {
        let auth = SocAuth {
            token: Some("s3cret".into()),
            open: false,
        };
        assert!(auth.check(with_auth(Some("Bearer s3cret"))).is_ok());
        assert_eq!(
            auth.check(with_auth(Some("Bearer nope"))).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            auth.check(with_auth(None)).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let open = SocAuth {
            token: None,
            open: true,
        };
        assert!(open.check(with_auth(None)).is_ok());
    }
}
