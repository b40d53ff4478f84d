//! The library behind `meshctl`: each subcommand is a module that tests can
//! call without going through the command line.

pub mod ca;
pub mod cert;
pub mod check;
pub mod cli;
pub mod egress;
pub mod flows;
pub mod inject;
pub mod install;
pub mod lab;
pub mod policy;
pub mod quarantine;
pub mod route;
pub mod token;
pub mod yaml;

#[cfg(test)]
mod testing;
