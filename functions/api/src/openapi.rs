//! The OpenAPI document, generated from the handlers' annotations and the view types, so the
//! spec cannot drift from the code.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{dlq, flows, jobs, keys, queues, schedules, system, tasks};

#[derive(OpenApi)]
#[openapi(
    info(title = "Chronos", description = "Distributed background-task scheduler. Every /v1 call needs `Authorization: Bearer <key>`; errors are RFC 9457 problem+json."),
    paths(
        tasks::create, tasks::create_batch, tasks::get_one, tasks::list, tasks::attempts, tasks::dependencies, tasks::cancel, tasks::retry,
        flows::create,
        schedules::create, schedules::list, schedules::preview, schedules::get_one, schedules::update, schedules::delete,
        schedules::pause, schedules::resume, schedules::trigger,
        queues::list, queues::update, queues::pause, queues::resume,
        dlq::list, dlq::redrive_one, dlq::redrive_all,
        jobs::create, jobs::list, jobs::get_one, jobs::cancel,
        keys::create, keys::list, keys::revoke,
        system::healthz, system::metrics,
    ),
    // The payloads of the built-in kinds (`sleep`, `fail`, `http`, `email`), checked at submit:
    // a task of one of these names whose payload does not match gets a 422 naming the field.
    components(schemas(
        crate::error::Problem,
        chronos_core::builtin::SleepPayload, chronos_core::builtin::FailPayload,
        chronos_core::builtin::HttpPayload, chronos_core::builtin::EmailPayload, chronos_core::builtin::Recipients,
    )),
    modifiers(&Security),
    tags((name = "tasks"), (name = "schedules", description = "Recurring schedules: cron expression, time zone, task template"), (name = "queues"), (name = "dlq", description = "Dead-letter queue"), (name = "jobs", description = "Bulk operations in the background: redrive, cancel or retry by filter"), (name = "keys", description = "API keys (admin)"), (name = "system"))
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let comps = doc.components.get_or_insert_with(Default::default);
        comps.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        // Every /v1 operation requires the key.
        for (path, item) in doc.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            for op in [&mut item.get, &mut item.post, &mut item.patch, &mut item.delete].into_iter().flatten() {
                op.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new("bearer", Vec::<String>::new())]);
            }
        }
    }
}

pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
