//! Which users are online on the *other* nodes of a cluster (spec §11.1
//! across nodes; ARCHITECTURE.md "Cluster mode").
//!
//! Sans-IO like `confab_protocol::rules::TypingTracker`: `handle_*` in,
//! transitions out, `now` passed in. Each node announces deltas (a user's
//! first socket there opened, its last closed) and, every third of the TTL,
//! a full snapshot of its users in chunks. A node that announced nothing
//! for a TTL is presumed dead and its users are dropped, so a killed node's
//! users go offline within the TTL; a snapshot repairs any lost delta.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use confab_protocol::names::Username;

/// One node's last known users.
#[derive(Debug)]
struct NodeEntry {
    users: HashSet<Username>,
    /// Users named by the snapshot being received (generation, names).
    incoming: Option<(u64, HashSet<Username>)>,
    expires: Instant,
}

/// A user became online or offline on the other nodes taken together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// User.
    pub user: Username,
    /// Online on at least one other node now.
    pub online: bool,
}

/// The users of every other node, with per-node expiry.
#[derive(Debug)]
pub struct RemotePresence {
    ttl: Duration,
    nodes: HashMap<String, NodeEntry>,
    /// How many other nodes report each user.
    counts: HashMap<Username, usize>,
}

impl RemotePresence {
    /// A tracker whose nodes expire `ttl` after their last announcement.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            nodes: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    fn entry(&mut self, node: &str, now: Instant) -> &mut NodeEntry {
        let ttl = self.ttl;
        let entry = self
            .nodes
            .entry(node.to_owned())
            .or_insert_with(|| NodeEntry {
                users: HashSet::new(),
                incoming: None,
                expires: now + ttl,
            });
        entry.expires = now + ttl;
        entry
    }

    fn add(&mut self, user: Username, out: &mut Vec<Transition>) {
        let count = self.counts.entry(user.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            out.push(Transition { user, online: true });
        }
    }

    fn remove(&mut self, user: &Username, out: &mut Vec<Transition>) {
        if let Some(count) = self.counts.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(user);
                out.push(Transition {
                    user: user.clone(),
                    online: false,
                });
            }
        }
    }

    /// `node` says `user` is online (or offline) there.
    pub fn handle_delta(
        &mut self,
        node: &str,
        user: Username,
        online: bool,
        now: Instant,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        let entry = self.entry(node, now);
        let changed = if online {
            entry.users.insert(user.clone())
        } else {
            entry.users.remove(&user)
        };
        if let Some((_, incoming)) = entry.incoming.as_mut() {
            if online {
                incoming.insert(user.clone());
            } else {
                incoming.remove(&user);
            }
        }
        if changed {
            if online {
                self.add(user, &mut out);
            } else {
                self.remove(&user, &mut out);
            }
        }
        out
    }

    /// One chunk of `node`'s snapshot number `generation`; the chunk with
    /// `last` set ends it, and then exactly the users it named are the
    /// node's. A chunk of a newer generation abandons an unfinished older one.
    pub fn handle_snapshot(
        &mut self,
        node: &str,
        generation: u64,
        users: Vec<Username>,
        last: bool,
        now: Instant,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        let entry = self.entry(node, now);
        match entry.incoming.as_mut() {
            Some((g, incoming)) if *g == generation => incoming.extend(users.iter().cloned()),
            Some((g, _)) if *g > generation => return out, // a stale chunk
            _ => entry.incoming = Some((generation, users.iter().cloned().collect())),
        }
        // Users named are online now, even before the snapshot ends.
        let fresh: Vec<Username> = users
            .into_iter()
            .filter(|u| entry.users.insert(u.clone()))
            .collect();
        let gone: Vec<Username> = if last {
            let (_, named) = entry.incoming.take().unwrap_or_default();
            let gone = entry.users.difference(&named).cloned().collect();
            entry.users = named;
            gone
        } else {
            Vec::new()
        };
        for user in fresh {
            self.add(user, &mut out);
        }
        for user in &gone {
            self.remove(user, &mut out);
        }
        out
    }

    /// `node` left the cluster (a graceful stop, or expiry).
    pub fn handle_node_gone(&mut self, node: &str) -> Vec<Transition> {
        let mut out = Vec::new();
        if let Some(entry) = self.nodes.remove(node) {
            for user in &entry.users {
                self.remove(user, &mut out);
            }
        }
        out
    }

    /// Drops every node that announced nothing for a TTL.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Transition> {
        let expired: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(n, _)| n.clone())
            .collect();
        let mut out = Vec::new();
        for node in expired {
            tracing::warn!(%node, "cluster node silent for the presence TTL; its users go offline");
            out.extend(self.handle_node_gone(&node));
        }
        out
    }

    /// When the next node expires.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.nodes.values().map(|e| e.expires).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Username {
        Username::parse(name).expect("valid name")
    }

    fn t(name: &str, online: bool) -> Transition {
        Transition {
            user: user(name),
            online,
        }
    }

    #[test]
    fn a_user_on_two_nodes_stays_online_until_both_say_offline() {
        let now = Instant::now();
        let mut p = RemotePresence::new(Duration::from_secs(10));
        assert_eq!(
            p.handle_delta("a", user("ann"), true, now),
            [t("ann", true)]
        );
        assert_eq!(p.handle_delta("b", user("ann"), true, now), []);
        assert_eq!(p.handle_delta("a", user("ann"), false, now), []);
        assert_eq!(
            p.handle_delta("b", user("ann"), false, now),
            [t("ann", false)]
        );
        // A repeated delta changes nothing.
        assert_eq!(p.handle_delta("b", user("ann"), false, now), []);
    }

    #[test]
    fn a_silent_node_expires_with_its_users() {
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut p = RemotePresence::new(ttl);
        p.handle_delta("a", user("ann"), true, now);
        p.handle_delta("b", user("bob"), true, now + Duration::from_secs(5));
        assert_eq!(p.poll_timeout(), Some(now + ttl));
        assert_eq!(p.handle_timeout(now + ttl - Duration::from_millis(1)), []);
        assert_eq!(p.handle_timeout(now + ttl), [t("ann", false)]);
        assert_eq!(p.poll_timeout(), Some(now + Duration::from_secs(15)));
    }

    #[test]
    fn a_finished_snapshot_replaces_the_nodes_users() {
        let now = Instant::now();
        let mut p = RemotePresence::new(Duration::from_secs(10));
        p.handle_delta("a", user("ann"), true, now);
        p.handle_delta("a", user("bob"), true, now);
        // A lost delta: carl is online on a, bob is not any more.
        assert_eq!(p.handle_snapshot("a", 1, vec![user("ann")], false, now), []);
        assert_eq!(
            p.handle_snapshot("a", 1, vec![user("carl")], true, now),
            [t("carl", true), t("bob", false)]
        );
        // A chunk of an older generation is ignored once a newer one started.
        p.handle_snapshot("a", 3, vec![user("ann")], false, now);
        assert_eq!(p.handle_snapshot("a", 2, vec![user("dan")], true, now), []);
    }

    #[test]
    fn a_delta_during_a_snapshot_is_kept_by_it() {
        let now = Instant::now();
        let mut p = RemotePresence::new(Duration::from_secs(10));
        p.handle_snapshot("a", 1, vec![user("ann")], false, now);
        p.handle_delta("a", user("bob"), true, now);
        assert_eq!(p.handle_snapshot("a", 1, vec![], true, now), []);
        assert_eq!(p.handle_node_gone("a").len(), 2);
    }
}
