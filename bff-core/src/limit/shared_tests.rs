//! Counting in a real Redis: the checks of requests waiting at once go in one script call, and
//! are judged one after another as if each had been its own.

use std::sync::Arc;

use super::{Check, LimitKey, Limits};
use crate::config::Config;
use crate::observe::metrics::Metrics;
use crate::testing::RedisServer;

async fn limits(redis: &RedisServer, metrics: &Metrics) -> Limits {
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[redis]\nurl = \"{}\"\ntimeout = \"2s\"\n\
         [rate_limits.per-user]\nkey = \"user\"\nrate = 10\nper = \"1h\"\n\
         [rate_limits.tight]\nkey = \"global\"\nrate = 1\nper = \"1h\"\n",
        redis.url()
    );
    let config: Config = toml::from_str(&config).expect("config");
    Limits::new(&config, metrics).await.expect("connected").expect("some limits")
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
    // A histogram with buckets, as the dashboard's p99 panel reads it (it was a summary, with none).
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
    let index = |name: &str| limits.rules().iter().position(|r| &*r.name == name).expect("a rule");
    let user = Check::Rule { index: index("per-user"), key: LimitKey::Name(Arc::from("ann")) };
    let tight = Check::Rule { index: index("tight"), key: LimitKey::Global };
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
