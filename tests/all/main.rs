//! Integration tests: real components, built from source, in a real cage.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod cli;
mod clients;
mod cluster;
mod containment;
mod daemon;
mod inference;
mod loading;
mod macro_errors;
mod mock;
mod oci;
mod registry;
mod roles;
mod samples;
mod sandbox;
mod sdk;
mod servers;
mod tools;
mod ui;
mod vault;
