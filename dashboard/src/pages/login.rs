//! `GET /login`, `POST /login` (field `key`: an API key), `POST /logout`.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use crate::DashState;
use crate::error::PageError;
use crate::session::{self, Session, local_path};
use crate::ui;

#[derive(Debug, Deserialize)]
pub struct Next {
    next: Option<String>,
}

fn login_page(next: &str, error: Option<&str>) -> Markup {
    ui::bare(
        "Sign in",
        html! {
            section.card.login {
                h1 { "Sign in" }
                p.muted { "Use an API key. Its role decides what you can see and do here." }
                @if let Some(e) = error { div.flash.err role="alert" { (e) } }
                form method="post" action="/login" {
                    input type="hidden" name="next" value=(next);
                    label for="key" { "API key" }
                    input #key type="password" name="key" autocomplete="current-password" required autofocus placeholder="chk_…" spellcheck="false";
                    button.btn.primary.wide type="submit" { "Sign in" }
                }
                p.hint { "Keys are created with " code { "POST /v1/keys" } "; " code { "scripts/dev" } " prints an admin key." }
            }
        },
    )
}

pub async fn form(s: Option<Session>, Query(q): Query<Next>) -> Response {
    let next = local_path(q.next.as_deref(), "/");
    if s.is_some() {
        return Redirect::to(&next).into_response();
    }
    login_page(&next, None).into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    key: String,
    next: Option<String>,
}

pub async fn submit(State(state): State<DashState>, Form(f): Form<LoginForm>) -> Result<Response, PageError> {
    let next = local_path(f.next.as_deref(), "/");
    let key = f.key.trim();
    let caller = if key.is_empty() { None } else { session::authenticate(&state, key).await? };
    let Some(caller) = caller else {
        tracing::info!("dashboard: sign-in refused (unknown or revoked key)");
        return Ok(
            (StatusCode::UNAUTHORIZED, login_page(&next, Some("That key is not valid: unknown, mistyped or revoked."))).into_response()
        );
    };
    let token = session::create(&state, &caller, key).await?;
    tracing::info!(key_id = %caller.key_id, role = %caller.role, "dashboard: signed in");
    let mut r = Redirect::to(&next).into_response();
    r.headers_mut().append(header::SET_COOKIE, session::session_cookie(&state, Some(&token)));
    Ok(r)
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(State(state): State<DashState>, s: Session, Form(f): Form<LogoutForm>) -> Result<Response, PageError> {
    s.check_csrf(&f.csrf)?;
    session::destroy(&state, &s).await?;
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().append(header::SET_COOKIE, session::session_cookie(&state, None));
    Ok(r)
}
