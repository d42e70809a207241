//! `AlertBook`: the alerts firing now and the last N resolved, for `trace-agent alerts` and
//! `top`; bounded so a flapping rule cannot grow it.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::alert::{Alert, AlertEvent, AlertEventKind};

/// Firing alerts and a bounded history of resolved ones.
#[derive(Debug, Clone)]
pub struct AlertBook {
    firing: BTreeMap<(String, BTreeMap<String, String>), Alert>,
    resolved: VecDeque<Alert>,
    keep_resolved: usize,
}

/// What the book holds, for the API and the CLI.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertList {
    /// Firing now, by rule then labels.
    pub firing: Vec<Alert>,
    /// Recently resolved, newest first.
    pub resolved: Vec<Alert>,
}

impl AlertBook {
    /// A book keeping the last `keep_resolved` resolved alerts.
    pub fn new(keep_resolved: usize) -> Self {
        AlertBook {
            firing: BTreeMap::new(),
            resolved: VecDeque::new(),
            keep_resolved,
        }
    }

    /// Takes in the engine's notifications.
    pub fn apply(&mut self, events: &[AlertEvent]) {
        for event in events {
            let a = &event.alert;
            let key = (a.rule.clone(), a.labels.clone());
            match event.kind {
                AlertEventKind::Firing | AlertEventKind::Renotify => {
                    self.firing.insert(key, a.clone());
                }
                AlertEventKind::Resolved => {
                    self.firing.remove(&key);
                    self.resolved.push_front(a.clone());
                    self.resolved.truncate(self.keep_resolved);
                }
            }
        }
    }

    /// Alerts firing now.
    pub fn firing(&self) -> Vec<Alert> {
        self.firing.values().cloned().collect()
    }

    /// Firing and recently resolved alerts.
    pub fn list(&self) -> AlertList {
        AlertList {
            firing: self.firing(),
            resolved: self.resolved.iter().cloned().collect(),
        }
    }
}
