//! Accounts, orders and authorizations as stored (JSON bodies) and as shown to clients.

use certkeeper_acme::{AcmeError, ErrorType, Identifier, Status};
use certkeeper_store::{AcmeKind, AcmeObject};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::issuance::rfc3339;

/// An account as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AccountDoc {
    pub status: Status,
    pub contact: Vec<String>,
    pub jwk: Value,
    pub created_at: i64,
    #[serde(default)]
    pub eab_kid: Option<String>,
    /// The externalAccountBinding object as the client sent it (echoed, RFC 8555 §7.3.4).
    #[serde(default)]
    pub eab: Option<Value>,
    #[serde(default)]
    pub terms_agreed: bool,
}

/// An order as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OrderDoc {
    pub status: Status,
    pub expires: i64,
    pub identifiers: Vec<Identifier>,
    pub authorizations: Vec<String>,
    pub profile: String,
    #[serde(default)]
    pub error: Option<Value>,
    #[serde(default)]
    pub certificate_serial: Option<String>,
    /// ARI certificate id this order replaces.
    #[serde(default)]
    pub replaces: Option<String>,
    #[serde(default)]
    pub replaces_certificate_id: Option<i64>,
}

/// A challenge inside an authorization.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChallengeDoc {
    #[serde(rename = "type")]
    pub kind: String,
    pub token: String,
    pub status: Status,
    #[serde(default)]
    pub validated: Option<i64>,
    #[serde(default)]
    pub error: Option<Value>,
}

/// An authorization as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AuthzDoc {
    pub status: Status,
    pub expires: i64,
    /// The identifier without any wildcard label.
    pub identifier: Identifier,
    pub wildcard: bool,
    pub challenges: Vec<ChallengeDoc>,
}

/// A stored object with its decoded body.
#[derive(Debug, Clone)]
pub(crate) struct Loaded<T> {
    pub row: AcmeObject,
    pub doc: T,
}

impl<T: Serialize + for<'de> Deserialize<'de>> Loaded<T> {
    pub fn decode(row: AcmeObject) -> Result<Self, AcmeError> {
        let doc = serde_json::from_str(&row.body).map_err(|e| {
            AcmeError::new(
                ErrorType::ServerInternal,
                format!("stored ACME object {} is unreadable: {e}", row.id),
            )
        })?;
        Ok(Loaded { row, doc })
    }

    /// The next version of this object with `doc` as its body.
    pub fn updated(
        &self,
        status: &str,
        lookup: Option<&str>,
        expires_at: i64,
    ) -> Result<AcmeObject, AcmeError> {
        Ok(AcmeObject {
            body: to_json(&self.doc)?,
            status: status.to_string(),
            lookup: lookup.map_or_else(|| self.row.lookup.clone(), str::to_string),
            expires_at,
            version: self.row.version + 1,
            ..self.row.clone()
        })
    }
}

pub(crate) fn to_json<T: Serialize>(doc: &T) -> Result<String, AcmeError> {
    serde_json::to_string(doc).map_err(|e| AcmeError::new(ErrorType::ServerInternal, e.to_string()))
}

/// A new stored object (version 1), owned by (tenant, account id).
pub(crate) fn new_object<T: Serialize>(
    kind: AcmeKind,
    id: &str,
    (tenant, account_id): (&str, &str),
    lookup: &str,
    status: &str,
    expires_at: i64,
    doc: &T,
) -> Result<AcmeObject, AcmeError> {
    Ok(AcmeObject {
        id: id.to_string(),
        kind,
        tenant: tenant.to_string(),
        account_id: account_id.to_string(),
        lookup: lookup.to_string(),
        status: status.to_string(),
        expires_at,
        version: 1,
        body: to_json(doc)?,
    })
}

/// URLs of one tenant's directory.
#[derive(Debug, Clone)]
pub(crate) struct Urls {
    /// `https://host/acme/<tenant>`
    pub base: String,
}

impl Urls {
    pub fn directory(&self) -> String {
        format!("{}/directory", self.base)
    }
    pub fn account(&self, id: &str) -> String {
        format!("{}/account/{id}", self.base)
    }
    pub fn order(&self, id: &str) -> String {
        format!("{}/order/{id}", self.base)
    }
    pub fn finalize(&self, id: &str) -> String {
        format!("{}/order/{id}/finalize", self.base)
    }
    pub fn authz(&self, id: &str) -> String {
        format!("{}/authz/{id}", self.base)
    }
    pub fn challenge(&self, authz: &str, index: usize) -> String {
        format!("{}/chall/{authz}/{index}", self.base)
    }
    pub fn certificate(&self, serial: &str) -> String {
        format!("{}/cert/{serial}", self.base)
    }
    pub fn endpoint(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }
}

pub(crate) fn account_json(urls: &Urls, id: &str, doc: &AccountDoc) -> Value {
    let mut value = json!({
        "status": doc.status.as_str(),
        "contact": doc.contact,
        "orders": format!("{}/orders", urls.account(id)),
    });
    if doc.terms_agreed {
        value["termsOfServiceAgreed"] = json!(true);
    }
    if let Some(binding) = &doc.eab {
        value["externalAccountBinding"] = binding.clone();
    }
    value
}

pub(crate) fn order_json(urls: &Urls, id: &str, doc: &OrderDoc, status: Status) -> Value {
    let mut value = json!({
        "status": status.as_str(),
        "expires": rfc3339(doc.expires),
        "identifiers": doc.identifiers,
        "authorizations": doc.authorizations.iter().map(|a| urls.authz(a)).collect::<Vec<_>>(),
        "finalize": urls.finalize(id),
        "profile": doc.profile,
    });
    if let Some(serial) = &doc.certificate_serial {
        value["certificate"] = json!(urls.certificate(serial));
    }
    if let Some(error) = &doc.error {
        value["error"] = error.clone();
    }
    if let Some(replaces) = &doc.replaces {
        value["replaces"] = json!(replaces);
    }
    value
}

pub(crate) fn challenge_json(
    urls: &Urls,
    authz_id: &str,
    index: usize,
    challenge: &ChallengeDoc,
) -> Value {
    let mut value = json!({
        "type": challenge.kind,
        "url": urls.challenge(authz_id, index),
        "status": challenge.status.as_str(),
        "token": challenge.token,
    });
    if let Some(at) = challenge.validated {
        value["validated"] = json!(rfc3339(at));
    }
    if let Some(error) = &challenge.error {
        value["error"] = error.clone();
    }
    value
}

pub(crate) fn authz_json(urls: &Urls, id: &str, doc: &AuthzDoc, status: Status) -> Value {
    let mut value = json!({
        "identifier": doc.identifier,
        "status": status.as_str(),
        "expires": rfc3339(doc.expires),
        "challenges": doc.challenges.iter().enumerate()
            .map(|(i, c)| challenge_json(urls, id, i, c)).collect::<Vec<_>>(),
    });
    if doc.wildcard {
        value["wildcard"] = json!(true);
    }
    value
}

/// An authorization's status as of `now` (a pending one past its expiry is expired).
pub(crate) fn authz_status(doc: &AuthzDoc, now: i64) -> Status {
    match doc.status {
        Status::Pending | Status::Valid if doc.expires <= now => Status::Expired,
        other => other,
    }
}

/// Error object stored in a challenge or order.
pub(crate) fn error_json(error: &AcmeError) -> Value {
    json!({"type": error.kind.urn(), "detail": error.detail, "status": error.kind.http_status()})
}
