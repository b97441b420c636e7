//! Property tests of the decoders that read client input on the socket path: the `message`
//! envelope, room arguments and room ids, user and tenant ids, and where the token comes from.
//! Each decoder must never panic, whatever JSON or text arrives, and accept exactly the
//! contract's grammar (PROTOCOL.md §2, §4, §5), written out again here independently.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::domain::error::DomainError;
use crate::domain::ids::{RoomId, TenantId, UserId};
use crate::domain::rooms::RoomPolicy;
use crate::socket::connect::extract_token;
use crate::socket::messages::envelope;
use crate::socket::rooms::room_arg;

/// Any JSON value, nested a few levels, with keys the decoders look for mixed in.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        room_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            Just("type".to_owned()),
            Just("data".to_owned()),
            Just("roomId".to_owned()),
            Just("token".to_owned()),
            Just("since".to_owned()),
            any::<String>(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Text near the room grammar: its alphabet, a few characters outside it, lengths around 128.
fn room_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.:-]{0,130}",
        "[A-Za-z0-9_.:/ é\u{0}-]{0,12}",
        "(user|tenant|private):[A-Za-z0-9_.:-]{0,8}",
        any::<String>(),
    ]
}

/// The contract's room id (§4), independently of `RoomId::parse`.
fn is_room_id(s: &str) -> bool {
    let n = s.chars().count();
    (1..=128).contains(&n)
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
}

fn parts(authorization: Option<&str>, query: Option<&str>) -> http::request::Parts {
    let uri = match query {
        Some(q) => format!("/socket.io/?{q}"),
        None => "/socket.io/".to_owned(),
    };
    let mut req = http::Request::builder().uri(uri);
    if let Some(a) = authorization {
        req = req.header(http::header::AUTHORIZATION, a);
    }
    req.body(()).expect("a valid request").into_parts().0
}

/// Query values a URI can carry as they are: unreserved characters only.
fn query_value() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~-]{0,12}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn envelope_accepts_exactly_objects_with_a_string_type(v in any_json()) {
        let got = envelope(Some(v.clone()));
        match v.as_object().map(|o| (o.get("type"), o.get("data"))) {
            Some((Some(Value::String(kind)), data)) => {
                let (k, d) = got.expect("an object with a string type is accepted");
                prop_assert_eq!(&k, kind);
                prop_assert_eq!(d, data.cloned().unwrap_or(Value::Null));
            }
            _ => prop_assert!(matches!(got, Err(DomainError::InvalidPayload(_)))),
        }
    }

    #[test]
    fn envelope_without_data_is_invalid(_x in 0..1u8) {
        prop_assert!(matches!(envelope(None), Err(DomainError::InvalidPayload(_))));
    }

    #[test]
    fn room_arg_sorts_payloads_as_the_contract_says(v in any_json()) {
        let got = room_arg(Some(v.clone()), "join_room");
        match &v {
            Value::Object(o) => match o.get("roomId") {
                Some(Value::String(room)) => {
                    let (obj, r) = got.expect("an object with a string roomId");
                    prop_assert_eq!(&r, room);
                    prop_assert_eq!(&obj, o);
                }
                _ => prop_assert!(matches!(got, Err(DomainError::InvalidRoom))),
            },
            _ => prop_assert!(matches!(got, Err(DomainError::InvalidPayload(_)))),
        }
    }

    #[test]
    fn room_ids_are_exactly_the_contract_grammar(s in room_text()) {
        match RoomPolicy::parse(&s) {
            Ok(room) => {
                prop_assert!(is_room_id(&s), "accepted {:?}", s);
                prop_assert_eq!(room.as_str(), s.as_str());
                prop_assert_eq!(room.is_private(), s.starts_with("private:"));
                prop_assert_eq!(
                    room.reserved().is_some(),
                    s.starts_with("user:") || s.starts_with("tenant:")
                );
            }
            Err(e) => {
                prop_assert!(!is_room_id(&s), "refused {:?}", s);
                prop_assert!(matches!(e, DomainError::InvalidRoom));
            }
        }
    }

    #[test]
    fn valid_room_ids_round_trip(s in "[A-Za-z0-9_.:-]{1,128}") {
        let room = RoomId::parse(&s).expect("in the grammar");
        prop_assert_eq!(room.to_string(), s.clone());
        let back: RoomId = serde_json::from_value(serde_json::to_value(&room).unwrap()).unwrap();
        prop_assert_eq!(back, room);
    }

    #[test]
    fn user_ids_are_1_to_128_characters_without_nul(s in prop_oneof![any::<String>(), ".{120,130}", "é{0,130}", "a{0,3}\\x00a{0,3}"]) {
        let n = s.chars().count();
        match UserId::parse(&s) {
            Some(u) => {
                prop_assert!((1..=128).contains(&n));
                prop_assert_eq!(u.as_str(), s.as_str());
                let back: UserId = serde_json::from_value(json!(u.as_str())).unwrap();
                prop_assert_eq!(back, u);
            }
            None => prop_assert!(n == 0 || n > 128 || s.contains('\0')),
        }
    }

    #[test]
    fn tenant_ids_are_optional_and_at_most_128_characters_without_nul(s in prop_oneof![any::<String>(), "t{120,130}", "t{0,3}\\x00t{0,3}"]) {
        let n = s.chars().count();
        match TenantId::parse_optional(Some(&s)) {
            Ok(None) => prop_assert!(s.is_empty()),
            Ok(Some(t)) => {
                prop_assert!((1..=128).contains(&n));
                prop_assert_eq!(t.as_str(), s.as_str());
            }
            Err(_) => prop_assert!(n > 128 || s.contains('\0')),
        }
        prop_assert_eq!(TenantId::parse_optional(None), Ok(None));
    }

    #[test]
    fn the_first_present_token_source_wins(
        scheme in prop_oneof![Just("Bearer"), Just("bearer"), Just("Basic"), Just("")],
        header_token in prop::option::of("[ ]{0,2}[A-Za-z0-9._-]{0,10}[ ]{0,2}"),
        query_tokens in prop::collection::vec(query_value(), 0..3),
        other in query_value(),
        auth in prop::option::of(any_json()),
    ) {
        let authorization = header_token.as_ref().map(|t| format!("{scheme} {t}"));
        let mut query: Vec<String> = vec![format!("EIO=4&other={other}")];
        query.extend(query_tokens.iter().map(|t| format!("token={t}")));
        let query = query.join("&");
        let got = extract_token(&parts(authorization.as_deref(), Some(&query)), auth.as_ref());

        let from_header = header_token
            .as_deref()
            .map(str::trim)
            .filter(|t| scheme.eq_ignore_ascii_case("bearer") && !t.is_empty());
        let from_query = query_tokens.iter().find(|t| !t.is_empty());
        let from_auth = auth
            .as_ref()
            .and_then(|a| a.get("token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        let want = from_header
            .map(str::to_owned)
            .or_else(|| from_query.cloned())
            .or_else(|| from_auth.map(str::to_owned));
        prop_assert_eq!(got, want);
    }

    #[test]
    fn token_extraction_never_panics_on_any_query_or_header(
        header in prop::option::of("[ -~]{0,40}"),
        query in "[ -~&=%]{0,60}",
    ) {
        // Only inputs `http` itself accepts as a request reach the middleware.
        let uri = format!("/socket.io/?{query}");
        if uri.parse::<http::Uri>().is_err() {
            return Ok(());
        }
        let mut req = http::Request::builder().uri(uri);
        if let Some(h) = &header {
            if http::HeaderValue::from_str(h).is_err() {
                return Ok(());
            }
            req = req.header(http::header::AUTHORIZATION, h.as_str());
        }
        let parts = req.body(()).unwrap().into_parts().0;
        if let Some(t) = extract_token(&parts, None) {
            prop_assert!(!t.is_empty());
        }
    }
}
