//! The authorization server's SQL, one module per table. Every statement is a compile-checked
//! query macro, and every function takes any executor (a pool, a connection, a transaction),
//! so the handlers decide where transactions begin and end.
//!
//! `security_events` is written by [`crate::events`], `signing_keys` by [`crate::keys`]'s
//! storage functions here in [`signing_keys`].

pub mod clients;
pub mod codes;
pub mod consents;
pub mod grants;
pub mod refresh_tokens;
pub mod registrations;
pub mod sessions;
pub mod sign_in_failures;
pub mod signing_keys;
