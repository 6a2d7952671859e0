//! Vector runner and support for integration tests.
