//! See `tests/e2e`.
