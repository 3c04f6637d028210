//! Events the backend has not acknowledged yet. An event sent with an `id` is kept until the
//! backend's `event_ack` for that id and sent again after every welcome, as the protocol asks
//! of an Add-On (`docs/addon-protocol.md` §5): the backend stores each event once, so a resend
//! is harmless and a lost one is not. Events without an `id` are sent once.

use serde_json::Value;

/// The unacknowledged events, oldest first. Lives in [`crate::Sim`], so it outlasts a
/// connection when the same `Sim` serves the next one.
#[derive(Debug, Default)]
pub struct Outbox {
    pending: Vec<(String, String)>,
}

impl Outbox {
    /// Takes an `event` frame to send now and returns its text; keeps it until acknowledged
    /// when it has an `id` (a repeated id replaces the pending event, never doubles it).
    pub fn post(&mut self, event: &Value) -> String {
        let text = event.to_string();
        if let Some(id) = event["id"].as_str() {
            self.keep(id, &text);
        }
        text
    }

    /// Keeps `event` (with an `id`) for the next [`Outbox::pending`], without sending it now.
    pub fn hold(&mut self, event: &Value) {
        if let Some(id) = event["id"].as_str() {
            self.keep(id, &event.to_string());
        }
    }

    fn keep(&mut self, id: &str, text: &str) {
        match self.pending.iter_mut().find(|(pending, _)| pending == id) {
            Some(entry) => text.clone_into(&mut entry.1),
            None => self.pending.push((id.to_owned(), text.to_owned())),
        }
    }

    /// The backend stored the event with this id.
    pub fn acked(&mut self, id: &str) {
        self.pending.retain(|(pending, _)| pending != id);
    }

    /// Every unacknowledged event, oldest first, to send (again) after a welcome.
    pub fn pending(&self) -> Vec<String> {
        self.pending.iter().map(|(_, text)| text.clone()).collect()
    }

    /// How many events await their acknowledgement.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn kept_until_acknowledged_and_never_doubled() {
        let mut outbox = Outbox::default();
        let first = json!({"type": "event", "id": "ev-1", "kind": "execution", "data": {}});
        let snapshot = json!({"type": "event", "kind": "account_snapshot", "data": {}});
        assert_eq!(outbox.post(&first), first.to_string());
        assert_eq!(outbox.post(&snapshot), snapshot.to_string());
        outbox.hold(&json!({"type": "event", "id": "ev-2", "kind": "copier_action"}));
        outbox.post(&first);
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox.pending()[0], first.to_string());
        outbox.acked("ev-1");
        outbox.acked("ev-unknown");
        assert_eq!(outbox.len(), 1);
        outbox.acked("ev-2");
        assert!(outbox.is_empty());
    }
}
