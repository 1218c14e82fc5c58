//! Counting in Redis, shared by every replica: one script call checks and counts the limits of
//! every request waiting at that moment (`check.lua`), each request's all or nothing, under
//! `redis.timeout`. While Redis cannot answer, limited requests are counted in this process
//! (`on_error = "local"`) or refused (`"deny"`); Redis is tried again after [`RETRY_AFTER`], and
//! every change is logged.
//!
//! **Batching.** A request's check joins a queue; one task sends everything queued as one
//! `EVALSHA` while no other is in flight, so under load many requests share a round trip and one
//! script run, and a lone request goes at once. Requests with the same checks go as one group
//! ([`batch`](super::batch)); the script judges the groups in turn and each group's requests one
//! after another, as they were queued, exactly as separate calls would have been: nothing is
//! traded for it, and Redis's work grows with the keys a call counts on, not with its requests.
//! The queue holds at most [`QUEUE`] checks (a request over it is counted as Redis not answering,
//! `bff_redis_errors_total{kind="queue_full"}`), and no request waits longer than `redis.timeout`
//! in all, the queue included.
//!
//! **Leases** (`redis.lease`, off unless set): a busy key's requests spend a share of its budget
//! that one script run counted, trading exactness within the lease's length for fewer runs
//! ([`lease`](super::lease)).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Histogram};
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::batch::{self, Key};
use super::lease::{Leases, Take};
use super::{Check, Rule, Status};
use crate::config::{OnRedisError, RedisConfig};
use crate::observe::metrics::Metrics;
use crate::redis_connection::CONNECT_TIMEOUT;

/// How long Redis is left alone after it failed, before a request tries it again; meanwhile
/// requests go straight to `on_error` instead of each waiting out the timeout.
pub(crate) const RETRY_AFTER: Duration = Duration::from_millis(250);

/// The most requests' checks sent in one script call.
const BATCH: usize = 64;

/// The most checks waiting to be sent.
const QUEUE: usize = 4096;

/// A Redis that limits are counted in.
pub(crate) struct Shared {
    queue: mpsc::Sender<Pending>,
    redis: Arc<Redis>,
    leases: Option<Leases>,
    pub(crate) on_error: OnRedisError,
}

/// The connection and what is known of its health, shared with the task that sends the batches.
struct Redis {
    connection: ConnectionManager,
    script: redis::Script,
    timeout: Duration,
    prefix: String,
    url: String,
    on_error: OnRedisError,
    /// When Redis may be tried again, in milliseconds on `clock`; 0: it is up.
    down_until: AtomicU64,
    clock: Instant,
    up: AtomicBool,
    calls: Histogram,
    checks: Counter,
    timeouts: Counter,
    errors: Counter,
    queue_full: Counter,
}

/// One request's checks, waiting to be sent.
struct Pending {
    /// Its keys in Redis with their two script arguments: rate limits first, then quotas.
    keys: Vec<Key>,
    /// How many of `keys` are rate limits.
    limits: usize,
    /// How many requests' worth it asks for: 1, or more for a lease.
    units: u64,
    /// The request waits at most until then.
    deadline: Instant,
    /// Its counts; dropped unanswered when Redis did not answer.
    reply: oneshot::Sender<Reply>,
}

/// What Redis answered a request.
struct Reply {
    /// Its counts, one per key.
    statuses: Vec<Status>,
    /// For a request that asked for more than one unit: its group's answer, the place of its
    /// first unit, and how many of its units were granted.
    lease: Option<(Vec<i64>, u64, u64)>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("url", &self.redis.url).finish_non_exhaustive()
    }
}

impl Shared {
    /// Connects to `config.url`, failing with a message for people when it cannot, and starts
    /// the task that sends the checks (it ends when this is dropped).
    pub(crate) async fn connect(config: &RedisConfig, metrics: &Metrics) -> Result<Self, String> {
        let url = config.url.to_string();
        let connection = crate::redis_connection::connect(config).await?;
        let script = redis::Script::new(include_str!("check.lua"));
        // Loaded once now, so requests send its hash alone.
        let mut loading = connection.clone();
        if let Err(e) = tokio::time::timeout(CONNECT_TIMEOUT, script.prepare_invoke().load_async(&mut loading))
            .await
            .map_err(|_| "no answer".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            return Err(format!("{url} cannot load the limits' script: {e}"));
        }
        let errors = |kind: &str| metrics.counter("bff_redis_errors_total", &[("kind", kind.to_owned())]);
        let redis = Arc::new(Redis {
            connection,
            script,
            timeout: config.timeout,
            prefix: config.prefix.clone(),
            url,
            on_error: config.on_error,
            down_until: AtomicU64::new(0),
            clock: Instant::now(),
            up: AtomicBool::new(true),
            calls: metrics.histogram("bff_redis_call_seconds", &[]),
            checks: metrics.counter("bff_redis_checks_total", &[]),
            timeouts: errors("timeout"),
            errors: errors("error"),
            queue_full: errors("queue_full"),
        });
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(send_batches(redis.clone(), waiting));
        let leases = (!config.lease.is_zero()).then(|| {
            let units = |result: &str| metrics.counter("bff_redis_lease_units_total", &[("result", result.to_owned())]);
            Leases::new(config.lease, units("granted"), units("lost"))
        });
        Ok(Self { queue, redis, leases, on_error: config.on_error })
    }

    /// Forgets the leases that have ended.
    pub(crate) fn forget_leases(&self) {
        if let Some(leases) = &self.leases {
            leases.forget(Instant::now());
        }
    }

    /// Checks and counts `checks`; `None` when Redis did not answer in time (or is known to be
    /// down, or too much is queued), which has been logged and counted.
    pub(crate) async fn check(&self, checks: &[Check], rules: &[Rule]) -> Option<Vec<Status>> {
        if self.leases.is_none() && self.redis.is_down() {
            return None;
        }
        let mut keys = Vec::with_capacity(checks.len());
        for check in checks {
            if let Check::Rule { index, key } = check
                && let Some(rule) = rules.get(*index)
            {
                // `<prefix>:rl:<limit>:<key>`, written once into its own string.
                let mut name = String::with_capacity(self.redis.prefix.len() + rule.name.len() + 48);
                name.push_str(&self.redis.prefix);
                name.push_str(":rl:");
                name.push_str(&rule.name);
                name.push(':');
                key.write_redis_part(&mut name);
                keys.push((name, rule.interval_micros(), u64::from(rule.burst.get())));
            }
        }
        let limits = keys.len();
        for check in checks {
            if let Check::Quota { client, requests, per, .. } = check {
                keys.push((format!("{}:quota:{client}", self.redis.prefix), *requests, per.as_secs()));
            }
        }
        let now = Instant::now();
        let (units, asker) = match self.leases.as_ref().map(|l| l.take(&keys, limits, now, self.redis.timeout)) {
            // Counted in Redis when the lease was granted, so spent even while Redis is down.
            Some(Take::Spent(statuses)) => return Some(statuses),
            Some(Take::Ask { units, asker }) => (units, asker.then(|| keys.clone())),
            None => (1, None),
        };
        let (statuses, lease) = match self.ask(keys, limits, units, now + self.redis.timeout).await {
            Some(Reply { statuses, lease }) => (Some(statuses), lease),
            None => (None, None),
        };
        if let (Some(leases), Some(keys)) = (&self.leases, asker) {
            leases.answered(&keys, lease);
        }
        // In the order of `checks`: its rate limits come before its quotas, as the keys went.
        statuses
    }

    /// Queues a request's keys for the next script call, asking for `units`, and waits for the
    /// answer; `None` when Redis is known to be down, too much is queued, or no answer came by
    /// `deadline`.
    async fn ask(&self, keys: Vec<Key>, limits: usize, units: u64, deadline: Instant) -> Option<Reply> {
        if self.redis.is_down() {
            return None;
        }
        let (reply, answer) = oneshot::channel();
        match self.queue.try_send(Pending { keys, limits, units, deadline, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.redis.queue_full.increment(1);
                return None;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return None,
        }
        answer.await.ok()
    }
}

/// Sends what is queued, one script call at a time, until every [`Shared`] is gone.
async fn send_batches(redis: Arc<Redis>, mut waiting: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(BATCH);
    while waiting.recv_many(&mut batch, BATCH).await > 0 {
        let now = Instant::now();
        // A request that gave up, or whose time ran out in the queue, is not counted.
        batch.retain(|p| !p.reply.is_closed() && p.deadline > now);
        if !batch.is_empty() && !redis.is_down() {
            redis.send(&mut batch).await;
        }
        // Whatever is left unanswered learns that Redis did not answer.
        batch.clear();
    }
}

impl Redis {
    fn is_down(&self) -> bool {
        let down_until = self.down_until.load(Ordering::Relaxed);
        down_until != 0 && self.millis() < down_until
    }

    /// One script call for every request in `batch`, answering those it answers.
    async fn send(&self, batch: &mut Vec<Pending>) {
        let (groups, places) = batch::group(batch.iter().map(|p| (p.keys.as_slice(), p.limits, p.units)));
        let mut invocation = self.script.prepare_invoke();
        for group in &groups {
            invocation.arg(group.requests).arg(group.limits).arg(group.keys.len() - group.limits);
            for (key, first, second) in group.keys {
                invocation.key(key).arg(*first).arg(*second);
            }
        }
        let expected: usize = groups.iter().map(batch::Group::answer_len).sum();
        // The earliest deadline in the batch bounds it: no request waits past its own.
        let deadline = batch.iter().map(|p| p.deadline).min().unwrap_or_else(Instant::now);
        let mut connection = self.connection.clone();
        let started = Instant::now();
        let answer = tokio::time::timeout_at(deadline, invocation.invoke_async::<Vec<i64>>(&mut connection)).await;
        self.calls.record(started.elapsed());
        self.checks.increment(batch.len() as u64);
        let values = match answer {
            Ok(Ok(values)) if values.len() == expected => values,
            Ok(Ok(values)) => {
                self.errors.increment(1);
                let (got, requests) = (values.len(), batch.len());
                return self
                    .failed(&format!("the script answered {got} values, not {expected}, for {requests} requests"));
            }
            // The connection's own response timeout (the same `redis.timeout`) may fire first.
            Ok(Err(e)) if e.is_timeout() => {
                self.timeouts.increment(1);
                return self.failed(&format!("no answer within {:?}", self.timeout));
            }
            Ok(Err(e)) => {
                self.errors.increment(1);
                return self.failed(&e.to_string());
            }
            Err(_) => {
                self.timeouts.increment(1);
                return self.failed(&format!("no answer within {:?}", self.timeout));
            }
        };
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(url = %self.url, "redis answers again: limits are shared again");
        }
        self.down_until.store(0, Ordering::Relaxed);
        let mut answers = Vec::with_capacity(groups.len());
        let mut rest = values.as_slice();
        for group in &groups {
            let (answer, after) = rest.split_at(group.answer_len());
            answers.push(answer);
            rest = after;
        }
        let replies: Vec<Reply> = places
            .into_iter()
            .zip(batch.iter())
            .map(|((index, place), pending)| {
                let answer = answers[index];
                let lease =
                    (pending.units > 1).then(|| (answer.to_vec(), place, batch::granted(answer, place, pending.units)));
                Reply { statuses: batch::statuses(&groups[index], answer, place), lease }
            })
            .collect();
        for (pending, reply) in batch.drain(..).zip(replies) {
            // A request that gave up meanwhile has no one to tell.
            let _ = pending.reply.send(reply);
        }
    }

    fn failed(&self, error: &str) {
        self.down_until.store(self.millis() + RETRY_AFTER.as_millis() as u64, Ordering::Relaxed);
        if self.up.swap(false, Ordering::Relaxed) {
            let then = match self.on_error {
                OnRedisError::Local => "counting limits in this process alone (redis.on_error = \"local\")",
                OnRedisError::Deny => "refusing limited requests with 503 (redis.on_error = \"deny\")",
            };
            tracing::warn!(url = %self.url, error, "redis does not answer: {then}");
        }
    }

    fn millis(&self) -> u64 {
        // Never 0, which means "up".
        self.clock.elapsed().as_millis() as u64 + 1
    }
}
