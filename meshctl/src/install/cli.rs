//! `meshctl install` / `meshctl uninstall` flags, kept beside the commands.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Change a value: trustDomain, certTTL, controlPlane.replicas,
    /// injector.replicas, controlPlane.image, injector.image, proxy.image
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Keep the mesh CA and the webhook certificate here (created on first
    /// use, keys mode 0600) and reuse them on later installs (upgrades).
    /// Without it, new ones are generated on every run.
    #[arg(long, env = "MESH_SECRETS_DIR", value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Also delete Palisade's CRDs, and with them every AuthorizationPolicy,
    /// PeerAuthentication and other Palisade object in the cluster
    #[arg(long, env = "MESH_INCLUDE_CRDS")]
    pub include_crds: bool,
}

fn print(docs: &[serde_json::Value]) -> anyhow::Result<()> {
    crate::cli::write_stdout(&crate::yaml::render(docs))
}

pub fn install(args: InstallArgs) -> anyhow::Result<()> {
    let mut values = super::Values::default();
    for pair in &args.set {
        values.set(pair)?;
    }
    let material = super::material(args.secrets_dir.as_deref(), &values.trust_domain)?;
    if args.secrets_dir.is_none() {
        eprintln!(
            "note: generated a new mesh CA and webhook certificate; to upgrade later without \
             replacing them (which would break every proxy's trust), install with --secrets-dir DIR"
        );
    }
    print(&super::manifests(&values, &material)?)
}

pub fn uninstall(args: UninstallArgs) -> anyhow::Result<()> {
    print(&super::uninstall(args.include_crds)?)
}
