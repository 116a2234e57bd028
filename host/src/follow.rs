//! `serve --deployed`: the node serves the published deploy of its queue and follows every
//! publish — woken by the publish itself (`NOTIFY` on PostgreSQL; at once on this node), and
//! checking once a second besides, so a lost notification costs at most a second. The new
//! deploy's table, settings and rules are swapped in whole, as `--watch` does: requests and
//! attempts under way finish on the version they started with. Schedules follow the deploy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::deploys::{Deploys, Loaded};
use crate::functions::{self, Function};
use crate::http::App;
use crate::queue::Queue;

/// How often the published deploy is read even without a notification.
pub const POLL: Duration = Duration::from_secs(1);

/// The schedules of the functions served now: restarted with every deploy.
pub struct Schedules {
    queue: Queue,
    shutdown: CancellationToken,
    running: Option<CancellationToken>,
}

impl Schedules {
    /// None running yet.
    pub fn new(queue: Queue, shutdown: CancellationToken) -> Schedules {
        Schedules {
            queue,
            shutdown,
            running: None,
        }
    }

    /// Stops the schedules of the previous functions and starts those of `functions`.
    pub fn restart(&mut self, functions: Vec<Arc<Function>>) {
        if let Some(previous) = self.running.take() {
            previous.cancel();
        }
        let token = self.shutdown.child_token();
        tokio::spawn(crate::background::scheduler::run(
            self.queue.clone(),
            functions,
            token.clone(),
        ));
        self.running = Some(token);
    }
}

/// Puts `loaded` in force for every later request and attempt, and its schedules.
pub fn swap(app: &App, schedules: &mut Schedules, loaded: &Loaded) {
    let (cors, rules) = (loaded.cors.clone(), loaded.rules.clone());
    app.serve(loaded.table.clone(), cors, rules);
    schedules.restart(loaded.table.functions.clone());
    crate::metrics::deploy_served(loaded.table.deploy.as_deref());
}

/// Serves the deploy published now (none: nothing, said once), then every one published
/// after it, until `shutdown`.
pub async fn run(
    app: Arc<App>,
    deploys: Arc<Deploys>,
    mut schedules: Schedules,
    shutdown: CancellationToken,
) {
    let queue = deploys.queue().clone();
    let mut serving: Option<String> = app.table.current().deploy.clone();
    let mut said_none = serving.is_some();
    loop {
        let notified = queue.publish_notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match queue.published().await {
            Ok(Some(p)) if serving.as_deref() != Some(p.deploy.as_str()) => {
                let started = Instant::now();
                match follow_one(&app, &deploys, &mut schedules, &p.deploy).await {
                    Ok(()) => {
                        tracing::info!(
                            "serving deploy {} (publish #{}) in {} ms",
                            p.deploy,
                            p.generation,
                            started.elapsed().as_millis()
                        );
                        print!("{}", functions::print_table(&app.table.current()));
                        serving = Some(p.deploy);
                    }
                    Err(e) => tracing::error!(
                        "cannot serve deploy {}: {e:#}; still serving the previous one",
                        p.deploy
                    ),
                }
            }
            Ok(None) if !said_none => {
                tracing::warn!("no deploy is published yet: serving nothing until `fnhost deploy`");
                said_none = true;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read the published deploy: {e}"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = &mut notified => {},
            () = tokio::time::sleep(POLL) => {},
        }
    }
}

async fn follow_one(
    app: &App,
    deploys: &Deploys,
    schedules: &mut Schedules,
    id: &str,
) -> anyhow::Result<()> {
    let loaded = deploys.load(id).await?;
    swap(app, schedules, &loaded);
    Ok(())
}
