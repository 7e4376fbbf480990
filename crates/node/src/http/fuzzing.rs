//! Entry point for the fuzz target `http_inputs` (`fuzz/`): the parsers every HTTP request's
//! path, query string, headers and body go through before a handler acts on them. Hidden from
//! the docs; not an API.
//!
//! The property checked besides "never panics": every refusal is a 4xx. A parser that
//! answered a client's bad input with a 5xx would tell the client the server is broken and
//! make retrying clients hammer it.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};
use quorumdb_api as api;
use quorumdb_meta::auth::ContextKey;
use serde::de::DeserializeOwned;

use super::{context, item_key, json_body, level, query, write_id, ApiError};

/// The keys a fuzzed causality token is checked against.
const KEYS: [ContextKey; 2] = [ContextKey { id: 1, key: [7; 32] }, ContextKey { id: 2, key: [9; 32] }];

fn refused_with_4xx<T>(r: Result<T, ApiError>) {
    if let Err(e) = r {
        let status = e.status();
        assert!((400..500).contains(&status), "bad input answered {status}: {e}");
    }
}

fn body<T: DeserializeOwned>(b: &[u8]) {
    refused_with_4xx(json_body::<T>(Ok(Bytes::copy_from_slice(b))));
}

fn query_string<T: DeserializeOwned>(s: &str) {
    refused_with_4xx(query::<T>(&Some(s.to_owned())));
}

/// Runs one fuzz input. Byte 0 picks the parser; the rest is its input (as UTF-8 where the
/// parser takes text, lossily, as a path or query string arriving through hyper would be).
pub fn http_inputs(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    match which % 24 {
        0 => query_string::<api::ReadQuery>(&text),
        1 => query_string::<api::WriteQuery>(&text),
        2 => query_string::<api::DeleteQuery>(&text),
        3 => query_string::<api::InspectQuery>(&text),
        4 => query_string::<api::ScanQuery>(&text),
        5 => query_string::<api::RepairQuery>(&text),
        6 => query_string::<api::HotQuery>(&text),
        7 => query_string::<api::ReleaseQuery>(&text),
        8 => body::<api::PutBody>(rest),
        9 => body::<api::ChangeInfo>(rest),
        10 => body::<api::CommitRequest>(rest),
        11 => body::<api::TableInfo>(rest),
        12 => body::<api::LeaseRequest>(rest),
        13 => body::<api::AcquireRequest>(rest),
        14 => body::<api::CreateUser>(rest),
        15 => body::<api::CreateRole>(rest),
        16 => body::<api::GrantInfo>(rest),
        17 => body::<api::NewSink>(rest),
        18 => body::<api::NewTopic>(rest),
        19 => body::<api::FaultRules>(rest),
        // A table, partition key and sort key, split at the first two NULs.
        20 => {
            let mut parts = text.splitn(3, '\0');
            let (t, k, s) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next());
            refused_with_4xx(item_key(t, k, s));
        }
        // A causality token for a fixed item, with and without cluster keys.
        21 => {
            let Ok(item) = item_key("t", "k", None) else { unreachable!("a fixed valid key") };
            refused_with_4xx(context(&KEYS, &item, Some(&text)));
            refused_with_4xx(context(&[], &item, Some(&text)));
        }
        22 => {
            refused_with_4xx(level(Some(&text), "w"));
        }
        // An Idempotency-Key header (any bytes a header may hold) and the write_id parameter.
        _ => {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(rest) {
                headers.insert("idempotency-key", v);
            }
            refused_with_4xx(write_id(&headers, Some(&text)));
        }
    }
}
