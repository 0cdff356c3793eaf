//! A raw ACME client for protocol tests: it builds JWS requests by hand so that tests can
//! also send the malformed ones real clients never send.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// An ACME response: status, headers, body (JSON when it parses, else Null) and raw text.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Answer {
    /// The problem type without the URN prefix (`badNonce`), or "".
    pub fn error_type(&self) -> String {
        self.json["type"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches("urn:ietf:params:acme:error:")
            .to_string()
    }

    pub fn location(&self) -> String {
        self.headers["location"].to_str().unwrap().to_string()
    }
}

pub struct RawAcme {
    pub http: reqwest::Client,
    pub directory: Value,
    pub key: EcdsaKeyPair,
    /// The account key, PKCS#8.
    pub pkcs8: Vec<u8>,
    pub kid: Option<String>,
    nonce: Option<String>,
}

impl RawAcme {
    pub async fn new(http: reqwest::Client, directory_url: &str) -> RawAcme {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        RawAcme::with_key(http, directory_url, pkcs8.as_ref()).await
    }

    /// A client whose key is this P-256 PKCS#8 key (for example a certificate's key).
    pub async fn with_key(http: reqwest::Client, directory_url: &str, pkcs8: &[u8]) -> RawAcme {
        let directory: Value = http
            .get(directory_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).unwrap();
        RawAcme {
            http,
            directory,
            key,
            pkcs8: pkcs8.to_vec(),
            kid: None,
            nonce: None,
        }
    }

    pub fn url(&self, name: &str) -> String {
        self.directory[name].as_str().unwrap().to_string()
    }

    pub fn jwk(&self) -> Value {
        let point = self.key.public_key().as_ref();
        json!({"crv": "P-256", "kty": "EC", "x": b64(&point[1..33]), "y": b64(&point[33..65])})
    }

    /// RFC 7638 thumbprint of the account key.
    pub fn thumbprint(&self) -> String {
        let jwk = self.jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    pub async fn fresh_nonce(&mut self) -> String {
        if let Some(nonce) = self.nonce.take() {
            return nonce;
        }
        let response = self.http.head(self.url("newNonce")).send().await.unwrap();
        response.headers()["replay-nonce"]
            .to_str()
            .unwrap()
            .to_string()
    }

    /// Signs `payload` (None = POST-as-GET) under `protected`.
    pub fn sign(&self, protected: &Value, payload: Option<&Value>) -> Value {
        let protected = b64(protected.to_string().as_bytes());
        let payload = payload.map_or_else(String::new, |p| b64(p.to_string().as_bytes()));
        let input = format!("{protected}.{payload}");
        let signature = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        json!({"protected": protected, "payload": payload, "signature": b64(signature.as_ref())})
    }

    /// The usual protected header: kid once registered, else jwk.
    pub async fn header(&mut self, url: &str) -> Value {
        let nonce = self.fresh_nonce().await;
        let mut header = json!({"alg": "ES256", "nonce": nonce, "url": url});
        match &self.kid {
            Some(kid) => header["kid"] = json!(kid),
            None => header["jwk"] = self.jwk(),
        }
        header
    }

    /// Posts an already signed body.
    pub async fn send(&mut self, url: &str, body: &Value) -> Answer {
        let response = self
            .http
            .post(url)
            .header("content-type", "application/jose+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if let Some(nonce) = headers.get("replay-nonce") {
            self.nonce = Some(nonce.to_str().unwrap().to_string());
        }
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            json,
            text,
        }
    }

    pub async fn post(&mut self, url: &str, payload: Option<&Value>) -> Answer {
        let header = self.header(url).await;
        let body = self.sign(&header, payload);
        self.send(url, &body).await
    }

    pub async fn register(&mut self) -> Answer {
        let url = self.url("newAccount");
        let answer = self
            .post(&url, Some(&json!({"termsOfServiceAgreed": true})))
            .await;
        assert_eq!(answer.status, 201, "newAccount: {}", answer.text);
        self.kid = Some(answer.location());
        answer
    }

    pub async fn new_order(&mut self, identifiers: &[(&str, &str)]) -> Answer {
        let url = self.url("newOrder");
        let identifiers: Vec<Value> = identifiers
            .iter()
            .map(|(kind, value)| json!({"type": kind, "value": value}))
            .collect();
        self.post(&url, Some(&json!({"identifiers": identifiers})))
            .await
    }
}

/// The challenge of `kind` in an authorization object.
pub fn challenge_of(authz: &Value, kind: &str) -> Value {
    authz["challenges"]
        .as_array()
        .expect("challenges")
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} challenge in {authz}"))
        .clone()
}

/// A CSR (DER) for `names` with a fresh P-256 key, made with rcgen.
pub fn csr_der(names: &[&str]) -> Vec<u8> {
    csr_der_with_key(names, &rcgen::KeyPair::generate().unwrap())
}

/// A CSR (DER) for `names` with `key`.
pub fn csr_der_with_key(names: &[&str], key: &rcgen::KeyPair) -> Vec<u8> {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.serialize_request(key).unwrap().der().to_vec()
}

/// A tiny http-01 responder: answers every request with `body`, on 127.0.0.1:`port`.
pub async fn serve_http01(port: u16, body: String) -> tokio::task::JoinHandle<()> {
    serve_http01_after(port, body, std::time::Duration::ZERO).await
}

/// The same, answering only after `delay`.
pub async fn serve_http01_after(
    port: u16,
    body: String,
    delay: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                tokio::time::sleep(delay).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    })
}

/// pebble-challtestsrv as the DNS server validation resolves through: it answers A 127.0.0.1
/// for every name, and TXT records set through its management API.
pub struct DnsServer {
    child: std::process::Child,
    pub dns_port: u16,
    pub management_port: u16,
}

impl DnsServer {
    pub fn start() -> DnsServer {
        let dns_port = super::free_port();
        let management_port = super::free_port();
        let child = std::process::Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv6",
                "",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-management", &format!("127.0.0.1:{management_port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (Debian package pebble; scripts/test installs it)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", management_port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "pebble-challtestsrv did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        DnsServer {
            child,
            dns_port,
            management_port,
        }
    }

    pub fn management_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.management_port)
    }

    /// Sets the dns-01 TXT record of `name` (challtestsrv needs the trailing dot).
    pub async fn set_txt(&self, name: &str, value: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/set-txt", self.management_url()))
            .body(json!({"host": format!("_acme-challenge.{name}."), "value": value}).to_string())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// Adds CAA records for `name`.
    pub async fn add_caa(&self, name: &str, issuer: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/add-caa", self.management_url()))
            .body(
                json!({"host": format!("{name}."), "policies": [{"tag": "issue", "value": issuer}]})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a configuration with the ACME server validating through `dns` on the given ports.
pub fn acme_config(
    dir: &std::path::Path,
    dns: &DnsServer,
    http01_port: u16,
    tlsalpn01_port: u16,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.join("certkeeper.toml");
    std::fs::write(
        &path,
        format!(
            "[acme]\ndns_resolver = \"127.0.0.1:{}\"\nhttp01_port = {http01_port}\ntlsalpn01_port = {tlsalpn01_port}\nvalidation_timeout = \"5s\"\n{extra}\n",
            dns.dns_port
        ),
    )
    .unwrap();
    path
}
