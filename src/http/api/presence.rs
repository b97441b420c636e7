//! Who is online in a tenant: `GET /presence` (PROTOCOL.md §3, "Presence at scale").

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiQuery, parse_tenant, parse_user};
use crate::domain::presence_directory::UserPresence;
use crate::state::AppState;

/// Most user ids one request may name, and most online users one answer lists.
const MAX_USERS: usize = 1000;

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct PresenceQuery {
    /// Tenant; omitted or empty means the no-tenant scope, which has no presence.
    #[param(max_length = 128)]
    tenant_id: Option<String>,
    /// Comma-separated user ids (1 to 1000, each 1 to 128 characters without a comma): their
    /// state, offline included. Omitted: the tenant's online users.
    #[param(pattern = r"^[^,]{1,128}(,[^,]{1,128}){0,999}$")]
    user_ids: Option<String>,
    /// Without `userIds`: how many online users to list, 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// `{ users: { id: { status, since } }, truncated }`.
#[derive(Serialize, ToSchema)]
pub struct PresenceAnswer {
    users: BTreeMap<String, UserPresence>,
    /// Listing online users: there were more than `limit`. Always false with `userIds`.
    truncated: bool,
}

/// The presence of the named users, or the tenant's online users.
#[utoipa::path(get, path = "/presence", params(PresenceQuery),
    responses((status = 200, body = PresenceAnswer), (status = 400), (status = 401)))]
pub async fn presence(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PresenceQuery>,
) -> Result<Json<PresenceAnswer>, ApiError> {
    let tenant = parse_tenant(q.tenant_id.as_deref())?;
    let limit = match q.limit {
        None => 100,
        Some(n @ 1..=1000) => n as usize,
        Some(_) => return Err(ApiError::BadRequest("limit must be 1 to 1000".into())),
    };
    let (users, truncated) = match q.user_ids.as_deref() {
        Some(ids) => {
            let ids = ids
                .split(',')
                .map(parse_user)
                .collect::<Result<Vec<_>, _>>()?;
            if ids.len() > MAX_USERS {
                return Err(ApiError::BadRequest(format!(
                    "userIds names at most {MAX_USERS} users"
                )));
            }
            (app.presence.lookup(tenant.as_ref(), &ids).await?, false)
        }
        None => app.presence.online(tenant.as_ref(), limit).await?,
    };
    let users = users.into_iter().map(|(u, p)| (u.to_string(), p)).collect();
    Ok(Json(PresenceAnswer { users, truncated }))
}
