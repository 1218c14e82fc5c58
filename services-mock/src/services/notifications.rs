//! notifications: `GET /unread-count/{userId}`, `GET /notifications?user={id}&limit={n}`, and
//! `POST /notifications/{userId}/read` (marks every notification read); and `GET /events`, server-sent
//! events (`streams.rs`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::data;

/// The users who have read everything since start (bounded by the number of users).
type ReadAll = Arc<Mutex<HashSet<u64>>>;

pub(crate) fn router() -> Router {
    Router::new()
        .route("/unread-count/{user}", get(unread_count_get))
        .route("/notifications", get(notifications_list))
        .route("/notifications/{user}/read", post(notifications_read))
        .route("/events", get(super::streams::events_get))
        .route("/ws", get(super::streams::ws_get))
        .with_state(ReadAll::default())
}

fn has_read_all(read: &ReadAll, user: u64) -> bool {
    read.lock().unwrap_or_else(PoisonError::into_inner).contains(&user)
}

async fn unread_count_get(State(read): State<ReadAll>, Path(raw): Path<String>) -> Response {
    match data::user_id(&raw) {
        Some(user) => {
            let count = if has_read_all(&read, user) { 0 } else { data::unread_count(user) };
            Json(json!({ "count": count })).into_response()
        }
        None => super::not_found("user", &raw),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    user: Option<String>,
    limit: Option<usize>,
}

async fn notifications_list(State(read): State<ReadAll>, query: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let Ok(Query(ListQuery { user: Some(raw), limit })) = query else {
        return super::error(StatusCode::BAD_REQUEST, "missing `user` query parameter");
    };
    let Some(user) = data::user_id(&raw) else {
        return super::not_found("user", &raw);
    };
    let mut list = data::notifications(user, super::limit(limit));
    if has_read_all(&read, user) {
        for notification in &mut list {
            notification["read"] = Value::Bool(true);
        }
    }
    Json(list).into_response()
}

async fn notifications_read(State(read): State<ReadAll>, Path(raw): Path<String>) -> Response {
    match data::user_id(&raw) {
        Some(user) => {
            read.lock().unwrap_or_else(PoisonError::into_inner).insert(user);
            Json(json!({ "count": 0 })).into_response()
        }
        None => super::not_found("user", &raw),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn send(app: &Router, method: &str, uri: &str) -> (StatusCode, Value) {
        let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn reading_all_clears_the_count_and_marks_the_list_for_that_user_only() {
        let app = router();
        assert_ne!(data::unread_count(42), 0);
        assert_eq!(send(&app, "POST", "/notifications/42/read").await, (StatusCode::OK, json!({"count": 0})));
        assert_eq!(send(&app, "GET", "/unread-count/42").await.1, json!({"count": 0}));
        let (_, list) = send(&app, "GET", "/notifications?user=42&limit=5").await;
        assert!(list.as_array().unwrap().iter().all(|n| n["read"] == true));
        assert_eq!(send(&app, "GET", "/unread-count/43").await.1, json!({"count": data::unread_count(43)}));
        assert_eq!(send(&app, "POST", "/notifications/0/read").await.0, StatusCode::NOT_FOUND);
    }
}
