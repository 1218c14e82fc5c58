//! Concurrency limits (`[concurrency_limits.<name>]`): how many requests of one key are in flight
//! at once, in this process. A request holds its places from its check until the last byte of its
//! response has gone (or the response is dropped, when its client goes away): a slow upload, a
//! slow reader of a download and a long event stream all count for as long as they last.
//!
//! The count is a map of the keys in flight now: a key's entry goes when its last request does,
//! so the map never holds more entries than requests in flight.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use metrics::Gauge;
use pin_project_lite::pin_project;

use super::LimitKey;
use crate::config::LimitKeyKind;

/// One concurrency limit.
#[derive(Debug)]
pub(crate) struct ConcurrencyRule {
    pub(crate) name: Arc<str>,
    pub(crate) key: LimitKeyKind,
    pub(crate) max: NonZeroU32,
    pub(crate) routes: Option<Vec<String>>,
}

impl ConcurrencyRule {
    /// Whether it covers the route `pattern`.
    pub(crate) fn covers(&self, pattern: &str) -> bool {
        self.routes.as_ref().is_none_or(|routes| routes.iter().any(|r| r == pattern))
    }
}

/// The requests in flight per concurrency limit (by index) and key, and per limit in its gauge.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct InFlight(Arc<Counts>);

#[derive(Debug)]
struct Counts {
    by_key: Mutex<HashMap<(usize, LimitKey), u32>>,
    /// By limit: `bff_concurrency_in_flight`.
    gauges: Vec<Gauge>,
}

impl InFlight {
    /// Counts for the limits whose gauges are `gauges`, by index.
    pub(crate) fn new(gauges: Vec<Gauge>) -> Self {
        Self(Arc::new(Counts { by_key: Mutex::default(), gauges }))
    }

    /// Takes a place under each of `wanted` (a limit's index, the key, the limit's maximum), all
    /// or none: `Err` with the index of the first limit that is full. One lookup per limit, and
    /// `wanted` becomes the places held.
    pub(crate) fn hold(&self, wanted: Vec<(usize, LimitKey, NonZeroU32)>) -> Result<Held, usize> {
        let mut counts = self.0.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        for (position, (index, key, max)) in wanted.iter().enumerate() {
            // A full limit's entry is there already (its count is at least one).
            let count = counts.entry((*index, key.clone())).or_default();
            if *count >= max.get() {
                for (index, key, _) in &wanted[..position] {
                    give_back(&mut counts, *index, key.clone());
                }
                return Err(*index);
            }
            *count += 1;
        }
        drop(counts);
        for (index, ..) in &wanted {
            self.gauge(*index, 1.0);
        }
        Ok(Held { in_flight: self.clone(), places: wanted })
    }

    fn gauge(&self, index: usize, change: f64) {
        if let Some(gauge) = self.0.gauges.get(index) {
            gauge.increment(change);
        }
    }

    /// The keys with a request in flight now.
    pub(crate) fn keys(&self) -> usize {
        self.0.by_key.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// The requests in flight under the limit `index` for `key`.
    #[cfg(test)]
    pub(crate) fn count(&self, index: usize, key: &LimitKey) -> u32 {
        let counts = self.0.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(&(index, key.clone())).copied().unwrap_or(0)
    }
}

/// One place under the limit `index` for `key` given back; the key's entry goes with its last.
fn give_back(counts: &mut HashMap<(usize, LimitKey), u32>, index: usize, key: LimitKey) {
    if let Entry::Occupied(mut entry) = counts.entry((index, key)) {
        match *entry.get() {
            0 | 1 => {
                entry.remove();
            }
            n => *entry.get_mut() = n - 1,
        }
    }
}

/// One request's places: given back when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    in_flight: InFlight,
    places: Vec<(usize, LimitKey, NonZeroU32)>,
}

impl Held {
    /// The indices of the limits it holds places under.
    pub(crate) fn limits(&self) -> impl Iterator<Item = usize> + '_ {
        self.places.iter().map(|(index, ..)| *index)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.in_flight.0.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        for (index, key, _) in self.places.drain(..) {
            give_back(&mut counts, index, key);
            self.in_flight.gauge(index, -1.0);
        }
    }
}

/// The places of a request that may become a tunnel (a WebSocket), one entry per layer of limits
/// that took some: a request extension, which the handler that opens the tunnel keeps for its
/// life (and which is dropped with the request otherwise).
#[derive(Debug, Clone, Default)]
pub(crate) struct TunnelPlaces(Vec<Arc<Held>>);

impl TunnelPlaces {
    pub(crate) fn add(&mut self, held: Held) {
        self.0.push(Arc::new(held));
    }
}

pin_project! {
    /// A response body that holds its request's places until it has ended or is dropped.
    pub(crate) struct HeldBody<B> {
        #[pin]
        pub(crate) inner: B,
        pub(crate) held: Option<Held>,
    }
}

impl<B: Body<Data = Bytes>> Body for HeldBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = frame {
            // The last byte has gone (or never will): the places are free before the connection
            // gets to dropping the body.
            this.held.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn user(name: &str) -> LimitKey {
        LimitKey::Name(Arc::from(name))
    }

    fn two() -> NonZeroU32 {
        NonZeroU32::new(2).unwrap()
    }

    #[test]
    fn a_key_holds_up_to_its_maximum_and_gets_its_places_back() {
        let in_flight = InFlight::new(Vec::new());
        let first = in_flight.hold(vec![(0, user("a"), two())]).unwrap();
        let second = in_flight.hold(vec![(0, user("a"), two())]).unwrap();
        assert_eq!(in_flight.hold(vec![(0, user("a"), two())]).unwrap_err(), 0);
        // Another key, and the same key under another limit, count apart.
        let other = in_flight.hold(vec![(0, user("b"), two()), (1, user("a"), two())]).unwrap();
        assert_eq!(in_flight.count(0, &user("a")), 2);
        drop(first);
        let third = in_flight.hold(vec![(0, user("a"), two())]).unwrap();
        drop((second, third, other));
        assert_eq!(in_flight.keys(), 0, "no entry outlives its last request");
    }

    #[test]
    fn a_full_limit_takes_no_place_under_the_others() {
        let in_flight = InFlight::new(Vec::new());
        let one = NonZeroU32::MIN;
        let _held = in_flight.hold(vec![(1, user("a"), one)]).unwrap();
        let refused = in_flight.hold(vec![(0, user("a"), two()), (1, user("a"), one)]);
        assert_eq!(refused.unwrap_err(), 1, "the index of the full one");
        assert_eq!(in_flight.count(0, &user("a")), 0, "all or none");
    }

    #[tokio::test]
    async fn a_body_holds_its_places_until_its_last_frame() {
        let in_flight = InFlight::new(Vec::new());
        let held = in_flight.hold(vec![(0, user("a"), two())]).unwrap();
        let mut body = HeldBody { inner: http_body_util::Full::new(Bytes::from_static(b"hello")), held: Some(held) };
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        assert_eq!(in_flight.count(0, &user("a")), 1, "held while its body is being sent");
        assert!(body.frame().await.is_none());
        assert_eq!(in_flight.count(0, &user("a")), 0, "given back at the end, before the body is dropped");
    }
}
