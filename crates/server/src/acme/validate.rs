//! Challenge validation (http-01, dns-01, tls-alpn-01) and CAA checking (RFC 8659).
//!
//! DNS look-ups go through the configured resolver (or the system's), without a cache, so a
//! TXT record changed between two attempts is seen at once. Ports are configurable so tests
//! can validate against local servers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use certkeeper_acme::{
    AcmeError, ErrorType, Identifier, check_tls_alpn01_certificate, dns01_txt_value,
    reverse_dns_name,
};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;

use crate::ServerError;
use crate::config::AcmeSection;

/// Most bytes read of an http-01 response.
const HTTP01_MAX_BODY: usize = 8 * 1024;

/// Validates challenges.
pub(crate) struct Validator {
    resolver: TokioResolver,
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    http01_port: u16,
    tlsalpn01_port: u16,
    timeout: Duration,
}

impl Validator {
    pub fn new(config: &AcmeSection) -> Result<Validator, ServerError> {
        let mut options = ResolverOpts::default();
        options.cache_size = 0;
        options.positive_max_ttl = Some(Duration::ZERO);
        options.negative_max_ttl = Some(Duration::ZERO);
        options.use_hosts_file = ResolveHosts::Never;
        options.timeout = Duration::from_secs(config.validation_timeout.clamp(1, 30));
        options.attempts = 2;
        let builder = match config.dns_resolver {
            Some(address) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = address.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = address.port();
                Resolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![NameServerConfig::new(
                        address.ip(),
                        true,
                        vec![udp, tcp],
                    )]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => Resolver::builder_tokio().map_err(|e| {
                ServerError::Config(format!(
                    "cannot read the system DNS configuration ({e}); set acme.dns_resolver"
                ))
            })?,
        };
        let resolver = builder.with_options(options).build().map_err(|e| {
            ServerError::Config(format!("cannot build the validation DNS resolver: {e}"))
        })?;
        let timeout = Duration::from_secs(config.validation_timeout);
        let http01_port = config.http01_port;
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(DnsForHttp(resolver.clone())))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                redirect_allowed(attempt, http01_port)
            }))
            .timeout(timeout)
            .user_agent("certkeeper-acme-validator")
            .tls_danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| ServerError::Config(format!("cannot build the HTTP validator: {e}")))?;
        let tls = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate))
            .with_no_client_auth();
        let mut tls = tls;
        tls.alpn_protocols = vec![b"acme-tls/1".to_vec()];
        Ok(Validator {
            resolver,
            http,
            tls: Arc::new(tls),
            http01_port: config.http01_port,
            tlsalpn01_port: config.tlsalpn01_port,
            timeout,
        })
    }

    /// Runs one validation attempt of a challenge.
    pub async fn validate(
        &self,
        kind: &str,
        identifier: &Identifier,
        key_authorization: &str,
        token: &str,
    ) -> Result<(), AcmeError> {
        let attempt = async {
            match kind {
                "http-01" => self.http01(identifier, key_authorization, token).await,
                "dns-01" => self.dns01(identifier, key_authorization).await,
                "tls-alpn-01" => self.tls_alpn01(identifier, key_authorization).await,
                other => Err(AcmeError::malformed(format!(
                    "unknown challenge type {other:?}"
                ))),
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(AcmeError::new(
                ErrorType::Connection,
                format!(
                    "{kind} validation of {} timed out after {}s",
                    identifier.value,
                    self.timeout.as_secs()
                ),
            )),
        }
    }

    async fn http01(
        &self,
        identifier: &Identifier,
        key_authorization: &str,
        token: &str,
    ) -> Result<(), AcmeError> {
        let host = match identifier.kind.as_str() {
            "ip" => match identifier.value.parse::<IpAddr>() {
                Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
                _ => identifier.value.clone(),
            },
            _ => identifier.value.clone(),
        };
        let port = if self.http01_port == 80 {
            String::new()
        } else {
            format!(":{}", self.http01_port)
        };
        let url = format!("http://{host}{port}/.well-known/acme-challenge/{token}");
        let response = self.http.get(&url).send().await.map_err(|e| {
            AcmeError::new(
                ErrorType::Connection,
                format!("fetching {url}: {}", error_chain(&e)),
            )
        })?;
        let status = response.status();
        let final_url = response.url().to_string();
        let redirected = final_url != url;
        if !status.is_success() {
            return Err(AcmeError::new(
                ErrorType::Unauthorized,
                format!("{url} answered HTTP {status}; serve the key authorization there"),
            ));
        }
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| AcmeError::new(ErrorType::Connection, format!("reading {url}: {e}")))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > HTTP01_MAX_BODY {
                return Err(AcmeError::new(
                    ErrorType::Unauthorized,
                    format!("{url} sent more than {HTTP01_MAX_BODY} bytes"),
                ));
            }
        }
        let text = String::from_utf8_lossy(&body);
        // RFC 8555 §8.3: trailing whitespace is allowed.
        if text.trim_end() == key_authorization {
            Ok(())
        } else if redirected {
            // What a redirect target served is not echoed: it could be any server's content.
            Err(AcmeError::new(
                ErrorType::IncorrectResponse,
                format!(
                    "{url} redirected to {final_url}, which did not serve the key authorization {key_authorization:?}"
                ),
            ))
        } else {
            Err(AcmeError::new(
                ErrorType::IncorrectResponse,
                format!(
                    "{url} served {:?}, not the key authorization {key_authorization:?}",
                    truncate(&text, 128)
                ),
            ))
        }
    }

    async fn dns01(
        &self,
        identifier: &Identifier,
        key_authorization: &str,
    ) -> Result<(), AcmeError> {
        let name = format!("_acme-challenge.{}.", identifier.value);
        let expected = dns01_txt_value(key_authorization);
        let lookup = self
            .resolver
            .txt_lookup(name.as_str())
            .await
            .map_err(|e| dns_error(&name, "TXT", &e))?;
        let mut seen = Vec::new();
        for record in lookup.answers() {
            let RData::TXT(txt) = &record.data else {
                continue;
            };
            let value: String = txt
                .txt_data
                .iter()
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect();
            if value == expected {
                return Ok(());
            }
            seen.push(value);
        }
        Err(AcmeError::new(
            ErrorType::IncorrectResponse,
            format!("TXT records at {name} are {seen:?}; none is {expected:?}"),
        ))
    }

    async fn tls_alpn01(
        &self,
        identifier: &Identifier,
        key_authorization: &str,
    ) -> Result<(), AcmeError> {
        let (addresses, sni) = match identifier.kind.as_str() {
            "ip" => {
                let ip: IpAddr = identifier.value.parse().map_err(|_| {
                    AcmeError::malformed(format!("{} is not an IP address", identifier.value))
                })?;
                (vec![ip], reverse_dns_name(ip))
            }
            _ => (
                self.addresses(&identifier.value).await?,
                identifier.value.clone(),
            ),
        };
        let server_name = ServerName::try_from(sni.trim_end_matches('.').to_string())
            .map_err(|e| AcmeError::malformed(format!("{sni} is not a server name: {e}")))?;
        let mut last_error = None;
        for ip in addresses {
            let address = SocketAddr::new(ip, self.tlsalpn01_port);
            let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
            let stream = match tokio::net::TcpStream::connect(address).await {
                Ok(stream) => stream,
                Err(e) => {
                    last_error = Some(AcmeError::new(
                        ErrorType::Connection,
                        format!("connecting to {address}: {e}"),
                    ));
                    continue;
                }
            };
            let mut tls = connector
                .connect(server_name.clone(), stream)
                .await
                .map_err(|e| {
                    AcmeError::new(ErrorType::Tls, format!("TLS handshake with {address}: {e}"))
                })?;
            let (_, connection) = tls.get_ref();
            if connection.alpn_protocol() != Some(b"acme-tls/1") {
                return Err(AcmeError::new(
                    ErrorType::Tls,
                    format!("{address} did not negotiate the acme-tls/1 protocol"),
                ));
            }
            let certificate = connection
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| c.as_ref().to_vec())
                .ok_or_else(|| {
                    AcmeError::new(ErrorType::Tls, format!("{address} sent no certificate"))
                })?;
            // Nothing is read; close politely.
            let mut scratch = [0u8; 1];
            let _ = tokio::time::timeout(Duration::from_millis(1), tls.read(&mut scratch)).await;
            return check_tls_alpn01_certificate(&certificate, identifier, key_authorization);
        }
        Err(last_error.unwrap_or_else(|| {
            AcmeError::new(
                ErrorType::Dns,
                format!("no address found for {}", identifier.value),
            )
        }))
    }

    async fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, AcmeError> {
        let fqdn = format!("{name}.");
        let lookup = self
            .resolver
            .lookup_ip(fqdn.as_str())
            .await
            .map_err(|e| dns_error(&fqdn, "A/AAAA", &e))?;
        let addresses: Vec<IpAddr> = lookup.iter().collect();
        if addresses.is_empty() {
            return Err(AcmeError::new(
                ErrorType::Dns,
                format!("{name} has no A or AAAA record"),
            ));
        }
        Ok(addresses)
    }

    /// RFC 8659: finds the relevant CAA record set by climbing from the name towards the root
    /// and checks that it authorises one of `identities` (issuewild for wildcards, falling
    /// back to issue). No CAA record anywhere authorises every CA.
    pub async fn check_caa(
        &self,
        name: &str,
        wildcard: bool,
        identities: &[String],
    ) -> Result<(), AcmeError> {
        let labels: Vec<&str> = name.split('.').collect();
        for start in 0..labels.len() {
            let candidate = format!("{}.", labels[start..].join("."));
            let records = match self
                .resolver
                .lookup(candidate.as_str(), RecordType::CAA)
                .await
            {
                Ok(lookup) => lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::CAA(caa) => Some(caa.clone()),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
                Err(error) if error.is_no_records_found() || error.is_nx_domain() => Vec::new(),
                Err(error) => return Err(dns_error(&candidate, "CAA", &error)),
            };
            if records.is_empty() {
                continue;
            }
            let tag =
                |record: &hickory_resolver::proto::rr::rdata::CAA| record.tag.to_ascii_lowercase();
            for record in &records {
                if record.issuer_critical
                    && !matches!(tag(record).as_str(), "issue" | "issuewild" | "iodef")
                {
                    return Err(AcmeError::new(
                        ErrorType::Caa,
                        format!(
                            "CAA at {candidate} has a critical property this CA does not understand"
                        ),
                    ));
                }
            }
            let issuewild: Vec<_> = records.iter().filter(|r| tag(r) == "issuewild").collect();
            let relevant: Vec<_> = if wildcard && !issuewild.is_empty() {
                issuewild
            } else {
                records.iter().filter(|r| tag(r) == "issue").collect()
            };
            if relevant.is_empty() {
                // Only iodef or other properties: issuance is not restricted.
                return Ok(());
            }
            let authorised = relevant.iter().any(|record| match record.value_as_issue() {
                Ok((Some(issuer), _)) => {
                    let issuer = issuer.to_ascii().trim_end_matches('.').to_ascii_lowercase();
                    identities.iter().any(|id| id.eq_ignore_ascii_case(&issuer))
                }
                _ => false,
            });
            return if authorised {
                Ok(())
            } else {
                Err(AcmeError::new(
                    ErrorType::Caa,
                    format!(
                        "CAA records at {candidate} do not authorise this CA (its identities: {identities:?})"
                    ),
                ))
            };
        }
        Ok(())
    }
}

/// RFC 8555 §8.3 and §10.4: an http-01 redirect may only go to http or https on the
/// validation ports (80 or the configured one, 443), to a host name — never to an IP address
/// literal, which would let a client point the validator at any internal address — and at most
/// 10 times.
fn redirect_allowed(
    attempt: reqwest::redirect::Attempt<'_>,
    http01_port: u16,
) -> reqwest::redirect::Action {
    let url = attempt.url().clone();
    let port_ok = match (url.scheme(), url.port_or_known_default()) {
        ("http", Some(port)) => port == 80 || port == http01_port,
        ("https", Some(port)) => port == 443,
        _ => false,
    };
    let named_host = url.host_str().is_some_and(|host| {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_err()
    });
    if attempt.previous().len() >= 10 {
        attempt.error("more than 10 redirects")
    } else if !port_ok {
        attempt.error(format!(
            "redirect to {url}: only http on port 80 and https on port 443 are followed"
        ))
    } else if !named_host {
        attempt.error(format!(
            "redirect to {url}: redirects to IP addresses are not followed"
        ))
    } else {
        attempt.follow()
    }
}

fn dns_error(name: &str, kind: &str, error: &NetError) -> AcmeError {
    if error.is_no_records_found() || error.is_nx_domain() {
        AcmeError::new(ErrorType::Dns, format!("no {kind} record at {name}"))
    } else {
        AcmeError::new(
            ErrorType::Dns,
            format!("{kind} look-up of {name} failed: {error}"),
        )
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Name resolution for the http-01 client through the validation resolver.
struct DnsForHttp(TokioResolver);

impl reqwest::dns::Resolve for DnsForHttp {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        Box::pin(async move {
            let fqdn = format!("{}.", name.as_str());
            let lookup = resolver.lookup_ip(fqdn.as_str()).await?;
            let addresses: Vec<SocketAddr> =
                lookup.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// tls-alpn-01 validation looks at the certificate itself (RFC 8737 §3): it is self-signed by
/// design, so no chain is verified.
#[derive(Debug)]
struct AcceptAnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // The client offers TLS 1.3 only (see `Validator::new`).
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // The handshake must be signed by the key of the certificate presented. webpki cannot
        // parse that certificate (its acmeIdentifier extension is critical), so the signature
        // is checked against the bare public key.
        use x509_parser::prelude::FromDer;
        let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref())
            .map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
            })?;
        let spki = rustls::pki_types::SubjectPublicKeyInfoDer::from(
            parsed.tbs_certificate.subject_pki.raw,
        );
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &spki,
            dss,
            &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
