//! The real Docker Engine for tests and benches: the client (or a skip, or under `CI=true` a
//! failure, when there is no engine), the test image built from Debian's busybox-static, and
//! containers that are removed whatever happens.
