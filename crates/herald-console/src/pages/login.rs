//! The sign-in page.

use maud::{Markup, html};

use super::layout;

pub fn page(csrf: &str, problem: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        None,
        html! {
            h1 { "Sign in" }
            p { "Sign in with a Herald API key (" code { "hrk_…" } "). The console keeps it on the server; \
                 your browser only gets a session cookie. What you can see and do is what the key may: \
                 a read-scoped key sees no actions, a tenant's key sees only that tenant." }
            @if let Some(problem) = problem {
                p.error role="alert" { (problem) }
            }
            form.card method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="token" { "API key" }
                input #token type="password" name="token" autocomplete="off" required
                    placeholder="hrk_…" size="60";
                button type="submit" #sign-in { "Sign in" }
            }
        },
    )
}
