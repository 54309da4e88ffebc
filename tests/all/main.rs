//! Integration tests: real components, built from source, in a real cage.

mod cli;
mod loading;
mod macro_errors;
mod sandbox;
mod sdk;
