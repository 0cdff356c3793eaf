//! Fleet rollouts: a new certificate reaches the agents bound to a managed certificate in
//! waves (a canary first), each wave released only when the previous one confirmed; a failure
//! halts the rollout and the failing wave goes back to the previous certificate.
//!
//! Everything here is pure: the server's rollout driver feeds in what the agents reported and
//! applies the [`RolloutStep`] it gets back.

use serde::{Deserialize, Serialize};

use crate::LifecycleError;

/// How a managed certificate's new certificates roll out to its agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutPolicy {
    /// Agents in the canary wave: a count such as "1" or a share such as "10%" (default "1").
    #[serde(default = "default_canary")]
    pub canary: String,
    /// Agents in each later wave: a count or a share of all agents (default "50%").
    #[serde(default = "default_wave")]
    pub wave: String,
    /// Seconds to wait after a wave confirmed before releasing the next (default 0).
    #[serde(default)]
    pub bake_seconds: u64,
    /// Seconds a wave may take to confirm before the rollout halts (default 300).
    #[serde(default = "default_health_timeout")]
    pub health_timeout_seconds: u64,
}

fn default_canary() -> String {
    "1".into()
}

fn default_wave() -> String {
    "50%".into()
}

fn default_health_timeout() -> u64 {
    300
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            canary: default_canary(),
            wave: default_wave(),
            bake_seconds: 0,
            health_timeout_seconds: default_health_timeout(),
        }
    }
}

/// A number of agents: a count, or a percentage of the agents bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    /// This many agents.
    Count(u32),
    /// This share (1-100) of the agents, rounded up.
    Percent(u32),
}

impl Amount {
    /// Reads "3" or "25%".
    pub fn parse(text: &str) -> Result<Amount, LifecycleError> {
        let bad = || {
            LifecycleError::InvalidRollout(format!(
                "{text:?} is not an amount of agents; write a count such as \"2\" or a share such as \"25%\""
            ))
        };
        match text.trim().strip_suffix('%') {
            Some(share) => match share.trim().parse::<u32>() {
                Ok(p) if (1..=100).contains(&p) => Ok(Amount::Percent(p)),
                _ => Err(bad()),
            },
            None => match text.trim().parse::<u32>() {
                Ok(n) if n >= 1 => Ok(Amount::Count(n)),
                _ => Err(bad()),
            },
        }
    }

    /// How many of `total` agents this amount is: at least 1, at most `total`.
    pub fn of(self, total: usize) -> usize {
        let wanted = match self {
            Amount::Count(n) => n as usize,
            Amount::Percent(p) => (total * p as usize).div_ceil(100),
        };
        wanted.clamp(1, total.max(1))
    }
}

impl RolloutPolicy {
    /// Checks the amounts and times.
    pub fn validate(&self) -> Result<(), LifecycleError> {
        Amount::parse(&self.canary)?;
        Amount::parse(&self.wave)?;
        if self.health_timeout_seconds == 0 {
            return Err(LifecycleError::InvalidRollout(
                "health_timeout_seconds must be above zero".into(),
            ));
        }
        Ok(())
    }

    /// The wave of each of `agents` agents (in the order given): wave 0 is the canary, later
    /// waves follow. An urgent rollout (compromise response) puts every agent in wave 0.
    pub fn waves(&self, agents: usize, urgent: bool) -> Vec<u32> {
        if urgent || agents == 0 {
            return vec![0; agents];
        }
        let canary = Amount::parse(&self.canary)
            .unwrap_or(Amount::Count(1))
            .of(agents);
        let wave = Amount::parse(&self.wave)
            .unwrap_or(Amount::Percent(50))
            .of(agents);
        (0..agents)
            .map(|i| {
                if i < canary {
                    0
                } else {
                    1 + ((i - canary) / wave) as u32
                }
            })
            .collect()
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Waves are being released.
    Running,
    /// Stopped by an operator; released waves keep the new certificate.
    Paused,
    /// Stopped by a failure or a timeout; the failing wave went back to the previous certificate.
    Halted,
    /// Stopped by an operator; every agent goes back to the previous certificate.
    Aborted,
    /// Every agent confirmed the new certificate.
    Completed,
}

impl RolloutState {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Halted => "halted",
            RolloutState::Aborted => "aborted",
            RolloutState::Completed => "completed",
        }
    }

    /// Reads a stored name.
    pub fn parse(text: &str) -> Option<RolloutState> {
        Some(match text {
            "running" => RolloutState::Running,
            "paused" => RolloutState::Paused,
            "halted" => RolloutState::Halted,
            "aborted" => RolloutState::Aborted,
            "completed" => RolloutState::Completed,
            _ => return None,
        })
    }

    /// Whether the rollout may still change what agents serve on its own.
    pub fn is_active(self) -> bool {
        matches!(self, RolloutState::Running | RolloutState::Paused)
    }
}

/// The serial an agent of a rollout should serve: `Some(new)` or the previous one (`None`
/// when there was none, meaning "leave what is there").
pub fn desired_serial<'a>(
    state: RolloutState,
    agent_wave: u32,
    current_wave: u32,
    new: &'a str,
    previous: Option<&'a str>,
) -> Option<&'a str> {
    let released = match state {
        RolloutState::Completed => true,
        RolloutState::Running | RolloutState::Paused => agent_wave <= current_wave,
        // The failing wave goes back; the waves before it had confirmed and keep the new one.
        RolloutState::Halted => agent_wave < current_wave,
        RolloutState::Aborted => false,
    };
    if released { Some(new) } else { previous }
}

/// What one agent of the current wave has reported for the rollout's new serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentProgress {
    /// Not deployed yet.
    Waiting,
    /// Serving it (deployed, reloaded and probed), since this time (Unix seconds).
    Confirmed {
        /// When the agent reported it.
        at: i64,
    },
    /// Tried and failed; the agent restored what it served before.
    Failed {
        /// What went wrong, as the agent reported it.
        error: String,
    },
}

/// What the driver does next with a running rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutStep {
    /// Nothing yet.
    Wait,
    /// Release this wave.
    Release(u32),
    /// Every wave confirmed.
    Complete,
    /// Stop: the current wave goes back to the previous certificate.
    Halt(String),
}

/// The next step of a running rollout whose `current_wave` was released at `released_at`.
/// `current` holds (agent name, progress) for the agents of the current wave; `last_wave` is
/// the highest wave number. An urgent rollout never halts: it waits for every agent.
pub fn next_step(
    policy: &RolloutPolicy,
    urgent: bool,
    current_wave: u32,
    last_wave: u32,
    released_at: i64,
    current: &[(String, AgentProgress)],
    now: i64,
) -> RolloutStep {
    let failed: Vec<String> = current
        .iter()
        .filter_map(|(agent, p)| match p {
            AgentProgress::Failed { error } => Some(format!("{agent}: {error}")),
            _ => None,
        })
        .collect();
    if !failed.is_empty() && !urgent {
        let wave = if current_wave == 0 {
            "the canary".to_string()
        } else {
            format!("wave {current_wave}")
        };
        return RolloutStep::Halt(format!("{wave} failed: {}", failed.join("; ")));
    }
    let confirmed_at: Vec<i64> = current
        .iter()
        .filter_map(|(_, p)| match p {
            AgentProgress::Confirmed { at } => Some(*at),
            _ => None,
        })
        .collect();
    if confirmed_at.len() == current.len() {
        if current_wave >= last_wave {
            return RolloutStep::Complete;
        }
        let settled = confirmed_at.iter().copied().max().unwrap_or(released_at);
        if now >= settled.saturating_add(policy.bake_seconds as i64) {
            return RolloutStep::Release(current_wave + 1);
        }
        return RolloutStep::Wait;
    }
    if !urgent && now > released_at.saturating_add(policy.health_timeout_seconds as i64) {
        let silent: Vec<&str> = current
            .iter()
            .filter(|(_, p)| *p == AgentProgress::Waiting)
            .map(|(a, _)| a.as_str())
            .collect();
        return RolloutStep::Halt(format!(
            "{} did not confirm within {} s",
            silent.join(", "),
            policy.health_timeout_seconds
        ));
    }
    RolloutStep::Wait
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(canary: &str, wave: &str) -> RolloutPolicy {
        RolloutPolicy {
            canary: canary.into(),
            wave: wave.into(),
            ..RolloutPolicy::default()
        }
    }

    #[test]
    fn amounts_parse_counts_and_shares() {
        assert_eq!(Amount::parse("3").unwrap(), Amount::Count(3));
        assert_eq!(Amount::parse("25%").unwrap(), Amount::Percent(25));
        for bad in ["0", "0%", "101%", "-1", "x", ""] {
            assert!(Amount::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Amount::Percent(10).of(5), 1);
        assert_eq!(Amount::Percent(50).of(5), 3);
        assert_eq!(Amount::Count(9).of(5), 5);
    }

    #[test]
    fn waves_start_with_the_canary_and_cover_everyone() {
        assert_eq!(policy("1", "2").waves(5, false), vec![0, 1, 1, 2, 2]);
        assert_eq!(policy("40%", "100%").waves(5, false), vec![0, 0, 1, 1, 1]);
        assert_eq!(policy("1", "1").waves(3, true), vec![0, 0, 0]);
        assert!(policy("1", "1").waves(0, false).is_empty());
    }

    #[test]
    fn waves_are_ordered_and_bounded_for_any_fleet() {
        for agents in 0..60 {
            for canary in ["1", "3", "10%", "50%"] {
                for wave in ["1", "4", "25%", "100%"] {
                    let waves = policy(canary, wave).waves(agents, false);
                    assert_eq!(waves.len(), agents);
                    assert!(waves.windows(2).all(|w| w[0] <= w[1]));
                    if agents > 0 {
                        assert_eq!(waves[0], 0);
                        let last = *waves.last().unwrap();
                        // No wave is empty.
                        for w in 0..=last {
                            assert!(waves.contains(&w));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_halt_sends_only_the_failing_wave_back() {
        let d = |state, wave| desired_serial(state, wave, 1, "new", Some("old"));
        assert_eq!(d(RolloutState::Running, 0), Some("new"));
        assert_eq!(d(RolloutState::Running, 2), Some("old"));
        assert_eq!(d(RolloutState::Halted, 0), Some("new"));
        assert_eq!(d(RolloutState::Halted, 1), Some("old"));
        assert_eq!(d(RolloutState::Aborted, 0), Some("old"));
        assert_eq!(d(RolloutState::Completed, 5), Some("new"));
        assert_eq!(
            desired_serial(RolloutState::Halted, 0, 0, "new", None),
            None
        );
    }

    #[test]
    fn a_failed_canary_halts_and_a_confirmed_wave_releases_the_next() {
        let p = policy("1", "1");
        let failed = vec![(
            "a".to_string(),
            AgentProgress::Failed {
                error: "reload failed".into(),
            },
        )];
        match next_step(&p, false, 0, 3, 100, &failed, 101) {
            RolloutStep::Halt(reason) => assert!(reason.contains("the canary failed")),
            other => panic!("{other:?}"),
        }
        // Urgent rollouts keep waiting instead.
        assert_eq!(
            next_step(&p, true, 0, 0, 100, &failed, 101),
            RolloutStep::Wait
        );
        let confirmed = vec![("a".to_string(), AgentProgress::Confirmed { at: 101 })];
        assert_eq!(
            next_step(&p, false, 0, 3, 100, &confirmed, 101),
            RolloutStep::Release(1)
        );
        assert_eq!(
            next_step(&p, false, 3, 3, 100, &confirmed, 101),
            RolloutStep::Complete
        );
        let baking = RolloutPolicy {
            bake_seconds: 5,
            ..p.clone()
        };
        assert_eq!(
            next_step(&baking, false, 0, 3, 100, &confirmed, 104),
            RolloutStep::Wait
        );
        assert_eq!(
            next_step(&baking, false, 0, 3, 100, &confirmed, 106),
            RolloutStep::Release(1)
        );
    }

    #[test]
    fn a_silent_wave_halts_after_the_health_timeout() {
        let p = RolloutPolicy {
            health_timeout_seconds: 10,
            ..policy("1", "1")
        };
        let waiting = vec![("b".to_string(), AgentProgress::Waiting)];
        assert_eq!(
            next_step(&p, false, 1, 2, 100, &waiting, 110),
            RolloutStep::Wait
        );
        match next_step(&p, false, 1, 2, 100, &waiting, 111) {
            RolloutStep::Halt(reason) => assert!(reason.contains("b did not confirm")),
            other => panic!("{other:?}"),
        }
    }
}
