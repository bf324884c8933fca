//! API tokens (admins only: everyone else gets the API's own 403): the
//! list, creating one with a role — its secret shown on the answer page
//! only, as the API shows it only once — and revoking.

use super::layout::{self, csrf_field, error_words, field_of, Nav, PageError, PageInfo};
use super::session::{ActionForm, Viewer};
use crate::api;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use airlift_protocol::management::{ApiToken, CreateTokenRequest, CreatedToken};
use airlift_protocol::state::Role;
use airlift_protocol::TokenId;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use maud::{html, Markup};
use serde::Deserialize;

/// The list's query: the outcome of a revocation, said once.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    revoked: Option<String>,
}

/// What the create form says, as typed, and what was refused.
#[derive(Debug, Default)]
struct Shown {
    name: String,
    role: Option<Role>,
    /// A refusal of the name (the API names the field).
    name_error: Option<String>,
    /// Any other refusal, shown at the top.
    error: Option<String>,
    /// A notice of what was done.
    done: Option<String>,
}

/// `GET /ui/tokens`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<ListQuery>,
) -> Response {
    if !viewer.can_administer() {
        return layout::admin_only(&viewer, "API tokens", Nav::Tokens, "manage API tokens");
    }
    let shown = Shown {
        done: query.revoked.map(|name| {
            format!("Revoked {name}: it no longer works, and its browsers are signed out.")
        }),
        ..Shown::default()
    };
    render(&state, &viewer, shown, StatusCode::OK).await
}

/// The tokens, through the API's list: its largest page (a server has a
/// handful of tokens, not a thousand).
async fn listed(
    state: &AppState,
    caller: &crate::auth::ApiCaller,
) -> Result<Vec<ApiToken>, crate::error::ApiError> {
    let query = api::TokenQuery {
        page: Some(1),
        per_page: Some(1000),
    };
    let Json(page) =
        api::list_tokens(State(state.clone()), caller.clone(), ApiQuery(query)).await?;
    Ok(page.items)
}

async fn render(state: &AppState, viewer: &Viewer, shown: Shown, status: StatusCode) -> Response {
    let tokens = match listed(state, &viewer.caller).await {
        Ok(tokens) => tokens,
        Err(error) => return PageError(error).into_response(),
    };
    let body = html! {
        @if let Some(done) = &shown.done { div.notice role="status" { (done) } }
        @if let Some(error) = &shown.error {
            div.notice.bad role="alert" { p { strong { "Refused: " } (error) } }
        }
        (create_form(viewer, &shown))
        h2 { "Tokens" }
        div.card { (table(viewer, &tokens)) }
    };
    let page = layout::page(
        viewer,
        PageInfo {
            title: "API tokens",
            nav: Nav::Tokens,
            live: None,
        },
        body,
    );
    (status, page).into_response()
}

fn create_form(viewer: &Viewer, shown: &Shown) -> Markup {
    html! {
        form.card method="post" action="/ui/tokens" {
            (csrf_field(viewer))
            h2 { "Create a token" }
            (create_fields(shown))
        }
    }
}

fn create_fields(shown: &Shown) -> Markup {
    let chosen = shown.role.unwrap_or(Role::Viewer);
    html! {
            div.filters {
                div {
                    label for="token-name" { "Name" }
                    input #token-name type="text" name="name" value=(shown.name) required
                        aria-invalid=[shown.name_error.as_ref().map(|_| "true")]
                        aria-describedby=(if shown.name_error.is_some() { "token-name-error" } else { "token-name-help" });
                    p.muted #token-name-help { "Who or what uses it, e.g. ci-release or alice." }
                    @if let Some(error) = &shown.name_error {
                        p.field-error #token-name-error role="alert" { (error) }
                    }
                }
                div {
                    label for="token-role" { "Role" }
                    select #token-role name="role" {
                        @for role in Role::ALL {
                            option value=(role) selected[*role == chosen] { (role) ": " (role_words(*role)) }
                        }
                    }
                }
                div { button type="submit" { "Create token" } }
            }
    }
}

fn role_words(role: Role) -> &'static str {
    match role {
        Role::Admin => "everything, tokens and the audit log too",
        Role::Operator => "uploads, devices and deployments",
        Role::Viewer => "reads only",
    }
}

fn table(viewer: &Viewer, tokens: &[ApiToken]) -> Markup {
    html! {
        table {
            thead { tr { th { "Name" } th { "Role" } th { "Created" } th { span.visually-hidden { "Revoke" } } } }
            tbody {
                @for token in tokens {
                    tr {
                        td {
                            (token.name)
                            @if token.id == viewer.caller.token_id { " " span.muted { "(you are signed in with it)" } }
                        }
                        td { (token.role) }
                        td { (layout::time(token.created_at)) }
                        td {
                            form.inline method="post" action=(format!("/ui/tokens/{}/revoke", token.id)) {
                                (csrf_field(viewer))
                                button.danger type="submit" aria-label=(format!("Revoke {}", token.name)) { "Revoke" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `POST /ui/tokens`: through the API's own create; the answer page shows
/// the secret this once.
pub async fn create(State(state): State<AppState>, form: ActionForm) -> Response {
    let name = form
        .fields
        .iter()
        .find(|(field, _)| field == "name")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    let role = match form.value("role").unwrap_or_default().parse::<Role>() {
        Ok(role) => role,
        Err(error) => {
            let shown = Shown {
                name,
                error: Some(format!("role: {error}")),
                ..Shown::default()
            };
            return render(&state, &form.viewer, shown, StatusCode::BAD_REQUEST).await;
        }
    };
    let request = CreateTokenRequest {
        name: name.clone(),
        role,
    };
    match api::create_token(
        State(state.clone()),
        form.viewer.caller.clone(),
        ApiJson(request),
    )
    .await
    {
        Ok((_, Json(created))) => created_page(&form.viewer, &created).into_response(),
        Err(error) => {
            let status = error.status();
            let words = error_words(&error);
            let mut shown = Shown {
                name,
                role: Some(role),
                ..Shown::default()
            };
            match field_of(&words) {
                Some(("name", words)) => shown.name_error = Some(words.to_owned()),
                _ => shown.error = Some(words),
            }
            render(&state, &form.viewer, shown, status).await
        }
    }
}

fn created_page(viewer: &Viewer, created: &CreatedToken) -> Markup {
    layout::page(
        viewer,
        PageInfo {
            title: "Token created",
            nav: Nav::Tokens,
            live: None,
        },
        created_body(created),
    )
}

fn created_body(created: &CreatedToken) -> Markup {
    html! {
        div.notice role="status" {
            p { strong { "Created " (created.token.name) " (" (created.token.role) ")." } }
            p { "Copy the token now: this is the only time it is shown. The server keeps only its hash." }
        }
        div.card {
            label for="token-secret" { "Token" }
            input #token-secret type="text" readonly value=(created.secret) aria-describedby="token-secret-help";
            p.muted #token-secret-help {
                "Select it and copy it (Ctrl+C or ⌘C), then keep it in your password manager or CI secrets. Use it with "
                code { "airlift server login URL --token TOKEN" } ", as " code { "Authorization: Bearer TOKEN" }
                ", or to sign in here."
            }
        }
        p { a href="/ui/tokens" { "Back to the tokens" } }
    }
}

/// `POST /ui/tokens/{id}/revoke`: through the API's own delete, which
/// refuses to revoke the last admin token.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: ActionForm,
) -> Response {
    let id: TokenId = match super::deployments::path_id(&id, "token") {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    let caller = form.viewer.caller.clone();
    let name = match listed(&state, &caller).await {
        Ok(tokens) => tokens.into_iter().find(|t| t.id == id).map(|t| t.name),
        Err(error) => return PageError(error).into_response(),
    };
    match api::delete_token(State(state.clone()), caller, ApiPath(id)).await {
        Ok(_) => {
            let name = name.unwrap_or_else(|| id.to_string());
            let name: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
            Redirect::to(&format!("/ui/tokens?revoked={name}")).into_response()
        }
        Err(error) => {
            let status = error.status();
            let shown = Shown {
                error: Some(error_words(&error)),
                ..Shown::default()
            };
            render(&state, &form.viewer, shown, status).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_on_the_answer_page_and_names_are_escaped() {
        let created = CreatedToken {
            token: ApiToken {
                id: TokenId::new(),
                name: "<script>ci</script>".into(),
                role: Role::Operator,
                created_at: chrono::Utc::now(),
            },
            secret: "alt_secret_value".into(),
        };
        let page = created_body(&created).into_string();
        assert!(page.contains(r#"value="alt_secret_value""#), "{page}");
        assert!(page.contains("only time it is shown"), "{page}");
        assert!(!page.contains("<script>ci"), "{page}");
    }

    #[test]
    fn a_refused_name_is_shown_beside_the_name_field_with_what_was_typed() {
        let shown = Shown {
            name: "   ".into(),
            role: Some(Role::Operator),
            name_error: Some("must be 1–128 characters".into()),
            ..Shown::default()
        };
        let form = create_fields(&shown).into_string();
        let input = form.find(r#"id="token-name""#).expect("input");
        let error = form.find(r#"id="token-name-error""#).expect("error");
        assert!(input < error);
        assert!(form.contains(r#"value="   ""#), "{form}");
        assert!(
            form.contains(r#"<option value="operator" selected>"#),
            "{form}"
        );
    }
}
