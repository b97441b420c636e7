//! `POST /publish`: an event to a user, a tenant, a room or everyone, on every node.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::{ApiError, ApiJson, parse_room, parse_tenant, parse_user};
use crate::domain::events::Target;
use crate::domain::ids::{MAX_ID_LEN, RoomKey};
use crate::domain::publish::RESERVED_EVENTS;
use crate::state::AppState;

/// A room id that is not a reserved `user:`/`tenant:` room, as the schema states it.
pub(super) const OPEN_ROOM_PATTERN: &str = "^(?!user:|tenant:)[A-Za-z0-9_.:-]{1,128}$";

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// One of `{ userId }`, `{ tenantId }`, `{ tenantId?, roomId }`, `{ all: true }`.
    #[schema(value_type = Object)]
    target: Value,
    /// Event name clients receive (not a Socket.IO reserved or gateway-owned name).
    #[schema(min_length = 1, max_length = 64)]
    event: String,
    /// Payload, sent as is (`null` when absent).
    #[serde(default)]
    #[schema(value_type = Value)]
    data: Value,
}

/// What the attributes above cannot say: the four target shapes, and the refused event names
/// (`parse_target` and `validate_event` enforce exactly this).
pub(super) fn refine_schema(doc: &mut Value) {
    let id = |max: usize| json!({ "type": "string", "minLength": 1, "maxLength": max });
    let tenant = json!({ "type": "string", "maxLength": MAX_ID_LEN });
    let room = json!({ "type": "string", "pattern": OPEN_ROOM_PATTERN });
    let shape = |props: Value, required: &[&str]| {
        json!({ "type": "object", "properties": props, "required": required,
                "additionalProperties": false })
    };
    let target = json!({ "oneOf": [
        shape(json!({ "userId": id(MAX_ID_LEN) }), &["userId"]),
        shape(json!({ "tenantId": id(MAX_ID_LEN) }), &["tenantId"]),
        shape(json!({ "tenantId": tenant, "roomId": room }), &["roomId"]),
        shape(json!({ "all": { "const": true } }), &["all"]),
    ]});
    if let Some(props) = doc.pointer_mut("/components/schemas/PublishRequest/properties") {
        props["target"] = target;
        props["event"]["not"] = json!({ "enum": RESERVED_EVENTS });
    }
}

fn parse_target(target: Value) -> Result<Target, ApiError> {
    let bad = || {
        ApiError::BadRequest(
            "target must be one of { userId }, { tenantId }, { tenantId?, roomId }, { all: true }"
                .into(),
        )
    };
    let Value::Object(t) = target else {
        return Err(bad());
    };
    let text = |t: &Map<String, Value>, k: &str| -> Result<Option<String>, ApiError> {
        match t.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::BadRequest(format!("target.{k} must be a string"))),
        }
    };
    if t.keys()
        .any(|k| !matches!(k.as_str(), "userId" | "tenantId" | "roomId" | "all"))
    {
        return Err(bad());
    }
    let (user, tenant, room) = (
        text(&t, "userId")?,
        text(&t, "tenantId")?,
        text(&t, "roomId")?,
    );
    let all = t.get("all");
    match (user, tenant, room, all) {
        (Some(u), None, None, None) => Ok(Target::User {
            user: parse_user(&u)?,
        }),
        (None, Some(tn), None, None) => match parse_tenant(Some(&tn))? {
            Some(tenant) => Ok(Target::Tenant { tenant }),
            None => Err(ApiError::BadRequest(
                "target.tenantId must not be empty".into(),
            )),
        },
        (None, tn, Some(r), None) => {
            let room = parse_room(&r)?;
            if room.reserved().is_some() {
                return Err(ApiError::BadRequest(
                    "user: and tenant: rooms are targeted with { userId } or { tenantId }".into(),
                ));
            }
            Ok(Target::Room {
                key: RoomKey::new(parse_tenant(tn.as_deref())?, room),
            })
        }
        (None, None, None, Some(Value::Bool(true))) => Ok(Target::All),
        _ => Err(bad()),
    }
}

/// Publish an event to connected clients.
#[utoipa::path(post, path = "/publish", request_body = PublishRequest,
    responses((status = 202, description = "Accepted for delivery on every node"),
              (status = 400, description = "Bad target, reserved event name"),
              (status = 401, description = "Missing or invalid API key")))]
pub async fn publish(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<PublishRequest>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let target = parse_target(req.target)?;
    app.publisher.publish(target, req.event, req.data).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "accepted": true })),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A target object made of the keys `parse_target` reads, with values of any JSON type.
    fn any_target() -> impl Strategy<Value = Value> {
        let value = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[A-Za-z0-9_.:-]{0,10}".prop_map(Value::String),
            "(user|tenant):[a-z]{0,3}".prop_map(Value::String),
            any::<String>().prop_map(Value::String),
            "t{127,130}".prop_map(Value::String),
            Just(json!({})),
        ];
        let key = prop_oneof![
            Just("userId"),
            Just("tenantId"),
            Just("roomId"),
            Just("all"),
            Just("other"),
        ];
        prop_oneof![
            prop::collection::btree_map(key, value.clone(), 0..4).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
            value,
        ]
    }

    /// The four shapes of PROTOCOL.md §7, written out independently of `parse_target`.
    fn expected(t: &Value) -> Option<&'static str> {
        let o = t.as_object()?;
        let id = |k: &str, empty_ok: bool| match o.get(k) {
            Some(Value::String(s)) => {
                let n = s.chars().count();
                (n <= 128 && (empty_ok || n > 0)).then_some(())
            }
            _ => None,
        };
        let room = || match o.get("roomId") {
            Some(Value::String(r)) => (!r.starts_with("user:")
                && !r.starts_with("tenant:")
                && (1..=128).contains(&r.len())
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b)))
            .then_some(()),
            _ => None,
        };
        let keys: Vec<&str> = o.keys().map(String::as_str).collect();
        match keys.as_slice() {
            ["userId"] => id("userId", false).map(|_| "user"),
            ["tenantId"] => id("tenantId", false).map(|_| "tenant"),
            ["roomId"] => room().map(|_| "room"),
            ["roomId", "tenantId"] => room().and(id("tenantId", true)).map(|_| "room"),
            ["all"] => (o.get("all") == Some(&Value::Bool(true))).then_some("all"),
            _ => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn targets_accept_exactly_the_four_shapes(t in any_target()) {
            let got = parse_target(t.clone()).ok().map(|t| match t {
                Target::User { .. } => "user",
                Target::Tenant { .. } => "tenant",
                Target::Room { .. } => "room",
                Target::All => "all",
                // Only the presence and notification services aim at these; a publish never
                // parses to them.
                Target::Presence { .. } => "presence",
                Target::UserInTenant { .. } => "user in tenant",
            });
            prop_assert_eq!(got, expected(&t), "target {}", t);
        }
    }

    #[test]
    fn targets_parse_and_mixed_ones_are_refused() {
        assert!(matches!(
            parse_target(json!({"userId": "u"})),
            Ok(Target::User { .. })
        ));
        assert!(matches!(
            parse_target(json!({"tenantId": "t"})),
            Ok(Target::Tenant { .. })
        ));
        assert!(matches!(
            parse_target(json!({"roomId": "r"})),
            Ok(Target::Room { .. })
        ));
        assert!(matches!(
            parse_target(json!({"roomId": "r", "tenantId": "t"})),
            Ok(Target::Room { .. })
        ));
        assert!(matches!(
            parse_target(json!({"all": true})),
            Ok(Target::All)
        ));
        for bad in [
            json!({"userId": "u", "tenantId": "t"}),
            json!({"all": false}),
            json!({}),
            json!({"userId": "u", "all": true}),
            json!({"roomId": "user:x"}),
            json!({"roomId": "bad room"}),
            json!("u"),
            json!({"other": 1}),
        ] {
            assert!(parse_target(bad.clone()).is_err(), "{bad}");
        }
    }
}
