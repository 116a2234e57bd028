//! Test guest: always fails (panics, which traps).

use fnhost_sdk::{Request, Response};

fn handle(_req: Request) -> Response {
    panic!("fail: this function always fails");
}

fnhost_sdk::function!(handle);
