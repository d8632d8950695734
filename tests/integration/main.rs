//! Integration tests against a real hookd on loopback with real receivers.

mod api_errors;
mod delivery_outcomes;
mod destinations;
mod events;
mod helpers;
mod hostile_receivers;
mod lifecycle;
mod listing;
mod openapi;
mod operations;
mod races;
mod raw_receiver;
mod signing;
