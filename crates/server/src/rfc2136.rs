//! dns-01 records through RFC 2136 dynamic updates signed with TSIG (RFC 8945): the TXT
//! record `_acme-challenge.<name>` is added before the challenge is answered and deleted
//! (that value only) afterwards. One UPDATE per change over TCP; the server's answer must be
//! NOERROR and, when it is, carry a valid TSIG.

use std::time::Duration;

use base64::Engine;
use hickory_proto::op::{Message, ResponseCode, update_message};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, RData, Record, RecordSet, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Rfc2136Config;

/// How long one update may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(15);
/// TTL of challenge records: short, validation follows at once.
const TTL: u32 = 60;
/// Clock skew allowed between certkeeper and the DNS server (RFC 8945 §10 suggests 300 s).
const FUDGE: u16 = 300;

/// Adds the TXT record `record` (absolute, with the trailing dot) with `value`.
pub async fn present(config: &Rfc2136Config, record: &str, value: &str) -> Result<(), String> {
    let (zone, rrset) = prepare(config, record, value)?;
    send(config, update_message::append(rrset, zone, false, false)).await
}

/// Deletes that value from the TXT record `record` (other values stay).
pub async fn cleanup(config: &Rfc2136Config, record: &str, value: &str) -> Result<(), String> {
    let (zone, rrset) = prepare(config, record, value)?;
    send(config, update_message::delete_by_rdata(rrset, zone, false)).await
}

/// Checks the settings (zone and key name parse, the secret is base64, the algorithm is
/// known) so that a mistake stops the server at start rather than failing each attempt.
pub fn check(config: &Rfc2136Config) -> Result<(), String> {
    absolute_name(&config.zone).map_err(|e| format!("rfc2136.zone {:?}: {e}", config.zone))?;
    signer(config).map(|_| ())
}

fn prepare(config: &Rfc2136Config, record: &str, value: &str) -> Result<(Name, RecordSet), String> {
    let zone =
        absolute_name(&config.zone).map_err(|e| format!("rfc2136.zone {:?}: {e}", config.zone))?;
    let name = absolute_name(record).map_err(|e| format!("record name {record:?}: {e}"))?;
    if !zone.zone_of(&name) {
        return Err(format!(
            "{record} is not inside rfc2136.zone {:?}; set the zone that holds the names of this issuer's certificates",
            config.zone
        ));
    }
    let txt = Record::from_rdata(name, TTL, RData::TXT(TXT::new(vec![value.to_string()])));
    Ok((zone, RecordSet::from(txt)))
}

fn absolute_name(text: &str) -> Result<Name, String> {
    let mut name = Name::from_ascii(text).map_err(|e| e.to_string())?;
    name.set_fqdn(true);
    Ok(name)
}

fn signer(config: &Rfc2136Config) -> Result<TSigner, String> {
    let secret = base64::engine::general_purpose::STANDARD
        .decode(config.key_secret.trim())
        .map_err(|_| "rfc2136.key_secret is not base64 (as tsig-keygen prints it)".to_string())?;
    let algorithm = match config.key_algorithm.trim_end_matches('.') {
        "hmac-sha256" => TsigAlgorithm::HmacSha256,
        "hmac-sha384" => TsigAlgorithm::HmacSha384,
        "hmac-sha512" => TsigAlgorithm::HmacSha512,
        other => {
            return Err(format!(
                "rfc2136.key_algorithm {other:?} is not one of hmac-sha256, hmac-sha384, hmac-sha512"
            ));
        }
    };
    let name = absolute_name(&config.key_name)
        .map_err(|e| format!("rfc2136.key_name {:?}: {e}", config.key_name))?;
    TSigner::new(secret, algorithm, name, FUDGE).map_err(|e| format!("TSIG key: {e}"))
}

async fn send(config: &Rfc2136Config, mut message: Message) -> Result<(), String> {
    let server = config.server;
    let signer = signer(config)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut verifier = message
        .finalize(&signer, u64::try_from(now).unwrap_or(0))
        .map_err(|e| format!("signing the update: {e}"))?;
    let request = message
        .to_vec()
        .map_err(|e| format!("encoding the update: {e}"))?;
    let length = u16::try_from(request.len()).map_err(|_| "the update is too long")?;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(server).await?;
        stream.write_all(&length.to_be_bytes()).await?;
        stream.write_all(&request).await?;
        let mut size = [0u8; 2];
        stream.read_exact(&mut size).await?;
        let mut response = vec![0u8; usize::from(u16::from_be_bytes(size))];
        stream.read_exact(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("DNS server {server} did not answer the update within 15 s"))?
        .map_err(|e| format!("DNS server {server}: {e}"))?;
    let answer =
        Message::from_vec(&response).map_err(|e| format!("DNS server {server} answered: {e}"))?;
    if answer.metadata.id != message.metadata.id {
        return Err(format!("DNS server {server} answered another message"));
    }
    let code = answer.metadata.response_code;
    if code != ResponseCode::NoError {
        return Err(format!(
            "DNS server {server} refused the update: {code} (check the TSIG key and that its update-policy allows TXT records in {})",
            config.zone
        ));
    }
    if let Some(verifier) = verifier.as_mut() {
        verifier
            .verify(&response)
            .map_err(|e| format!("DNS server {server}: the answer's TSIG does not verify: {e}"))?;
    }
    Ok(())
}
