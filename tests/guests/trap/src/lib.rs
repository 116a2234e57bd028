//! Test guest: panics with a recognisable message, which traps the instance.

use fnhost_sdk::{Request, Response};

fn handle(_req: Request) -> Response {
    panic!("trap: guest panicked on purpose");
}

fnhost_sdk::function!(handle);
