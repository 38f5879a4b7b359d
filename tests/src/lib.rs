//! Integration tests live in `tests/`; they build on `havip-lab`.
