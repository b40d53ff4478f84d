//! A source driven by the test: each [`Fake::publish`] is one update.

use std::sync::Arc;

use tokio::sync::watch;

use super::{Config, Source, Update};

/// A source whose updates come from the test.
#[derive(Clone)]
pub struct Fake {
    tx: Arc<watch::Sender<Update>>,
}

impl Fake {
    /// A source whose first view is `config`.
    pub fn new(config: Config) -> Self {
        Self {
            tx: Arc::new(watch::channel(Update::Loaded(Arc::new(config))).0),
        }
    }

    pub fn publish(&self, config: Config) {
        self.tx.send_replace(Update::Loaded(Arc::new(config)));
    }

    /// A read that failed, as a source reports one.
    pub fn fail(&self, message: &str) {
        self.tx.send_replace(Update::Failed(message.to_owned()));
    }

    /// The view of `yaml`, parsed as the file source parses a file.
    pub fn config(yaml: &str) -> Config {
        match mesh_policy::parse_yaml("fake.yaml", yaml) {
            Ok(l) => Config {
                snapshot: l.snapshot,
                services: l.services,
                secrets: l.secrets,
                workloads: Vec::new(),
                endpoints: Default::default(),
                warnings: l.warnings,
            },
            Err(e) => panic!("test YAML does not parse: {e}"),
        }
    }
}

impl Source for Fake {
    async fn start(self) -> anyhow::Result<watch::Receiver<Update>> {
        Ok(self.tx.subscribe())
    }
}
