//! Which connections may open: at most `server.max_connections`, and at most
//! `server.max_connections_per_ip` from one client address, so that one client cannot take the
//! whole cap.
//!
//! At a cap, the connection of that scope (the address's, or any) that has had no request in
//! flight for longest is closed to make room, and only when every one is busy is the new
//! connection refused. An idle keep-alive connection costs its client a reconnection when it
//! next needs one; a refused one costs a client that wants to send a request now.
//!
//! An address is counted as the limits count it (an IPv6 address by its /64). Connections from
//! `server.trusted_proxies` are not counted per address: a proxy holds many clients'
//! connections, and bounds them itself (nginx's `limit_conn`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

use super::connection::ConnState;
use crate::config::IpNet;
use crate::limit::client_ip::limit_address;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `server.max_connections` are open and busy.
    Full,
    /// `server.max_connections_per_ip` of its address are open and busy.
    PerAddress,
}

impl Refusal {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Full => "max_connections",
            Self::PerAddress => "max_connections_per_ip",
        }
    }
}

/// The open connections, by client address.
#[derive(Debug)]
pub(super) struct Admission {
    cap: usize,
    per_address: usize,
    trusted: Box<[IpNet]>,
    epoch: Instant,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    open: usize,
    next_id: u64,
    by_address: HashMap<IpAddr, Vec<Arc<ConnState>>>,
}

/// A connection let in, and the one closed to make room for it, if any.
pub(super) struct Admitted {
    pub(super) state: Arc<ConnState>,
    pub(super) evicted: Option<Arc<ConnState>>,
}

impl Admission {
    pub(super) fn new(cap: usize, per_address: usize, trusted: &[IpNet]) -> Self {
        Self {
            cap: cap.max(1),
            per_address: per_address.max(1),
            trusted: trusted.into(),
            epoch: Instant::now(),
            table: Mutex::default(),
        }
    }

    /// Lets a connection from `peer` in, closing an idle one to make room at a cap.
    pub(super) fn admit(&self, peer: IpAddr) -> Result<Admitted, Refusal> {
        let address = limit_address(peer);
        let counted = !self.trusted.iter().any(|net| net.contains(peer));
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let mut evicted = None;
        if counted && table.by_address.get(&address).map_or(0, Vec::len) >= self.per_address {
            evicted = Some(table.evict(Some(address)).ok_or(Refusal::PerAddress)?);
        }
        if table.open >= self.cap {
            evicted = Some(table.evict(None).ok_or(Refusal::Full)?);
        }
        table.next_id += 1;
        let state = Arc::new(ConnState::new(table.next_id, address, self.epoch));
        table.by_address.entry(address).or_default().push(state.clone());
        table.open += 1;
        Ok(Admitted { state, evicted })
    }

    /// Forgets a connection that closed (one evicted is already forgotten).
    pub(super) fn release(&self, state: &ConnState) {
        self.table.lock().unwrap_or_else(PoisonError::into_inner).remove(state);
    }
}

impl Table {
    /// Takes out the connection of `address` (or of any address) idle longest, and asks it to
    /// close; `None` when each has a request in flight.
    fn evict(&mut self, address: Option<IpAddr>) -> Option<Arc<ConnState>> {
        let victim = match address {
            Some(address) => self.by_address.get(&address).and_then(|list| longest_idle(list.iter())),
            None => longest_idle(self.by_address.values().flatten()),
        }?;
        self.remove(&victim);
        victim.evict();
        Some(victim)
    }

    fn remove(&mut self, state: &ConnState) {
        let Some(list) = self.by_address.get_mut(&state.address()) else { return };
        let Some(at) = list.iter().position(|c| c.id() == state.id()) else { return };
        list.swap_remove(at);
        self.open -= 1;
        if list.is_empty() {
            self.by_address.remove(&state.address());
        }
    }
}

fn longest_idle<'a>(connections: impl Iterator<Item = &'a Arc<ConnState>>) -> Option<Arc<ConnState>> {
    connections.filter(|c| c.is_idle()).min_by_key(|c| c.idle_since()).cloned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn one_address_gets_its_share_and_its_idle_connections_make_room() {
        let admission = Admission::new(10, 2, &[]);
        let first = admission.admit(ip("10.0.0.1")).unwrap().state;
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = admission.admit(ip("10.0.0.1")).unwrap().state;
        // At its share, the connection idle longest makes room.
        let third = admission.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(third.evicted.map(|c| c.id()), Some(first.id()));
        // All busy: refused, whatever room the server has.
        second.request_started();
        third.state.request_started();
        assert_eq!(admission.admit(ip("10.0.0.1")).err(), Some(Refusal::PerAddress));
        // Another address is not affected; an IPv6 client is one address per /64.
        assert!(admission.admit(ip("10.0.0.2")).is_ok());
        assert!(admission.admit(ip("2001:db8::1")).is_ok());
        assert!(admission.admit(ip("2001:db8::ffff")).is_ok());
        assert_eq!(admission.admit(ip("2001:db8::2")).unwrap().evicted.map(|c| c.address()), Some(ip("2001:db8::")));
        // One that ends frees its place.
        admission.release(&second);
        assert!(admission.admit(ip("10.0.0.1")).unwrap().evicted.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_longest_idle_anywhere_makes_room_before_anyone_is_refused() {
        let admission = Admission::new(3, 3, &[]);
        let a = admission.admit(ip("10.0.0.1")).unwrap().state;
        let b = admission.admit(ip("10.0.0.2")).unwrap().state;
        let c = admission.admit(ip("10.0.0.3")).unwrap().state;
        // `a` served a request and went idle last; `b` is busy; `c` never sent one.
        a.request_started();
        b.request_started();
        tokio::time::advance(Duration::from_secs(5)).await;
        a.request_ended();
        let d = admission.admit(ip("10.0.0.4")).unwrap();
        assert_eq!(d.evicted.map(|v| v.id()), Some(c.id()), "idle since its accept, the longest");
        d.state.request_started();
        let e = admission.admit(ip("10.0.0.5")).unwrap();
        assert_eq!(e.evicted.map(|v| v.id()), Some(a.id()));
        e.state.request_started();
        assert_eq!(admission.admit(ip("10.0.0.6")).err(), Some(Refusal::Full));
    }

    #[test]
    fn a_trusted_proxy_is_not_held_to_one_address_share() {
        let proxy: IpNet = "10.1.0.0/16".parse().unwrap();
        let admission = Admission::new(100, 1, &[proxy]);
        for _ in 0..5 {
            let admitted = admission.admit(ip("10.1.2.3")).unwrap();
            assert!(admitted.evicted.is_none());
            admitted.state.request_started();
        }
        admission.admit(ip("10.2.0.1")).unwrap().state.request_started();
        assert_eq!(admission.admit(ip("10.2.0.1")).err(), Some(Refusal::PerAddress));
    }
}
