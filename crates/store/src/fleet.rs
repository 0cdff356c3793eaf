//! Host agents and fleet rollouts: bootstrap tokens, enrolled agents, bindings (managed
//! certificate → agent → local target), payloads for agents, rollouts and their waves.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::{Change, Store, StoreError};

/// A one-time bootstrap token as stored (only the SHA-256 of its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// Public id (the part before the dot).
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// Tenant the enrolled agent belongs to.
    pub tenant: String,
    /// Who created it.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; refused from then on.
    pub expires_at: i64,
    /// When it was used (it can be used once).
    pub used_at: Option<i64>,
    /// The agent it enrolled.
    pub used_by: Option<String>,
}

/// An enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// Random id, in the identity certificate's URI.
    pub id: String,
    /// Name it enrolled with (unique among active agents).
    pub name: String,
    /// Tenant (from its bootstrap token).
    pub tenant: String,
    /// `active` or `revoked`.
    pub status: String,
    /// Serial of its current identity certificate.
    pub identity_serial: String,
    /// Serial of the identity it renewed from (accepted until it expires).
    pub previous_identity_serial: Option<String>,
    /// Expiry of the current identity, Unix seconds.
    pub identity_not_after: i64,
    /// Unix seconds.
    pub enrolled_at: i64,
    /// Unix seconds.
    pub revoked_at: Option<i64>,
    /// SHA-256 of the trust bundle the agent last said it holds (not written on enrollment).
    pub trust_sha256: Option<String>,
}

/// A CA certificate in every agent's trust bundle ahead of its use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchor {
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Its subject.
    pub subject: String,
    /// Its expiry, Unix seconds.
    pub not_after: i64,
    /// Who added it.
    pub added_by: String,
    /// Unix seconds.
    pub added_at: i64,
}

/// What an agent last reported about one binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentBinding {
    /// The agent.
    pub agent_id: String,
    /// The managed certificate.
    pub managed_name: String,
    /// The local target, as the agent describes it (JSON).
    pub target: String,
    /// Serial the target serves.
    pub deployed_serial: Option<String>,
    /// Serial the agent last tried to deploy.
    pub attempted_serial: Option<String>,
    /// Which offer of that serial the try answered (a rollout wave's release time, or 0).
    pub attempt: i64,
    /// Why that attempt failed.
    pub error: Option<String>,
    /// Unix milliseconds.
    pub reported_at: i64,
}

/// What agents receive for one serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPayload {
    /// The managed certificate.
    pub managed_name: String,
    /// Serial.
    pub serial: String,
    /// Leaf, PEM.
    pub certificate_pem: String,
    /// Chain without the leaf, PEM.
    pub chain_pem: String,
    /// Private key sealed under the data directory's key-encryption key.
    pub key_sealed: String,
}

/// A rollout as stored (times in Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRecord {
    /// Id.
    pub id: i64,
    /// The managed certificate.
    pub managed_name: String,
    /// The new serial.
    pub serial: String,
    /// The serial agents go back to on a halt or abort.
    pub previous_serial: Option<String>,
    /// `running`, `paused`, `halted`, `aborted` or `completed`.
    pub state: String,
    /// A compromise response: one wave, no halt.
    pub urgent: bool,
    /// The wave released last.
    pub current_wave: i64,
    /// The highest wave.
    pub last_wave: i64,
    /// When the current wave was released.
    pub wave_released_at: i64,
    /// Why it halted or was aborted.
    pub reason: Option<String>,
    /// When the new certificate was asked for (the compromise command, or the renewal).
    pub requested_at: i64,
    /// When the rollout began.
    pub created_at: i64,
    /// When it completed, halted or was aborted.
    pub finished_at: Option<i64>,
}

/// One agent of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutAgent {
    /// The agent.
    pub agent_id: String,
    /// Its wave (0 = canary).
    pub wave: i64,
    /// What it served when the rollout began: it goes back to that on a halt or an abort.
    pub previous_serial: Option<String>,
    /// When it confirmed the new serial (Unix milliseconds).
    pub confirmed_at: Option<i64>,
}

/// A new rollout with its agents and their waves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRollout {
    /// The managed certificate.
    pub managed_name: String,
    /// The new serial.
    pub serial: String,
    /// What agents outside the rollout serve now (`fleet_serial`).
    pub previous_serial: Option<String>,
    /// One wave, no halt.
    pub urgent: bool,
    /// The agents, their waves and what each serves now.
    pub agents: Vec<RolloutAgent>,
    /// Unix milliseconds.
    pub requested_at: i64,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A write to the fleet tables, part of a [`Change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetWrite {
    /// Create a bootstrap token.
    BootstrapToken(BootstrapToken),
    /// Use a bootstrap token (fails with a conflict if it was used) and create the agent.
    Enroll {
        /// The token.
        token_id: String,
        /// The agent.
        agent: AgentRecord,
    },
    /// A renewed identity certificate.
    RenewIdentity {
        /// The agent.
        agent_id: String,
        /// New serial.
        serial: String,
        /// New expiry, Unix seconds.
        not_after: i64,
    },
    /// Revoke an agent: nothing it presents is accepted any more.
    RevokeAgent {
        /// The agent.
        agent_id: String,
        /// Unix seconds.
        at: i64,
    },
    /// Create or replace what an agent reports about one binding.
    Binding(AgentBinding),
    /// Forget a binding the agent no longer reports.
    Unbind {
        /// The agent.
        agent_id: String,
        /// The managed certificate.
        managed_name: String,
    },
    /// Store what agents receive for a serial.
    Payload(AgentPayload),
    /// Start a rollout; older unfinished rollouts of the same certificate are aborted.
    CreateRollout(NewRollout),
    /// Move a rollout on, if it is still as it was read (else the change fails with a
    /// conflict and nothing is written).
    UpdateRollout {
        /// Rollout id.
        id: i64,
        /// The state it was read in.
        expected_state: String,
        /// The wave it was read at.
        expected_wave: i64,
        /// New state.
        state: String,
        /// Wave released last.
        current_wave: i64,
        /// When it was released (ms).
        wave_released_at: i64,
        /// Why it stopped.
        reason: Option<String>,
        /// When it finished (ms).
        finished_at: Option<i64>,
    },
    /// An agent confirmed a rollout's serial.
    Confirm {
        /// Rollout id.
        rollout_id: i64,
        /// The agent.
        agent_id: String,
        /// Unix milliseconds.
        at: i64,
    },
    /// What agents outside a running rollout serve.
    FleetSerial {
        /// The managed certificate.
        managed_name: String,
        /// Serial.
        serial: String,
    },
    /// Add a CA certificate to every agent's trust bundle (idempotent).
    TrustAnchor(TrustAnchor),
    /// The trust bundle an agent says it holds.
    TrustAck {
        /// The agent.
        agent_id: String,
        /// SHA-256 of the bundle.
        sha256: String,
    },
    /// A key compromise: renew at once with a new key (the kept key is dropped), and stop
    /// handing the compromised certificate and key to agents.
    Compromise {
        /// The managed certificate.
        managed_name: String,
        /// When it was declared (Unix milliseconds).
        at_ms: i64,
    },
}

/// The reason a renewal after a key compromise carries until it is made.
pub const COMPROMISE_REASON: &str = "key compromise";

const AGENT_COLUMNS: &str = "id, name, tenant, status, identity_serial, previous_identity_serial, \
    identity_not_after, enrolled_at, revoked_at";
const AGENT_SELECT: &str = "id, name, tenant, status, identity_serial, previous_identity_serial, \
    identity_not_after, enrolled_at, revoked_at, trust_sha256";
const BINDING_COLUMNS: &str = "agent_id, managed_name, target, deployed_serial, attempted_serial, \
    attempt, error, reported_at";
const ROLLOUT_COLUMNS: &str = "id, managed_name, serial, previous_serial, state, urgent, current_wave, \
    last_wave, wave_released_at, reason, requested_at, created_at, finished_at";

fn decode_agent(row: &AnyRow) -> Result<AgentRecord, StoreError> {
    Ok(AgentRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        tenant: row.try_get("tenant")?,
        status: row.try_get("status")?,
        identity_serial: row.try_get("identity_serial")?,
        previous_identity_serial: row.try_get("previous_identity_serial")?,
        identity_not_after: row.try_get("identity_not_after")?,
        enrolled_at: row.try_get("enrolled_at")?,
        revoked_at: row.try_get("revoked_at")?,
        trust_sha256: row.try_get("trust_sha256")?,
    })
}

fn decode_binding(row: &AnyRow) -> Result<AgentBinding, StoreError> {
    Ok(AgentBinding {
        agent_id: row.try_get("agent_id")?,
        managed_name: row.try_get("managed_name")?,
        target: row.try_get("target")?,
        deployed_serial: row.try_get("deployed_serial")?,
        attempted_serial: row.try_get("attempted_serial")?,
        attempt: row.try_get("attempt")?,
        error: row.try_get("error")?,
        reported_at: row.try_get("reported_at")?,
    })
}

fn decode_rollout_agent(row: &AnyRow) -> Result<RolloutAgent, StoreError> {
    Ok(RolloutAgent {
        agent_id: row.try_get("agent_id")?,
        wave: row.try_get("wave")?,
        previous_serial: row.try_get("previous_serial")?,
        confirmed_at: row.try_get("confirmed_at")?,
    })
}

fn decode_rollout(row: &AnyRow) -> Result<RolloutRecord, StoreError> {
    Ok(RolloutRecord {
        id: row.try_get("id")?,
        managed_name: row.try_get("managed_name")?,
        serial: row.try_get("serial")?,
        previous_serial: row.try_get("previous_serial")?,
        state: row.try_get("state")?,
        urgent: row.try_get::<i64, _>("urgent")? != 0,
        current_wave: row.try_get("current_wave")?,
        last_wave: row.try_get("last_wave")?,
        wave_released_at: row.try_get("wave_released_at")?,
        reason: row.try_get("reason")?,
        requested_at: row.try_get("requested_at")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// Writes the fleet parts of a change.
pub(crate) async fn apply(
    tx: &mut Transaction<'static, Any>,
    change: &Change,
    now_s: i64,
) -> Result<(), StoreError> {
    for write in &change.fleet {
        apply_one(tx, write, now_s).await?;
    }
    Ok(())
}

async fn apply_one(
    tx: &mut Transaction<'static, Any>,
    write: &FleetWrite,
    now_s: i64,
) -> Result<(), StoreError> {
    match write {
        FleetWrite::BootstrapToken(t) => {
            sqlx::query(
                "INSERT INTO agent_bootstrap_tokens (id, secret_sha256, tenant, created_by, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&t.id)
            .bind(&t.secret_sha256)
            .bind(&t.tenant)
            .bind(&t.created_by)
            .bind(t.created_at)
            .bind(t.expires_at)
            .execute(&mut **tx)
            .await?;
        }
        FleetWrite::Enroll { token_id, agent } => {
            let used = sqlx::query(
                "UPDATE agent_bootstrap_tokens SET used_at = $1, used_by = $2 \
                 WHERE id = $3 AND used_at IS NULL AND expires_at > $1",
            )
            .bind(now_s)
            .bind(&agent.id)
            .bind(token_id)
            .execute(&mut **tx)
            .await?;
            if used.rows_affected() == 0 {
                return Err(StoreError::Conflict(
                    "the bootstrap token was used or expired meanwhile".into(),
                ));
            }
            sqlx::query(&format!(
                "INSERT INTO agents ({AGENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(&agent.id)
            .bind(&agent.name)
            .bind(&agent.tenant)
            .bind(&agent.status)
            .bind(&agent.identity_serial)
            .bind(&agent.previous_identity_serial)
            .bind(agent.identity_not_after)
            .bind(agent.enrolled_at)
            .bind(agent.revoked_at)
            .execute(&mut **tx)
            .await?;
        }
        FleetWrite::RenewIdentity {
            agent_id,
            serial,
            not_after,
        } => {
            let result = sqlx::query(
                "UPDATE agents SET previous_identity_serial = identity_serial, identity_serial = $1, \
                   identity_not_after = $2 WHERE id = $3 AND status = 'active'",
            )
            .bind(serial)
            .bind(not_after)
            .bind(agent_id)
            .execute(&mut **tx)
            .await?;
            if result.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("active agent {agent_id:?}")));
            }
        }
        FleetWrite::RevokeAgent { agent_id, at } => {
            let result = sqlx::query(
                "UPDATE agents SET status = 'revoked', revoked_at = $1 WHERE id = $2 AND status = 'active'",
            )
            .bind(at)
            .bind(agent_id)
            .execute(&mut **tx)
            .await?;
            if result.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("active agent {agent_id:?}")));
            }
        }
        FleetWrite::Binding(b) => {
            sqlx::query(&format!(
                "INSERT INTO agent_bindings ({BINDING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (agent_id, managed_name) DO UPDATE SET target = excluded.target, \
                   deployed_serial = excluded.deployed_serial, attempted_serial = excluded.attempted_serial, \
                   attempt = excluded.attempt, error = excluded.error, reported_at = excluded.reported_at"
            ))
            .bind(&b.agent_id)
            .bind(&b.managed_name)
            .bind(&b.target)
            .bind(&b.deployed_serial)
            .bind(&b.attempted_serial)
            .bind(b.attempt)
            .bind(&b.error)
            .bind(b.reported_at)
            .execute(&mut **tx)
            .await?;
        }
        FleetWrite::Unbind {
            agent_id,
            managed_name,
        } => {
            sqlx::query("DELETE FROM agent_bindings WHERE agent_id = $1 AND managed_name = $2")
                .bind(agent_id)
                .bind(managed_name)
                .execute(&mut **tx)
                .await?;
        }
        FleetWrite::Payload(p) => {
            sqlx::query(
                "INSERT INTO agent_payloads (managed_name, serial, certificate_pem, chain_pem, key_sealed, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (managed_name, serial) DO NOTHING",
            )
            .bind(&p.managed_name)
            .bind(&p.serial)
            .bind(&p.certificate_pem)
            .bind(&p.chain_pem)
            .bind(&p.key_sealed)
            .bind(now_s)
            .execute(&mut **tx)
            .await?;
        }
        FleetWrite::CreateRollout(r) => {
            sqlx::query(
                "UPDATE rollouts SET state = 'aborted', reason = 'superseded by a newer certificate', \
                   finished_at = $1 WHERE managed_name = $2 AND state IN ('running', 'paused', 'halted')",
            )
            .bind(r.created_at)
            .bind(&r.managed_name)
            .execute(&mut **tx)
            .await?;
            let last_wave = r.agents.iter().map(|a| a.wave).max().unwrap_or(0);
            let row = sqlx::query(
                "INSERT INTO rollouts (managed_name, serial, previous_serial, state, urgent, current_wave, \
                   last_wave, wave_released_at, requested_at, created_at) \
                 VALUES ($1, $2, $3, 'running', $4, 0, $5, $6, $7, $6) RETURNING id",
            )
            .bind(&r.managed_name)
            .bind(&r.serial)
            .bind(&r.previous_serial)
            .bind(i64::from(r.urgent))
            .bind(last_wave)
            .bind(r.created_at)
            .bind(r.requested_at)
            .fetch_one(&mut **tx)
            .await?;
            let id: i64 = row.try_get("id")?;
            for agent in &r.agents {
                sqlx::query(
                    "INSERT INTO rollout_agents (rollout_id, agent_id, wave, previous_serial) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(id)
                .bind(&agent.agent_id)
                .bind(agent.wave)
                .bind(&agent.previous_serial)
                .execute(&mut **tx)
                .await?;
            }
            // Keys for agents are kept only while a rollout may hand them out: the new serial
            // and what its agents (and the rest of the fleet) would go back to.
            let mut keep: Vec<&str> = vec![r.serial.as_str()];
            keep.extend(r.previous_serial.as_deref());
            keep.extend(r.agents.iter().filter_map(|a| a.previous_serial.as_deref()));
            keep.sort_unstable();
            keep.dedup();
            let placeholders: Vec<String> = (2..keep.len() + 2).map(|i| format!("${i}")).collect();
            let sql = format!(
                "DELETE FROM agent_payloads WHERE managed_name = $1 AND serial NOT IN ({})",
                placeholders.join(", ")
            );
            let mut prune = sqlx::query(&sql).bind(&r.managed_name);
            for serial in keep {
                prune = prune.bind(serial);
            }
            prune.execute(&mut **tx).await?;
        }
        FleetWrite::UpdateRollout {
            id,
            expected_state,
            expected_wave,
            state,
            current_wave,
            wave_released_at,
            reason,
            finished_at,
        } => {
            let result = sqlx::query(
                "UPDATE rollouts SET state = $1, current_wave = $2, wave_released_at = $3, reason = $4, \
                   finished_at = $5 WHERE id = $6 AND state = $7 AND current_wave = $8",
            )
            .bind(state)
            .bind(current_wave)
            .bind(wave_released_at)
            .bind(reason)
            .bind(finished_at)
            .bind(id)
            .bind(expected_state)
            .bind(expected_wave)
            .execute(&mut **tx)
            .await?;
            if result.rows_affected() == 0 {
                return Err(StoreError::Conflict(format!(
                    "rollout {id} is no longer {expected_state} at wave {expected_wave}; look at it again"
                )));
            }
        }
        FleetWrite::Confirm {
            rollout_id,
            agent_id,
            at,
        } => {
            sqlx::query(
                "UPDATE rollout_agents SET confirmed_at = $1 \
                 WHERE rollout_id = $2 AND agent_id = $3 AND confirmed_at IS NULL",
            )
            .bind(at)
            .bind(rollout_id)
            .bind(agent_id)
            .execute(&mut **tx)
            .await?;
        }
        FleetWrite::FleetSerial {
            managed_name,
            serial,
        } => {
            sqlx::query("UPDATE managed_certificates SET fleet_serial = $1 WHERE name = $2")
                .bind(serial)
                .bind(managed_name)
                .execute(&mut **tx)
                .await?;
        }
        FleetWrite::TrustAnchor(anchor) => {
            sqlx::query(
                "INSERT INTO trust_anchors (fingerprint, certificate_pem, subject, not_after, added_by, added_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (fingerprint) DO NOTHING",
            )
            .bind(&anchor.fingerprint)
            .bind(&anchor.certificate_pem)
            .bind(&anchor.subject)
            .bind(anchor.not_after)
            .bind(&anchor.added_by)
            .bind(anchor.added_at)
            .execute(&mut **tx)
            .await?;
        }
        FleetWrite::TrustAck { agent_id, sha256 } => {
            sqlx::query("UPDATE agents SET trust_sha256 = $1 WHERE id = $2")
                .bind(sha256)
                .bind(agent_id)
                .execute(&mut **tx)
                .await?;
        }
        FleetWrite::Compromise {
            managed_name,
            at_ms,
        } => {
            let result = sqlx::query(
                "UPDATE managed_certificates SET next_action_at = $1, next_action_reason = $2, \
                   key_sealed = NULL, fleet_serial = NULL, compromised_at = $4, updated_at = $1 \
                 WHERE name = $3",
            )
            .bind(now_s)
            .bind(COMPROMISE_REASON)
            .bind(managed_name)
            .bind(at_ms)
            .execute(&mut **tx)
            .await?;
            if result.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!(
                    "managed certificate {managed_name:?}"
                )));
            }
            sqlx::query("DELETE FROM agent_payloads WHERE managed_name = $1")
                .bind(managed_name)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

impl Store {
    /// The bootstrap token with this id.
    pub async fn bootstrap_token(&self, id: &str) -> Result<Option<BootstrapToken>, StoreError> {
        let row = sqlx::query(
            "SELECT id, secret_sha256, tenant, created_by, created_at, expires_at, used_at, used_by \
             FROM agent_bootstrap_tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(BootstrapToken {
                id: row.try_get("id")?,
                secret_sha256: row.try_get("secret_sha256")?,
                tenant: row.try_get("tenant")?,
                created_by: row.try_get("created_by")?,
                created_at: row.try_get("created_at")?,
                expires_at: row.try_get("expires_at")?,
                used_at: row.try_get("used_at")?,
                used_by: row.try_get("used_by")?,
            })
        })
        .transpose()
    }

    /// The agent with this id.
    pub async fn agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {AGENT_SELECT} FROM agents WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode_agent).transpose()
    }

    /// The active agent with this name (names are unique among active agents).
    pub async fn active_agent_named(&self, name: &str) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {AGENT_SELECT} FROM agents WHERE name = $1 AND status = 'active'"
        ))
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(decode_agent).transpose()
    }

    /// Every agent, by name.
    pub async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {AGENT_SELECT} FROM agents ORDER BY name, enrolled_at"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode_agent).collect()
    }

    /// What an agent reported about each of its bindings.
    pub async fn agent_bindings(&self, agent_id: &str) -> Result<Vec<AgentBinding>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {BINDING_COLUMNS} FROM agent_bindings WHERE agent_id = $1 ORDER BY managed_name"
        ))
        .bind(agent_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode_binding).collect()
    }

    /// The bindings of a managed certificate to active agents.
    pub async fn bindings_of(&self, managed_name: &str) -> Result<Vec<AgentBinding>, StoreError> {
        let rows = sqlx::query(
            "SELECT b.* FROM agent_bindings b JOIN agents a ON a.id = b.agent_id \
             WHERE b.managed_name = $1 AND a.status = 'active' ORDER BY a.name",
        )
        .bind(managed_name)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode_binding).collect()
    }

    /// What agents receive for a serial.
    pub async fn agent_payload(
        &self,
        managed_name: &str,
        serial: &str,
    ) -> Result<Option<AgentPayload>, StoreError> {
        let row = sqlx::query(
            "SELECT managed_name, serial, certificate_pem, chain_pem, key_sealed FROM agent_payloads \
             WHERE managed_name = $1 AND serial = $2",
        )
        .bind(managed_name)
        .bind(serial)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(AgentPayload {
                managed_name: row.try_get("managed_name")?,
                serial: row.try_get("serial")?,
                certificate_pem: row.try_get("certificate_pem")?,
                chain_pem: row.try_get("chain_pem")?,
                key_sealed: row.try_get("key_sealed")?,
            })
        })
        .transpose()
    }

    /// What agents outside a running rollout serve.
    pub async fn fleet_serial(&self, managed_name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT fleet_serial FROM managed_certificates WHERE name = $1")
            .bind(managed_name)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(row) => row.try_get("fleet_serial")?,
            None => None,
        })
    }

    /// The rollout with this id.
    pub async fn rollout(&self, id: i64) -> Result<Option<RolloutRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(decode_rollout).transpose()
    }

    /// Rollouts, newest first: of one managed certificate, or all; at most `limit`.
    pub async fn rollouts(
        &self,
        managed_name: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RolloutRecord>, StoreError> {
        let rows = match managed_name {
            Some(name) => {
                sqlx::query(&format!(
                    "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE managed_name = $1 ORDER BY id DESC LIMIT $2"
                ))
                .bind(name)
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {ROLLOUT_COLUMNS} FROM rollouts ORDER BY id DESC LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(decode_rollout).collect()
    }

    /// Rollouts the driver moves on (`running`).
    pub async fn running_rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE state = 'running' ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode_rollout).collect()
    }

    /// The newest rollout of a managed certificate, with `agent_id`'s place in it (if any).
    pub async fn latest_rollout_for(
        &self,
        managed_name: &str,
        agent_id: &str,
    ) -> Result<Option<(RolloutRecord, Option<RolloutAgent>)>, StoreError> {
        let Some(rollout) = self.rollouts(Some(managed_name), 1).await?.pop() else {
            return Ok(None);
        };
        let member = sqlx::query(
            "SELECT agent_id, wave, previous_serial, confirmed_at FROM rollout_agents \
             WHERE rollout_id = $1 AND agent_id = $2",
        )
        .bind(rollout.id)
        .bind(agent_id)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(decode_rollout_agent)
        .transpose()?;
        Ok(Some((rollout, member)))
    }

    /// CA certificates added to the agents' trust bundle, oldest first (unexpired only).
    pub async fn trust_anchors(&self, now: i64) -> Result<Vec<TrustAnchor>, StoreError> {
        let rows = sqlx::query(
            "SELECT fingerprint, certificate_pem, subject, not_after, added_by, added_at \
             FROM trust_anchors WHERE not_after > $1 ORDER BY added_at, fingerprint",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TrustAnchor {
                    fingerprint: row.try_get("fingerprint")?,
                    certificate_pem: row.try_get("certificate_pem")?,
                    subject: row.try_get("subject")?,
                    not_after: row.try_get("not_after")?,
                    added_by: row.try_get("added_by")?,
                    added_at: row.try_get("added_at")?,
                })
            })
            .collect()
    }

    /// The agents of a rollout.
    pub async fn rollout_agents(&self, rollout_id: i64) -> Result<Vec<RolloutAgent>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent_id, wave, previous_serial, confirmed_at FROM rollout_agents \
             WHERE rollout_id = $1 ORDER BY wave, agent_id",
        )
        .bind(rollout_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode_rollout_agent).collect()
    }
}
