//! A batch of requests' checks as `check.lua` takes them: requests with the same checks form one
//! group, which Redis judges with one read and one write per key however many requests it holds,
//! and each request's counts are worked out here from what the script answers for its group.
//!
//! Grouping judges a batch's requests group by group (groups in the order their first request
//! was queued, each group's requests in queue order), as if they had arrived in that order: they
//! were all waiting at the same moment, so no order among them is more right than another.

use std::time::Duration;

use super::Status;

/// One key of a request: its name in Redis and its two script arguments (a rate limit's
/// interval in microseconds and burst, or a quota's requests and window in seconds).
pub(super) type Key = (String, u64, u64);

/// Requests with the same checks: their keys (rate limits first), and how many requests.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Group<'a> {
    pub(super) keys: &'a [Key],
    pub(super) limits: usize,
    pub(super) requests: u64,
}

impl Group<'_> {
    /// How many integers the script answers for it.
    pub(super) fn answer_len(&self) -> usize {
        1 + 2 * self.keys.len()
    }
}

/// Groups `requests` (each its keys, how many of them are rate limits, and how many units it
/// asks for: 1, or more for a lease), in the order given; answers the groups, and per request
/// its group and the place of its first unit in it (from 1). A request's units take the places
/// after it, as that many requests queued one after another would.
pub(super) fn group<'a>(
    requests: impl Iterator<Item = (&'a [Key], usize, u64)>,
) -> (Vec<Group<'a>>, Vec<(usize, u64)>) {
    let mut groups: Vec<Group<'a>> = Vec::new();
    let places = requests
        .map(|(keys, limits, units)| {
            // A batch holds at most a few dozen requests: a scan beats hashing their keys.
            let index = match groups.iter().position(|g| g.limits == limits && g.keys == keys) {
                Some(index) => index,
                None => {
                    groups.push(Group { keys, limits, requests: 0 });
                    groups.len() - 1
                }
            };
            let place = groups[index].requests + 1;
            groups[index].requests += units;
            (index, place)
        })
        .collect();
    (groups, places)
}

/// How many of the `units` taking places from `place` on passed, given the group's answer.
pub(super) fn granted(answer: &[i64], place: u64, units: u64) -> u64 {
    let passed = u64::try_from(answer[0]).unwrap_or(0);
    passed.saturating_sub(place - 1).min(units)
}

/// The counts of the `place`-th request (from 1) of `group`, given what the script answered for
/// the group: how many of its requests passed, then each key's state before the group.
pub(super) fn statuses(group: &Group<'_>, answer: &[i64], place: u64) -> Vec<Status> {
    let passed = i128::from(answer[0].max(0));
    let place = i128::from(place);
    // Each key counts this request after those of the group that passed before it: a request
    // past the first refused one is judged on the state the passed ones left. (A request that
    // passed found room on every key, so only those past it can find a key full.)
    let nth = place.min(passed + 1);
    let micros = |x: i128| Duration::from_micros(u64::try_from(x.max(0)).unwrap_or(u64::MAX));
    let whole = |x: i128| u64::try_from(x.max(0)).unwrap_or(u64::MAX);
    group
        .keys
        .iter()
        .zip(answer[1..].chunks_exact(2))
        .enumerate()
        .map(|(i, (&(_, first, second), state))| {
            let (first, second) = (i128::from(first), i128::from(second));
            let before = i128::from(state[0].max(0));
            if i < group.limits {
                // GCRA: `before` is how far the theoretical arrival time was ahead of now; this
                // request would take it to `ahead`, which must stay within the burst.
                let (interval, burst) = (first.max(1), second);
                let ahead = before + nth * interval;
                if ahead > burst * interval {
                    let retry_after = Some(micros(ahead - burst * interval));
                    Status { remaining: 0, reset: micros(ahead - interval), retry_after }
                } else {
                    let remaining = (burst * interval - ahead).div_euclid(interval);
                    Status { remaining: whole(remaining), reset: micros(ahead), retry_after: None }
                }
            } else {
                // A quota: `before` requests used in the window, which resets in `state[1]` µs.
                let (requests, reset) = (first, micros(i128::from(state[1])));
                let used = before + nth - 1;
                if used >= requests {
                    Status { remaining: 0, reset, retry_after: Some(reset) }
                } else {
                    Status { remaining: whole(requests - used - 1), reset, retry_after: None }
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, first: u64, second: u64) -> Key {
        (name.to_owned(), first, second)
    }

    #[test]
    fn requests_with_the_same_checks_share_a_group_in_queue_order() {
        let (ann, bob) = (vec![key("ann", 10, 5)], vec![key("bob", 10, 5)]);
        let both = vec![key("ann", 10, 5), key("quota", 100, 60)];
        let requests = [(&ann, 1), (&bob, 1), (&ann, 1), (&both, 1), (&both, 2), (&ann, 1)];
        let (groups, places) = group(requests.iter().map(|(k, l)| (k.as_slice(), *l, 1)));
        let sizes: Vec<(usize, u64)> = groups.iter().map(|g| (g.keys.len(), g.requests)).collect();
        // The same keys counted as rate limits or as a quota are different checks.
        assert_eq!(sizes, [(1, 3), (1, 1), (2, 1), (2, 1)]);
        assert_eq!(places, [(0, 1), (1, 1), (0, 2), (2, 1), (3, 1), (0, 3)]);
    }

    #[test]
    fn a_lease_takes_as_many_places_as_units_and_is_granted_what_passed_of_them() {
        let ann = vec![key("ann", 10, 5)];
        // A request, a lease of 4, then another request: places 1, 2 to 5, and 6.
        let requests = [(&ann, 1, 1), (&ann, 1, 4), (&ann, 1, 1)];
        let (groups, places) = group(requests.iter().map(|(k, l, u)| (k.as_slice(), *l, *u)));
        assert_eq!(groups[0].requests, 6);
        assert_eq!(places, [(0, 1), (0, 2), (0, 6)]);
        // Three of the six passed: the first request, and two of the lease's four.
        let answer = [3, 0, 0];
        assert_eq!([granted(&answer, 1, 1), granted(&answer, 2, 4), granted(&answer, 6, 1)], [1, 2, 0]);
        assert_eq!(granted(&[9, 0, 0], 2, 4), 4, "never more than asked");
        assert_eq!(granted(&[-1, 0, 0], 1, 4), 0);
    }

    /// The old script's answer for one request after another, all at one `now`: the reference
    /// the groups' arithmetic must match.
    fn one_by_one(keys: &[Key], limits: usize, ahead: &mut [i128], used: &mut [i128], reset: &[i128]) -> Vec<Status> {
        let micros = |x: i128| Duration::from_micros(x as u64);
        let mut allowed = true;
        let mut out = Vec::new();
        for (i, &(_, first, second)) in keys.iter().enumerate() {
            let (first, second) = (i128::from(first), i128::from(second));
            if i < limits {
                let (interval, burst) = (first, second);
                let new = ahead[i] + interval;
                let allow_in = new - burst * interval;
                if allow_in > 0 {
                    allowed = false;
                    out.push(Status { remaining: 0, reset: micros(ahead[i]), retry_after: Some(micros(allow_in)) });
                } else {
                    out.push(Status {
                        remaining: ((-allow_in) / interval) as u64,
                        reset: micros(new),
                        retry_after: None,
                    });
                }
            } else {
                let q = i - limits;
                if used[q] >= first {
                    allowed = false;
                    out.push(Status { remaining: 0, reset: micros(reset[q]), retry_after: Some(micros(reset[q])) });
                } else {
                    out.push(Status {
                        remaining: (first - used[q] - 1) as u64,
                        reset: micros(reset[q]),
                        retry_after: None,
                    });
                }
            }
        }
        if allowed {
            for (i, &(_, first, _)) in keys.iter().enumerate() {
                if i < limits {
                    ahead[i] += i128::from(first);
                } else {
                    used[i - limits] += 1;
                }
            }
        }
        out
    }

    #[test]
    fn a_groups_counts_are_those_of_its_requests_judged_one_by_one() {
        // Every start state of two rate limits and a quota, small enough to cross each bound.
        let keys = [key("a", 7, 3), key("b", 5, 6), key("q", 4, 60)];
        for a in [0, 3, 7, 13, 20, 21] {
            for b in [0, 4, 5, 25, 30] {
                for q in 0..=5 {
                    let (mut ahead, mut used, reset) = ([a, b], [q], [1_000]);
                    let expected: Vec<Vec<Status>> =
                        (0..8).map(|_| one_by_one(&keys, 2, &mut ahead, &mut used, &reset)).collect();
                    // What the script answers: the first ones pass while every key has room.
                    let passed = expected.iter().take_while(|s| s.iter().all(|s| s.retry_after.is_none())).count();
                    let answer = [passed as i64, a as i64, 0, b as i64, 0, q as i64, 1_000];
                    let group = Group { keys: &keys, limits: 2, requests: 8 };
                    for (place, expected) in (1..).zip(&expected) {
                        assert_eq!(&statuses(&group, &answer, place), expected, "a={a} b={b} q={q} place={place}");
                    }
                }
            }
        }
    }
}
