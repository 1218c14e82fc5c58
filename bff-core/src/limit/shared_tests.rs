//! Counting in a real Redis: the checks of requests waiting at once go in one script call, and
//! are judged one after another as if each had been its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Check, LimitKey, Limits, Status};
use crate::config::Config;
use crate::observe::metrics::Metrics;
use crate::testing::RedisServer;

async fn limits(redis: &RedisServer, metrics: &Metrics) -> Limits {
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[redis]\nurl = \"{}\"\ntimeout = \"2s\"\n\
         [rate_limits.per-user]\nkey = \"user\"\nrate = 10\nper = \"1h\"\n\
         [rate_limits.tight]\nkey = \"global\"\nrate = 1\nper = \"1h\"\n\
         [rate_limits.wide]\nkey = \"global\"\nrate = 25\nper = \"1h\"\n",
        redis.url()
    );
    let config: Config = toml::from_str(&config).expect("config");
    Limits::new(&config, metrics).await.expect("connected").expect("some limits")
}

/// A check against the limit `rule` of [`limits`] for `key`.
fn rule(limits: &Limits, rule: &str, key: LimitKey) -> Check {
    let index = limits.rules().iter().position(|r| &*r.name == rule).expect("a rule");
    Check::Rule { index, key }
}

fn user(name: &str) -> LimitKey {
    LimitKey::Name(Arc::from(name))
}

/// A check against `client`'s hourly quota of `requests`.
fn quota(client: &str, requests: u64) -> Check {
    Check::Quota { client: Arc::from(client), tier: Arc::from("pro"), requests, per: Duration::from_secs(3600) }
}

fn value(metrics: &Metrics, series: &str) -> Option<f64> {
    let text = metrics.render();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn checks_waiting_at_once_share_one_call_and_are_judged_in_turn() {
    let Some(redis) = RedisServer::start().await else { return };
    let metrics = Metrics::new();
    let limits = limits(&redis, &metrics).await;
    let check = |user: &str| [Check::Rule { index: 0, key: LimitKey::Name(Arc::from(user)) }];
    let (ann, bob) = (check("ann"), check("bob"));
    // 40 of ann's requests and 10 of bob's, interleaved, all waiting at once.
    let whose = |i: usize| if i % 5 == 4 { &bob } else { &ann };
    let answers = futures::future::join_all((0..50).map(|i| limits.check(whose(i)))).await;

    let mut left = std::collections::HashMap::<bool, Vec<Option<u64>>>::new();
    for (i, answer) in answers.into_iter().enumerate() {
        let status = answer.expect("counted")[0];
        left.entry(i % 5 == 4).or_default().push(status.retry_after.is_none().then_some(status.remaining));
    }
    // Each user's first ten (a burst of 10) pass, seeing 9, 8, … 0 left in the order they were
    // queued; ann's other thirty are refused.
    let passed: Vec<Option<u64>> = (0..10).rev().map(Some).collect();
    assert_eq!(left[&true], passed, "bob");
    assert_eq!(left[&false][..10], passed[..], "ann");
    assert!(left[&false][10..].iter().all(Option::is_none), "ann: {:?}", left[&false]);

    assert_eq!(value(&metrics, "bff_redis_checks_total"), Some(50.0));
    assert_eq!(value(&metrics, "bff_redis_call_seconds_count"), Some(1.0), "one call for the fifty");
    // A histogram with buckets, as the dashboard's p99 panel reads it (it was a summary, with
    // none).
    assert_eq!(value(&metrics, r#"bff_redis_call_seconds_bucket{le="+Inf"}"#), Some(1.0));

    // A lone check later goes at once, on its own.
    let status = limits.check(&check("cid")).await.expect("counted")[0];
    assert_eq!((status.remaining, status.retry_after), (9, None));
    assert_eq!(value(&metrics, "bff_redis_call_seconds_count"), Some(2.0));
}

#[tokio::test]
async fn a_check_that_gave_up_in_the_queue_is_not_counted() {
    let Some(redis) = RedisServer::start().await else { return };
    let metrics = Metrics::new();
    let limits = limits(&redis, &metrics).await;
    let ann = [Check::Rule { index: 0, key: LimitKey::Name(Arc::from("ann")) }];
    // Started and dropped before the batch goes: its place is not counted in Redis.
    let mut abandoned = Box::pin(limits.check(&ann));
    assert!(futures::poll!(&mut abandoned).is_pending());
    drop(abandoned);
    let status = limits.check(&ann).await.expect("counted")[0];
    assert_eq!(status.remaining, 9, "only the second counted");
    assert_eq!(value(&metrics, "bff_redis_checks_total"), Some(1.0));
}

#[tokio::test]
async fn in_one_call_each_request_is_still_all_or_nothing() {
    let Some(redis) = RedisServer::start().await else { return };
    let metrics = Metrics::new();
    let limits = limits(&redis, &metrics).await;
    let user = rule(&limits, "per-user", user("ann"));
    let tight = rule(&limits, "tight", LimitKey::Global);
    let both = [user.clone(), tight];
    let alone = [user];
    let (first, second, third) = futures::join!(limits.check(&both), limits.check(&both), limits.check(&alone));
    let (first, second, third) = (first.expect("counted"), second.expect("counted"), third.expect("counted"));
    assert!(first.iter().all(|s| s.retry_after.is_none()), "{first:?}");
    // The second is refused by the tight limit, so its per-user share is not taken either…
    assert!(second[1].retry_after.is_some(), "{second:?}");
    // …and the third, judged after it in the same call, finds 8 left of 10, not 7.
    assert_eq!((third[0].remaining, third[0].retry_after), (8, None));
    assert_eq!(value(&metrics, "bff_redis_call_seconds_count"), Some(1.0));
}

/// Redis's count of calls to `command` since its statistics were last reset.
async fn calls(redis: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(redis).await.expect("INFO");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines().find_map(|l| l.strip_prefix(&prefix)?.split(',').next()?.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn many_requests_on_the_same_keys_cost_redis_one_read_and_one_write_per_key() {
    let Some(redis) = RedisServer::start().await else { return };
    let metrics = Metrics::new();
    let limits = limits(&redis, &metrics).await;
    let checks = [rule(&limits, "per-user", user("ann")), rule(&limits, "wide", LimitKey::Global), quota("acme", 12)];
    let mut stats =
        redis::Client::open(redis.url()).expect("url").get_multiplexed_async_connection().await.expect("up");
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut stats).await.expect("RESETSTAT");

    let answers = futures::future::join_all((0..30).map(|_| limits.check(&checks))).await;
    let answers: Vec<Vec<Status>> = answers.into_iter().map(|a| a.expect("counted")).collect();
    // The per-user burst of 10 lets the first ten through, seeing 9 … 0 left of it, 24 … 15 of
    // the wide limit and 11 … 2 of the quota; the other twenty are refused by the per-user limit
    // alone, and take nothing from the others.
    for (i, statuses) in answers.iter().enumerate() {
        let left: Vec<u64> = statuses.iter().map(|s| s.remaining).collect();
        let refused: Vec<bool> = statuses.iter().map(|s| s.retry_after.is_some()).collect();
        if i < 10 {
            let i = i as u64;
            assert_eq!((left, refused), (vec![9 - i, 24 - i, 11 - i], vec![false; 3]), "request {i}");
        } else {
            assert_eq!((left, refused), (vec![0, 14, 1], vec![true, false, false]), "request {i}");
        }
    }
    assert_eq!(value(&metrics, "bff_redis_call_seconds_count"), Some(1.0));
    let work = [
        calls(&mut stats, "get").await,
        calls(&mut stats, "set").await,
        calls(&mut stats, "hmget").await,
        calls(&mut stats, "hset").await,
    ];
    assert_eq!(work, [2, 2, 1, 1], "GET, SET, HMGET, HSET for thirty requests on three keys");

    // And what was written is what the next request finds.
    let next = limits.check(&checks[1..]).await.expect("counted");
    assert_eq!((next[0].remaining, next[1].remaining), (14, 1));
}

/// One key's count as the reference gives it: what is left, whether refused, and for a rate
/// limit the time until it is whole (passed) or until one would pass (refused).
type Count = (u64, bool, Option<Duration>);

/// The counts of requests judged one at a time from fresh keys, at one moment: the reference a
/// batch must match. Rate limits by rule index and key; `interval` and `burst` per rule.
#[derive(Default)]
struct OneByOne {
    ahead: HashMap<String, u64>,
    used: HashMap<String, u64>,
}

impl OneByOne {
    fn judge(&mut self, checks: &[Check], limits: &Limits) -> Vec<Count> {
        let mut out = Vec::new();
        let mut allowed = true;
        let name = |check: &Check| format!("{check:?}");
        for check in checks {
            match check {
                Check::Rule { index, .. } => {
                    let rule = &limits.rules()[*index];
                    let (interval, burst) = (rule.interval_micros(), u64::from(rule.burst.get()));
                    let ahead = self.ahead.get(&name(check)).copied().unwrap_or(0);
                    if ahead + interval > burst * interval {
                        allowed = false;
                        let retry = Duration::from_micros(ahead + interval - burst * interval);
                        out.push((0, true, Some(retry)));
                    } else {
                        let left = (burst * interval - ahead - interval) / interval;
                        out.push((left, false, Some(Duration::from_micros(ahead + interval))));
                    }
                }
                Check::Quota { requests, .. } => {
                    let used = self.used.get(&name(check)).copied().unwrap_or(0);
                    allowed &= used < *requests;
                    out.push((requests.saturating_sub(used + 1), used >= *requests, None));
                }
            }
        }
        if allowed {
            for check in checks {
                match check {
                    Check::Rule { index, .. } => {
                        *self.ahead.entry(name(check)).or_default() += limits.rules()[*index].interval_micros();
                    }
                    Check::Quota { .. } => *self.used.entry(name(check)).or_default() += 1,
                }
            }
        }
        out
    }
}

#[tokio::test]
async fn a_batch_counts_as_its_requests_judged_one_by_one_group_by_group() {
    let Some(redis) = RedisServer::start().await else { return };
    let metrics = Metrics::new();
    let limits = limits(&redis, &metrics).await;
    let user = |name: &str| rule(&limits, "per-user", user(name));
    let wide = rule(&limits, "wide", LimitKey::Global);
    let tight = rule(&limits, "tight", LimitKey::Global);
    // Check lists that share keys in every way: alone, with a global limit, with a quota.
    let kinds: Vec<Vec<Check>> = vec![
        vec![user("ann")],
        vec![user("ann"), wide.clone()],
        vec![user("bob"), wide.clone(), quota("acme", 7)],
        vec![wide.clone(), quota("acme", 7)],
        vec![user("cid"), tight],
        vec![user("bob")],
        vec![quota("initech", 3)],
    ];
    let mut seed = 0x2545_f491_u64;
    let mut next = move |below: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % below as u64) as usize
    };
    let mut reference = OneByOne::default();
    for round in 0..6 {
        let batch: Vec<usize> = (0..1 + next(40)).map(|_| next(kinds.len())).collect();
        let answers = futures::future::join_all(batch.iter().map(|&k| limits.check(&kinds[k]))).await;
        // Judged group by group: the kinds in the order their first request was queued.
        let mut order: Vec<usize> = Vec::new();
        for &k in &batch {
            if !order.contains(&k) {
                order.push(k);
            }
        }
        let mut expected: HashMap<usize, Vec<Vec<Count>>> = HashMap::new();
        for &k in &order {
            let count = batch.iter().filter(|&&b| b == k).count();
            let judged = (0..count).map(|_| reference.judge(&kinds[k], &limits)).collect();
            expected.insert(k, judged);
        }
        let mut seen: HashMap<usize, usize> = HashMap::new();
        for (&k, answer) in batch.iter().zip(answers) {
            let place = seen.entry(k).or_default();
            let want = &expected[&k][*place];
            *place += 1;
            let got = answer.expect("counted");
            for ((got, want), check) in got.iter().zip(want).zip(&kinds[k]) {
                assert_eq!((got.remaining, got.retry_after.is_some()), (want.0, want.1), "round {round}: {check:?}");
                // From fresh keys, in the first round, the times are exact too.
                if round == 0 && matches!(check, Check::Rule { .. }) {
                    let time = if want.1 { got.retry_after } else { Some(got.reset) };
                    assert_eq!(time, want.2, "round {round}: {check:?}");
                }
            }
        }
    }
}

/// Limits of [`limits`]' Redis with leases of `lease` and a per-user limit of 100 an hour.
async fn leasing(redis: &RedisServer, metrics: &Metrics, lease: &str) -> Limits {
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[redis]\nurl = \"{}\"\ntimeout = \"2s\"\nlease = \"{lease}\"\n\
         [rate_limits.per-user]\nkey = \"user\"\nrate = 100\nper = \"1h\"\n",
        redis.url()
    );
    let config: Config = toml::from_str(&config).expect("config");
    Limits::new(&config, metrics).await.expect("connected").expect("some limits")
}

#[tokio::test]
async fn leases_spend_one_call_over_many_requests_and_admit_exactly_the_limit() {
    let Some(redis) = RedisServer::start().await else { return };
    let metrics = Metrics::new();
    let limits = leasing(&redis, &metrics, "1s").await;
    let ann = [rule(&limits, "per-user", user("ann"))];
    let mut left = Vec::new();
    for _ in 0..120 {
        let status = limits.check(&ann).await.expect("counted")[0];
        left.push(status.retry_after.is_none().then_some(status.remaining));
    }
    // The burst of 100 passes, seeing 99 … 0 left as it would counted one by one; the rest are
    // refused.
    let passed: Vec<Option<u64>> = (0..100).rev().map(Some).collect();
    assert_eq!(left[..100], passed[..]);
    assert!(left[100..].iter().all(Option::is_none), "{:?}", &left[100..]);
    // One call for the first request, then leases of up to 25 (a quarter of the burst), then one
    // call per refused request; one request at a time, counted one by one, took 120.
    let calls = value(&metrics, "bff_redis_call_seconds_count").expect("calls");
    assert!(calls <= 1.0 + 8.0 + 20.0, "{calls} script calls");
    let granted = value(&metrics, r#"bff_redis_lease_units_total{result="granted"}"#).expect("granted");
    assert!(granted >= 60.0, "{granted} units leased");

    // Off, every request is a call of its own.
    let metrics = Metrics::new();
    let exact = leasing(&redis, &metrics, "0s").await;
    let bob = [rule(&exact, "per-user", user("bob"))];
    for _ in 0..20 {
        exact.check(&bob).await.expect("counted");
    }
    assert_eq!(value(&metrics, "bff_redis_call_seconds_count"), Some(20.0));
}

#[tokio::test]
async fn replicas_with_leases_never_admit_more_than_the_limit_between_them() {
    let Some(redis) = RedisServer::start().await else { return };
    let metrics = Metrics::new();
    let (one, two) = (leasing(&redis, &metrics, "1s").await, leasing(&redis, &metrics, "1s").await);
    let ann = [rule(&one, "per-user", user("ann"))];
    // Both replicas take turns, in bursts of eight waiting at once, until each has been refused
    // a few times: what one leased and did not spend, it spends before the others are refused.
    let mut allowed = 0;
    for _ in 0..20 {
        let (a, b) = futures::join!(
            futures::future::join_all((0..8).map(|_| one.check(&ann))),
            futures::future::join_all((0..8).map(|_| two.check(&ann))),
        );
        allowed += a.into_iter().chain(b).filter(|s| s.as_ref().expect("counted")[0].retry_after.is_none()).count();
    }
    // The burst of 100, no more; a unit is missing only where a lease ended unspent (a machine
    // stalled for a second), and counted lost.
    let units = |result: &str| {
        value(&metrics, &format!("bff_redis_lease_units_total{{result=\"{result}\"}}")).unwrap_or(0.0) as usize
    };
    assert_eq!(allowed + units("lost"), 100, "allowed {allowed}");
    assert!(units("granted") >= 20, "{} units leased", units("granted"));
}
