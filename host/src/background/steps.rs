//! A background attempt's durable steps, kept in the queue under the attempt's claim: what
//! the engine's `fnhost:function/steps` calls read and write.

use std::sync::Arc;

use futures::FutureExt as _;
use futures::future::BoxFuture;

use crate::queue::{Claimed, PutStep, Queue};
use crate::workflow::{Recorded, StepStore};

/// The steps of the invocation `claim` names, bounded by its function's limits.
pub(super) struct QueueSteps {
    queue: Queue,
    id: String,
    token: i64,
    /// The wait the invocation was suspended in: step, began, times out (ms).
    wait: Option<(String, i64, i64)>,
    max_steps: u32,
    max_step_size: u64,
}

impl QueueSteps {
    pub(super) fn for_claim(
        queue: &Queue,
        claim: &Claimed,
        limits: (u32, u64),
    ) -> Arc<dyn StepStore> {
        Arc::new(QueueSteps {
            queue: queue.clone(),
            id: claim.id.clone(),
            token: claim.token,
            wait: claim.wait.clone(),
            max_steps: limits.0,
            max_step_size: limits.1,
        })
    }

    async fn record(
        &self,
        name: &str,
        value: Recorded,
    ) -> anyhow::Result<Result<Recorded, String>> {
        let size = value.as_ref().map_or(0, Vec::len) as u64;
        if size > self.max_step_size {
            return Ok(Err(format!(
                "step {name:?} is {size} bytes, over max_step_size = {}",
                self.max_step_size
            )));
        }
        let put = self
            .queue
            .put_step((&self.id, self.token), name, value, self.max_steps)
            .await?;
        Ok(match put {
            PutStep::Stands(value) => Ok(value),
            PutStep::TooMany(max) => Err(format!(
                "step {name:?} not recorded: the invocation holds max_steps = {max} steps"
            )),
            // The attempt lost its claim: it must not go on as if the step were recorded.
            PutStep::Fenced => anyhow::bail!("the attempt's lease was taken over"),
        })
    }
}

impl StepStore for QueueSteps {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Recorded>>> {
        async move { Ok(self.queue.step(&self.id, name).await?) }.boxed()
    }

    fn put<'a>(
        &'a self,
        name: &'a str,
        value: Recorded,
    ) -> BoxFuture<'a, anyhow::Result<Result<Recorded, String>>> {
        self.record(name, value).boxed()
    }

    fn waiting(&self, name: &str) -> Option<(i64, i64)> {
        let (step, since, until) = self.wait.as_ref()?;
        (step == name).then_some((*since, *until))
    }
}
