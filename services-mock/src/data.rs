//! Deterministic mock data: every record is a pure function of its id.

use serde_json::{Value, json};

/// Users exist for ids `1..=MAX_USER`.
pub const MAX_USER: u64 = 10_000;
/// Products exist for `SKU-0001..=SKU-{MAX_SKU}`.
pub const MAX_SKU: u64 = 100;

const FIRST: [&str; 10] =
    ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Dennis", "Frances", "Ken"];
const LAST: [&str; 10] =
    ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Ritchie", "Allen", "Thompson"];
const CITIES: [(&str, &str); 5] =
    [("Berlin", "DE"), ("Lisbon", "PT"), ("Utrecht", "NL"), ("Lyon", "FR"), ("Turin", "IT")];
const TIERS: [&str; 3] = ["standard", "silver", "gold"];
const ADJECTIVES: [&str; 10] =
    ["Compact", "Classic", "Rugged", "Silent", "Smart", "Bright", "Swift", "Solid", "Urban", "Tiny"];
const NOUNS: [&str; 10] =
    ["Kettle", "Lamp", "Backpack", "Headphones", "Mug", "Charger", "Notebook", "Speaker", "Bottle", "Watch"];
const CATEGORIES: [&str; 4] = ["home", "travel", "audio", "office"];

fn pick<T: Copy>(items: &[T], n: u64) -> T {
    items[(n % items.len() as u64) as usize]
}

/// Money as a JSON number with two decimals, computed from integer cents so it prints exactly.
fn money(cents: u64) -> Value {
    json!(cents as f64 / 100.0)
}

/// Parses a user id, `None` if it is not one of ours.
pub fn user_id(raw: &str) -> Option<u64> {
    raw.parse().ok().filter(|id| (1..=MAX_USER).contains(id))
}

/// The partner account a user belongs to: users 1–100 are the demo account's (the shipped
/// partner keys'), then each block of 100 is another account (`acct-2` holds 101–200, …).
pub fn account_of(user: u64) -> String {
    match user {
        ..=100 => "demo".to_owned(),
        _ => format!("acct-{}", (user - 1) / 100 + 1),
    }
}

/// A full user profile (a few hundred bytes on purpose: mobile trims it).
pub fn user(id: u64) -> Value {
    let (city, country) = pick(&CITIES, id);
    json!({
        "id": id,
        "account": account_of(id),
        "displayName": format!("{} {}", pick(&FIRST, id), pick(&LAST, id / 10)),
        "email": format!("{}.{}@example.com", pick(&FIRST, id).to_lowercase(), id),
        "avatarUrl": format!("https://cdn.example.com/avatars/{id}.png"),
        "memberSince": format!("{}-{:02}-{:02}", 2015 + id % 10, 1 + id % 12, 1 + id % 28),
        "tier": pick(&TIERS, id),
        "address": {
            "street": format!("{} Example Street", 1 + id % 200),
            "city": city,
            "postcode": format!("{:05}", (id * 7919) % 100_000),
            "country": country,
        },
        "preferences": {
            "language": "en",
            "currency": "EUR",
            "marketingEmails": id.is_multiple_of(2),
            "theme": if id.is_multiple_of(3) { "dark" } else { "light" },
        },
    })
}

/// How many orders a user has.
pub fn order_count(user: u64) -> u64 {
    3 + user % 5
}

/// Parses an order id (`user * 100 + n`, `n` in `1..=order_count(user)`).
pub fn order_id(raw: &str) -> Option<(u64, u64)> {
    parse_order_id(raw).filter(|(user, n)| *n <= order_count(*user))
}

/// Splits any well-formed order id of a known user into `(user, n)`, placed orders included.
pub fn parse_order_id(raw: &str) -> Option<(u64, u64)> {
    let id: u64 = raw.parse().ok()?;
    let (user, n) = (id / 100, id % 100);
    (user_id(&user.to_string()).is_some() && n >= 1).then_some((user, n))
}

/// The sku string for a product index.
pub fn sku(index: u64) -> String {
    format!("SKU-{index:04}")
}

/// Parses a sku, `None` if it is not in the catalog.
pub fn sku_index(raw: &str) -> Option<u64> {
    raw.strip_prefix("SKU-")?.parse().ok().filter(|i| (1..=MAX_SKU).contains(i))
}

fn price_cents(index: u64) -> u64 {
    499 + (index * 7_919) % 20_000
}

/// One order of a user, `n` counting from 1 (oldest) to `order_count(user)` (newest).
pub fn order(user: u64, n: u64) -> Value {
    let count = order_count(user);
    let items: Vec<(u64, u64)> =
        (0..1 + (user + n) % 3).map(|i| (1 + (user * 31 + n * 17 + i * 7) % MAX_SKU, 1 + (user + n + i) % 3)).collect();
    let status = match count - n {
        0 => "processing",
        1 => "shipped",
        _ => "delivered",
    };
    let placed_at =
        format!("2026-{:02}-{:02}T{:02}:{:02}:00Z", 3 + n, 1 + (user * 7 + n * 3) % 28, (user + n) % 24, (n * 13) % 60);
    order_record(user, n, status, &placed_at, &items)
}

/// An order placed through `POST /orders`: the `n`th order of `user`, of `(product index,
/// quantity)` lines, placed after every generated one.
pub fn placed_order(user: u64, n: u64, items: &[(u64, u64)]) -> Value {
    let minutes = n - order_count(user);
    let placed_at = format!("2026-12-01T{:02}:{:02}:00Z", minutes / 60, minutes % 60);
    order_record(user, n, "processing", &placed_at, items)
}

/// The most orders a user can have: ids are `user * 100 + n`.
pub const MAX_ORDERS_PER_USER: u64 = 99;

fn order_record(user: u64, n: u64, status: &str, placed_at: &str, items: &[(u64, u64)]) -> Value {
    let total: u64 = items.iter().map(|(index, qty)| qty * price_cents(*index)).sum();
    json!({
        "id": user * 100 + n,
        "userId": user,
        "status": status,
        "total": money(total),
        "currency": "EUR",
        "placedAt": placed_at,
        "items": items.iter().map(|(index, qty)| json!({
            "sku": sku(*index),
            "quantity": qty,
            "unitPrice": money(price_cents(*index)),
        })).collect::<Vec<_>>(),
    })
}

/// A user's orders, newest first.
pub fn orders(user: u64, limit: usize) -> Vec<Value> {
    (1..=order_count(user)).rev().take(limit).map(|n| order(user, n)).collect()
}

/// The unread notification count of a user.
pub fn unread_count(user: u64) -> u64 {
    (user * 7) % 10
}

/// A user's latest notifications, newest first; the first `unread_count` are unread.
pub fn notifications(user: u64, limit: usize) -> Vec<Value> {
    const KINDS: [(&str, &str); 4] = [
        ("order_shipped", "Your order has shipped"),
        ("price_drop", "A product you watch is cheaper"),
        ("review_reply", "Someone replied to your review"),
        ("promotion", "A deal picked for you"),
    ];
    let unread = unread_count(user);
    (0..12u64)
        .take(limit)
        .map(|i| {
            let (kind, title) = pick(&KINDS, user + i);
            json!({
                "id": format!("n-{user}-{}", 12 - i),
                "kind": kind,
                "title": title,
                "createdAt": format!("2026-11-{:02}T{:02}:00:00Z", 27 - i, (user + i) % 24),
                "read": i >= unread,
            })
        })
        .collect()
}

/// A catalog product.
pub fn product(index: u64) -> Value {
    json!({
        "sku": sku(index),
        "name": format!("{} {}", pick(&ADJECTIVES, index), pick(&NOUNS, index / 10)),
        "description": format!("A dependable {} for every day. Model {index}.", pick(&NOUNS, index / 10).to_lowercase()),
        "price": money(price_cents(index)),
        "currency": "EUR",
        "category": pick(&CATEGORIES, index),
        "imageUrl": format!("https://cdn.example.com/products/{}.jpg", sku(index)),
        "related": (1..=3).map(|k| sku(1 + (index + k * 11 - 1) % MAX_SKU)).collect::<Vec<_>>(),
    })
}

/// The stock level of a product.
pub fn stock(index: u64) -> Value {
    let available = (index * 13) % 25;
    json!({
        "sku": sku(index),
        "available": available,
        "inStock": available > 0,
        "warehouse": pick(&["BER-1", "LIS-2", "AMS-1"], index),
    })
}

/// The reviews of a product: a summary and the first `limit` reviews.
pub fn reviews(index: u64, limit: usize) -> Value {
    let count = 2 + index % 9;
    let ratings: Vec<u64> = (0..count).map(|i| 1 + (index * 3 + i * 5) % 5).map(|r| r.max(3)).collect();
    let average = (ratings.iter().sum::<u64>() as f64 / count as f64 * 10.0).round() / 10.0;
    json!({
        "sku": sku(index),
        "averageRating": average,
        "count": count,
        "reviews": ratings.iter().enumerate().take(limit).map(|(i, rating)| json!({
            "id": format!("r-{index}-{i}"),
            "author": format!("{} {}.", pick(&FIRST, index + i as u64), &pick(&LAST, index * 3 + i as u64)[..1]),
            "rating": rating,
            "title": if *rating >= 4 { "Does what it says" } else { "Fine, not great" },
            "createdAt": format!("2026-10-{:02}T12:00:00Z", 1 + (index + i as u64) % 28),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_id_same_record() {
        assert_eq!(user(42), user(42));
        assert_ne!(user(42), user(43));
        assert_eq!(orders(42, 10), orders(42, 10));
    }

    #[test]
    fn orders_are_newest_first_and_resolvable() {
        let list = orders(42, 10);
        assert_eq!(list.len() as u64, order_count(42));
        let dates: Vec<&str> = list.iter().map(|o| o["placedAt"].as_str().unwrap()).collect();
        let mut sorted = dates.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(dates, sorted);
        let id = list[0]["id"].as_u64().unwrap().to_string();
        assert_eq!(order_id(&id), Some((42, order_count(42))));
        assert_eq!(order_id("4299"), None);
    }

    #[test]
    fn ids_outside_the_data_set_are_unknown() {
        assert_eq!(user_id("0"), None);
        assert_eq!(user_id("abc"), None);
        assert_eq!(user_id("10001"), None);
        assert_eq!(sku_index("SKU-0101"), None);
        assert_eq!(sku_index("SKU-0007"), Some(7));
    }

    #[test]
    fn totals_are_exact_cents() {
        for n in 1..=order_count(42) {
            let text = order(42, n)["total"].to_string();
            let decimals = text.split('.').nth(1).map_or(0, str::len);
            assert!(decimals <= 2, "{text}");
        }
    }
}
