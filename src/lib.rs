//! hookd: REST notification hooks (webhooks) for a project-management API,
//! in one executable with one SQLite file.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod error;
pub mod events;
pub mod maintenance;
pub mod memory;
pub mod metrics;
pub mod secrets;
pub mod store;

pub use app::Application;
pub use config::Config;
