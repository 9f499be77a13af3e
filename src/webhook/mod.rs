//! Change notifications pushed by the CRMs (webhooks): who sent them (`auth`) and what they
//! hold (`event`), and where it is kept before the sender is answered (`spool`). HubSpot signs each request with the app's client secret; Pipedrive sends
//! the basic-auth credentials set on the webhook. A request that fails these checks is refused
//! before anything of it is kept.

pub mod auth;
pub mod consume;
pub mod drain;
pub mod event;
pub mod journal;
pub mod listen;
pub mod spool;
pub mod stats;
