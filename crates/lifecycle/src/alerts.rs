//! Built-in alerting rules without I/O: silences, grouping and deduplication. The server
//! evaluates its rules into [`Alert`]s every interval and hands them to a [`Notifier`], which
//! decides what to send: a group is notified when it gains an alert nobody was told about (or
//! its repeat interval runs out), once more when every alert in it stopped firing, and never
//! for an alert a silence covers. An alert silenced after it was notified is forgotten
//! quietly, so the end of the silence notifies it again.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Wake someone up.
    Page,
    /// Open a ticket.
    Ticket,
}

impl Severity {
    /// Stored and label name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

/// One firing alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Rule name, such as `CertificateExpiringUnrenewed`.
    pub rule: String,
    /// What it is about (a managed certificate's name, a CA, a rollout id): with the rule,
    /// the alert's identity.
    pub subject: String,
    /// Severity.
    pub severity: Severity,
    /// Labels for grouping and silences (`owner`, `service`, `tenant`, ...). `rule`,
    /// `subject` and `severity` match as labels too.
    pub labels: BTreeMap<String, String>,
    /// One line for a human.
    pub summary: String,
    /// Since when the condition holds, Unix seconds.
    pub since: i64,
}

impl Alert {
    /// The alert's identity: rule and subject.
    pub fn fingerprint(&self) -> String {
        format!("{}/{}", self.rule, self.subject)
    }

    /// A label's value; `rule`, `subject` and `severity` included.
    pub fn label(&self, name: &str) -> Option<&str> {
        match name {
            "rule" => Some(&self.rule),
            "subject" => Some(&self.subject),
            "severity" => Some(self.severity.as_str()),
            _ => self.labels.get(name).map(String::as_str),
        }
    }
}

/// A silence: alerts whose labels equal every matcher are held back in `[starts_at, ends_at)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// Id.
    pub id: String,
    /// Label name to the value it must have.
    pub matchers: BTreeMap<String, String>,
    /// Start, Unix seconds.
    pub starts_at: i64,
    /// End, Unix seconds (exclusive).
    pub ends_at: i64,
}

impl Silence {
    /// Whether this silence holds `alert` back at `now`. A silence without matchers matches
    /// nothing (a maintenance window must say what it covers).
    pub fn covers(&self, alert: &Alert, now: i64) -> bool {
        !self.matchers.is_empty()
            && self.starts_at <= now
            && now < self.ends_at
            && self
                .matchers
                .iter()
                .all(|(name, value)| alert.label(name) == Some(value.as_str()))
    }
}

/// The id of the first silence covering `alert` at `now`.
pub fn silenced_by<'a>(alert: &Alert, silences: &'a [Silence], now: i64) -> Option<&'a str> {
    silences
        .iter()
        .find(|s| s.covers(alert, now))
        .map(|s| s.id.as_str())
}

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationStatus {
    /// Alerts in the group fire.
    Firing,
    /// Every alert notified earlier stopped firing.
    Resolved,
}

/// What to send for one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable key of the group: severity and the grouping labels' values.
    pub group_key: String,
    /// The grouping labels and their values (a missing label is empty).
    pub group_labels: BTreeMap<String, String>,
    /// Severity shared by the group.
    pub severity: Severity,
    /// Firing or resolved.
    pub status: NotificationStatus,
    /// Firing: every unsilenced alert of the group. Resolved: those that stopped.
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct GroupState {
    notified: BTreeMap<String, Alert>,
    /// Notified alerts that stopped firing while others went on: sent with the group's
    /// resolved notification.
    stopped: BTreeMap<String, Alert>,
    last_sent: Option<i64>,
    /// When a group not yet notified first had an alert (for `group_wait`).
    pending_since: Option<i64>,
}

/// What a [`Notifier`] remembers of each group (what it was told, and since when), to keep
/// across restarts so that a restarted server does not notify the same groups again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifierMemory {
    groups: BTreeMap<String, GroupState>,
}

/// Groups alerts and remembers what each group was told.
#[derive(Debug, Clone)]
pub struct Notifier {
    group_by: Vec<String>,
    group_wait: i64,
    repeat_interval: i64,
    memory: NotifierMemory,
}

impl Notifier {
    /// Groups by severity and the `group_by` labels; a new group is first notified once it
    /// has fired for `group_wait` seconds (so alerts that start together arrive together);
    /// a still-firing group is notified again after `repeat_interval` seconds.
    pub fn new(group_by: Vec<String>, group_wait: i64, repeat_interval: i64) -> Notifier {
        Notifier {
            group_by,
            group_wait: group_wait.max(0),
            repeat_interval: repeat_interval.max(1),
            memory: NotifierMemory::default(),
        }
    }

    /// What it remembers now.
    pub fn memory(&self) -> &NotifierMemory {
        &self.memory
    }

    /// Takes up what an earlier notifier remembered (replacing what this one does).
    pub fn restore(&mut self, memory: NotifierMemory) {
        self.memory = memory;
    }

    fn group_of(&self, alert: &Alert) -> (String, BTreeMap<String, String>) {
        let labels: BTreeMap<String, String> = self
            .group_by
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    alert.label(name).unwrap_or_default().to_string(),
                )
            })
            .collect();
        let mut key = alert.severity.as_str().to_string();
        for (name, value) in &labels {
            key.push_str(&format!("|{name}={value}"));
        }
        (key, labels)
    }

    /// The notifications due at `now` for the alerts firing now.
    pub fn evaluate(
        &mut self,
        firing: &[Alert],
        silences: &[Silence],
        now: i64,
    ) -> Vec<Notification> {
        // Every group that fires now or was told something before.
        type Labels = BTreeMap<String, String>;
        let mut current: BTreeMap<String, (Labels, Severity, Vec<&Alert>)> = BTreeMap::new();
        for alert in firing {
            let (key, labels) = self.group_of(alert);
            current
                .entry(key)
                .or_insert_with(|| (labels, alert.severity, Vec::new()))
                .2
                .push(alert);
        }
        let keys: BTreeSet<String> = current
            .keys()
            .chain(self.memory.groups.keys())
            .cloned()
            .collect();
        let mut out = Vec::new();
        for key in keys {
            let (labels, severity, alerts) = match current.remove(&key) {
                Some(group) => group,
                None => {
                    let Some(state) = self.memory.groups.get(&key) else {
                        continue;
                    };
                    let Some(first) = state.notified.values().chain(state.stopped.values()).next()
                    else {
                        self.memory.groups.remove(&key);
                        continue;
                    };
                    let (_, labels) = self.group_of(first);
                    (labels, first.severity, Vec::new())
                }
            };
            let firing_ids: BTreeSet<String> = alerts.iter().map(|a| a.fingerprint()).collect();
            let active: Vec<&Alert> = alerts
                .iter()
                .copied()
                .filter(|a| silenced_by(a, silences, now).is_none())
                .collect();
            let state = self.memory.groups.entry(key.clone()).or_default();
            for (id, alert) in &state.notified {
                if !firing_ids.contains(id) {
                    state.stopped.insert(id.clone(), alert.clone());
                }
            }
            // One that fires again is no longer stopped.
            state.stopped.retain(|id, _| !firing_ids.contains(id));
            // Silenced or stopped alerts leave the notified set; only stopped ones resolve.
            let active_ids: BTreeSet<String> = active.iter().map(|a| a.fingerprint()).collect();
            state.notified.retain(|id, _| active_ids.contains(id));
            if active.is_empty() {
                state.pending_since = None;
            } else if state.last_sent.is_none() {
                let since = *state.pending_since.get_or_insert(now);
                if now - since < self.group_wait {
                    continue;
                }
            }
            let is_new = active
                .iter()
                .any(|a| !state.notified.contains_key(&a.fingerprint()));
            let repeat_due = !active.is_empty()
                && state
                    .last_sent
                    .is_some_and(|last| now - last >= self.repeat_interval);
            if is_new || repeat_due {
                state.notified = active
                    .iter()
                    .map(|a| (a.fingerprint(), (*a).clone()))
                    .collect();
                state.last_sent = Some(now);
                out.push(Notification {
                    group_key: key.clone(),
                    group_labels: labels,
                    severity,
                    status: NotificationStatus::Firing,
                    alerts: active.into_iter().cloned().collect(),
                });
            } else if alerts.is_empty() && !state.stopped.is_empty() {
                out.push(Notification {
                    group_key: key.clone(),
                    group_labels: labels,
                    severity,
                    status: NotificationStatus::Resolved,
                    alerts: std::mem::take(&mut state.stopped).into_values().collect(),
                });
            }
            if alerts.is_empty()
                && self
                    .memory
                    .groups
                    .get(&key)
                    .is_some_and(|s| s.notified.is_empty() && s.stopped.is_empty())
            {
                self.memory.groups.remove(&key);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(rule: &str, subject: &str, owner: &str) -> Alert {
        Alert {
            rule: rule.into(),
            subject: subject.into(),
            severity: Severity::Page,
            labels: BTreeMap::from([("owner".to_string(), owner.to_string())]),
            summary: format!("{subject} is in trouble"),
            since: 0,
        }
    }

    fn silence(owner: &str, starts_at: i64, ends_at: i64) -> Silence {
        Silence {
            id: "s1".into(),
            matchers: BTreeMap::from([("owner".to_string(), owner.to_string())]),
            starts_at,
            ends_at,
        }
    }

    #[test]
    fn a_restored_notifier_remembers_what_was_sent_and_what_to_resolve() {
        let mut first = Notifier::new(vec!["owner".into()], 0, 3600);
        let firing = [alert("Expiring", "a", "web"), alert("Expiring", "b", "web")];
        assert_eq!(first.evaluate(&firing, &[], 0).len(), 1);
        // Only "a" goes on: "b" stopped, to be listed when the group resolves.
        assert!(first.evaluate(&firing[..1], &[], 10).is_empty());
        let kept = serde_json::to_string(&first.memory()).unwrap();

        let mut second = Notifier::new(vec!["owner".into()], 0, 3600);
        second.restore(serde_json::from_str(&kept).unwrap());
        assert_eq!(second.memory(), first.memory());
        // Nothing new is sent for what the first one sent, until the repeat interval.
        assert!(second.evaluate(&firing[..1], &[], 20).is_empty());
        assert_eq!(second.evaluate(&firing[..1], &[], 3600).len(), 1);
        // The resolution lists both alerts that stopped.
        let resolved = second.evaluate(&[], &[], 3610);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, NotificationStatus::Resolved);
        assert_eq!(resolved[0].alerts.len(), 2);
        // A fresh notifier, by contrast, would notify at once.
        let mut fresh = Notifier::new(vec!["owner".into()], 0, 3600);
        assert_eq!(fresh.evaluate(&firing[..1], &[], 20).len(), 1);
    }

    #[test]
    fn one_notification_per_group_then_quiet_until_repeat() {
        let mut notifier = Notifier::new(vec!["owner".into()], 0, 3600);
        let firing = [
            alert("Expiring", "a", "web"),
            alert("Expiring", "b", "web"),
            alert("Expiring", "c", "db"),
        ];
        let sent = notifier.evaluate(&firing, &[], 0);
        assert_eq!(sent.len(), 2);
        let web = sent
            .iter()
            .find(|n| n.group_labels["owner"] == "web")
            .unwrap();
        assert_eq!(web.alerts.len(), 2);
        assert_eq!(web.status, NotificationStatus::Firing);
        for now in [30, 60, 3599] {
            assert!(notifier.evaluate(&firing, &[], now).is_empty(), "at {now}");
        }
        assert_eq!(notifier.evaluate(&firing, &[], 3600).len(), 2);
    }

    #[test]
    fn a_new_alert_renotifies_its_group_only() {
        let mut notifier = Notifier::new(vec!["owner".into()], 0, 3600);
        notifier.evaluate(&[alert("Expiring", "a", "web")], &[], 0);
        let sent = notifier.evaluate(
            &[alert("Expiring", "a", "web"), alert("Expiring", "b", "web")],
            &[],
            10,
        );
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].alerts.len(), 2);
    }

    #[test]
    fn silence_suppresses_and_its_end_brings_the_alert_back() {
        let mut notifier = Notifier::new(vec!["owner".into()], 0, 3600);
        let firing = [alert("Expiring", "a", "web")];
        let silences = [silence("web", 0, 100)];
        for now in [0, 50, 99] {
            assert!(notifier.evaluate(&firing, &silences, now).is_empty());
        }
        let sent = notifier.evaluate(&firing, &silences, 100);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].status, NotificationStatus::Firing);
        // Silenced after notification: quiet, no "resolved", and notified again at the end.
        let later = [silence("web", 150, 200)];
        assert!(notifier.evaluate(&firing, &later, 150).is_empty());
        assert_eq!(notifier.evaluate(&firing, &later, 200).len(), 1);
        // Another owner's silence does not cover it.
        let mut other = Notifier::new(vec!["owner".into()], 0, 3600);
        assert_eq!(
            other.evaluate(&firing, &[silence("db", 0, 100)], 0).len(),
            1
        );
    }

    #[test]
    fn a_new_group_waits_so_alerts_starting_together_arrive_together() {
        let mut notifier = Notifier::new(vec!["owner".into()], 5, 3600);
        assert!(
            notifier
                .evaluate(&[alert("Expiring", "a", "web")], &[], 0)
                .is_empty()
        );
        let both = [alert("Expiring", "a", "web"), alert("Expiring", "b", "web")];
        assert!(notifier.evaluate(&both, &[], 4).is_empty());
        let sent = notifier.evaluate(&both, &[], 5);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].alerts.len(), 2);
        assert!(notifier.evaluate(&both, &[], 6).is_empty());
    }

    #[test]
    fn every_alert_that_stopped_is_in_the_group_resolution() {
        let mut notifier = Notifier::new(vec!["owner".into()], 0, 3600);
        let a = alert("Expiring", "a", "web");
        let b = alert("Expiring", "b", "web");
        notifier.evaluate(&[a.clone(), b.clone()], &[], 0);
        // a stops while b fires: nothing yet.
        assert!(
            notifier
                .evaluate(std::slice::from_ref(&b), &[], 10)
                .is_empty()
        );
        let sent = notifier.evaluate(&[], &[], 20);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].status, NotificationStatus::Resolved);
        let subjects: Vec<&str> = sent[0].alerts.iter().map(|a| a.subject.as_str()).collect();
        assert_eq!(subjects, ["a", "b"]);
        // A silenced alert that ends quietly is not "resolved".
        let mut quiet = Notifier::new(vec!["owner".into()], 0, 3600);
        quiet.evaluate(std::slice::from_ref(&a), &[], 0);
        let silences = [silence("web", 5, 100)];
        assert!(
            quiet
                .evaluate(std::slice::from_ref(&a), &silences, 5)
                .is_empty()
        );
        assert!(quiet.evaluate(&[], &silences, 10).is_empty());
    }

    #[test]
    fn stopped_alerts_resolve_once() {
        let mut notifier = Notifier::new(vec!["owner".into()], 0, 3600);
        notifier.evaluate(&[alert("Expiring", "a", "web")], &[], 0);
        let sent = notifier.evaluate(&[], &[], 10);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].status, NotificationStatus::Resolved);
        assert_eq!(sent[0].alerts[0].subject, "a");
        assert!(notifier.evaluate(&[], &[], 20).is_empty());
    }

    #[test]
    fn an_empty_silence_matches_nothing_and_labels_include_the_rule() {
        let a = alert("Expiring", "a", "web");
        let empty = Silence {
            id: "x".into(),
            matchers: BTreeMap::new(),
            starts_at: 0,
            ends_at: 10,
        };
        assert!(!empty.covers(&a, 5));
        let by_rule = Silence {
            matchers: BTreeMap::from([("rule".to_string(), "Expiring".to_string())]),
            ..empty
        };
        assert!(by_rule.covers(&a, 5));
        assert!(!by_rule.covers(&a, 10));
    }
}
