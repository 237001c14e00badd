//! Rebuilds the crate when a migration is added or changed.
//!
//! `refinery::embed_migrations!` reads the `migrations` directory at compile
//! time, but Cargo does not know that, so without this a new migration file
//! would silently be left out until some Rust source changed.

fn main() {
    println!("cargo::rerun-if-changed=migrations");
}
