//! The HTTP client behind every command that talks to a server.

use std::path::PathBuf;

use certkeeper_server::problem::Problem;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ServerArgs;
use crate::error::CliError;

/// A configured API client.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// Builds a client trusting only the given CA (or the local data directory's root).
    pub fn new(args: &ServerArgs) -> Result<Client, CliError> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("certkeeper/", env!("CARGO_PKG_VERSION")));
        let ca_file = args.ca_file.clone().or_else(|| {
            let local = PathBuf::from("certkeeper-data/ca/root.crt");
            local.exists().then_some(local)
        });
        if let Some(path) = ca_file {
            let pem = std::fs::read(&path).map_err(|e| CliError::file(&path, e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| CliError::file(&path, format!("not a PEM certificate: {e}")))?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|e| CliError::Http(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: args.server.trim_end_matches('/').to_string(),
            token: args.token.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<T, CliError> {
        exchange(builder, &self.base).await
    }

    /// GET a JSON resource.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// GET a resource's bytes (CA certificates, chains).
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, CliError> {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| {
                CliError::Http(format!("cannot reach {}: {}", self.base, error_chain(&e)))
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CliError::Http(e.to_string()))?;
        if !status.is_success() {
            return Err(CliError::Http(format!("{path}: HTTP {status}")));
        }
        Ok(bytes.to_vec())
    }

    /// POST JSON, read JSON.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// DELETE a resource, read JSON.
    pub async fn send_delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// DELETE a resource.
    pub async fn delete(&self, path: &str) -> Result<(), CliError> {
        self.send::<serde_json::Value>(self.request(reqwest::Method::DELETE, path))
            .await
            .map(|_| ())
    }
}

/// Sends a request to `server` and reads its JSON answer, or the problem it sent instead
/// (also used by the agent, which talks to the agent listener with its own client).
pub async fn exchange<T: DeserializeOwned>(
    builder: reqwest::RequestBuilder,
    server: &str,
) -> Result<T, CliError> {
    let response = builder
        .send()
        .await
        .map_err(|e| CliError::Http(format!("cannot reach {server}: {}", error_chain(&e))))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| CliError::Http(e.to_string()))?;
    if !status.is_success() {
        return Err(match serde_json::from_slice::<Problem>(&bytes) {
            Ok(problem) => CliError::Api(problem),
            Err(_) => CliError::Http(format!("{status}: {}", String::from_utf8_lossy(&bytes))),
        });
    }
    if bytes.is_empty() {
        return serde_json::from_slice(b"null").map_err(|e| CliError::Http(e.to_string()));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| CliError::Http(format!("unexpected answer from {server}: {e}")))
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
