//! The library behind `meshctl`: each subcommand is a module that tests can
//! call without going through the command line.

pub mod cert;
pub mod inject;
pub mod lab;
pub mod policy;
pub mod token;

#[cfg(test)]
mod testing;
