//! `/v1/keys`: create (the secret is returned once), list, revoke. Admin only.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chronos_core::access::{Caller, Role};

use crate::AppState;
use crate::error::{ApiError, ApiResult, AuthErrors, BodyErrors, IdErrors};
use crate::json::{StrictJson, StrictPath};
use crate::views::{CreateKey, CreatedKey, KeyList, KeyView};

/// Create an API key. The secret is in this response only.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses(
        (status = 201, body = CreatedKey),
        AuthErrors, BodyErrors,
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictJson(req): StrictJson<CreateKey>,
) -> ApiResult<impl IntoResponse> {
    let role: Role = req.role.parse()?;
    let (key, secret) = state.chronos.create_key(&caller, &req.name, role).await?;
    Ok((StatusCode::CREATED, axum::Json(CreatedKey { key: key.into(), secret })))
}

/// All keys (without secrets), newest first.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses(
        (status = 200, body = KeyList),
        AuthErrors,
    ))]
pub async fn list(State(state): State<AppState>) -> ApiResult<axum::Json<KeyList>> {
    let keys = state.chronos.list_keys().await?;
    Ok(axum::Json(KeyList { keys: keys.into_iter().map(KeyView::from).collect() }))
}

/// Revoke a key; it stops working at once.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path, format = Uuid, description = "Key id (UUID)")),
    responses(
        (status = 204, description = "Revoked"),
        AuthErrors, IdErrors,
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    StrictPath(id): StrictPath<String>,
) -> ApiResult<StatusCode> {
    let id =
        uuid::Uuid::parse_str(&id).map_err(|_| ApiError::malformed(format!("{id:?} is not a key id (a UUID such as 0193a1b2-...)")))?;
    if !state.chronos.revoke_key(&caller, id).await? {
        return Err(ApiError::not_found(format!("no live key {id}")));
    }
    state.keys.forget_key_id(&id.to_string());
    Ok(StatusCode::NO_CONTENT)
}
