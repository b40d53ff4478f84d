//! The containers and volumes the patch adds: `palisade-init` (traffic
//! redirection), `palisade-proxy` (a native sidecar) and the volumes the
//! proxy reads its identity inputs from.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::Settings;
use crate::annotations::Overrides;

pub const INIT_CONTAINER: &str = "palisade-init";
pub const PROXY_CONTAINER: &str = "palisade-proxy";
pub const TOKEN_VOLUME: &str = "palisade-token";
pub const TRUST_BUNDLE_VOLUME: &str = "palisade-trust-bundle";
pub const PODINFO_VOLUME: &str = "palisade-podinfo";
/// iptables takes its lock under /run; the init container's root
/// filesystem is read-only, so /run is a small emptyDir of its own.
pub const INIT_RUN_VOLUME: &str = "palisade-init-run";
/// Every volume the patch adds, for `uninject`.
pub const VOLUMES: [&str; 4] = [
    TOKEN_VOLUME,
    TRUST_BUNDLE_VOLUME,
    PODINFO_VOLUME,
    INIT_RUN_VOLUME,
];

/// The audience the control plane's TokenReview insists on (DESIGN.md), so
/// a token minted for the mesh is useless against the API server and back.
pub const TOKEN_AUDIENCE: &str = "mesh-control-plane";
/// The proxy's UID (DESIGN.md): `palisade-init` exempts it from redirection.
pub const PROXY_UID: i64 = 2102;
pub const INBOUND_PORT: i32 = 4143;
pub const OUTBOUND_PORT: i32 = 4140;
/// The admin port serves `/ready` to the kubelet and the app's rewritten
/// probes, so it listens on the pod's address, not only on loopback.
pub const ADMIN_PORT: i32 = 4191;

const TOKEN_DIR: &str = "/var/run/palisade/token";
const TRUST_BUNDLE_DIR: &str = "/var/run/palisade/trust";
const PODINFO_DIR: &str = "/var/run/palisade/podinfo";
/// The key of the trust bundle ConfigMap, as the control plane writes it.
pub const TRUST_BUNDLE_KEY: &str = "trust-bundle.pem";

/// How long the proxy may take to obtain its first certificate and policy
/// before the kubelet restarts it: 2 minutes at one probe per second covers
/// a control plane that is itself still starting.
const STARTUP_PROBE_FAILURES: i32 = 120;

/// `mesh-proxy init` with the pod's exceptions. The admin port is always
/// skipped: the kubelet probes it in plaintext.
pub fn init_container(settings: &Settings, o: &Overrides) -> Container {
    let mut skip_inbound = vec![ADMIN_PORT as u16];
    skip_inbound.extend(
        o.skip_inbound_ports
            .iter()
            .copied()
            .filter(|p| i32::from(*p) != ADMIN_PORT),
    );
    let join = |ports: &[u16]| {
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let args = vec![
        "init".to_owned(),
        "--inbound-port".to_owned(),
        INBOUND_PORT.to_string(),
        "--outbound-port".to_owned(),
        OUTBOUND_PORT.to_string(),
        "--proxy-uid".to_owned(),
        PROXY_UID.to_string(),
        "--skip-inbound-ports".to_owned(),
        join(&skip_inbound),
        "--skip-outbound-ports".to_owned(),
        join(&o.skip_outbound_ports),
        "--skip-subnets".to_owned(),
        o.skip_subnets.join(","),
    ];
    Container {
        name: INIT_CONTAINER.to_owned(),
        image: Some(settings.proxy_image.clone()),
        args: Some(args),
        // iptables needs root in the pod's network namespace, with only
        // the two network capabilities.
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            ..restricted(&["NET_ADMIN", "NET_RAW"])
        }),
        volume_mounts: Some(vec![mount(INIT_RUN_VOLUME, "/run", false)]),
        resources: Some(resources("10m", "32Mi")),
        ..Default::default()
    }
}

/// The proxy, as a native sidecar: an init container that keeps running
/// (`restartPolicy: Always`), started before the app's containers and
/// stopped after them, so the app never runs without its proxy.
pub fn proxy_container(
    settings: &Settings,
    o: &Overrides,
    app_probes: Option<String>,
) -> Container {
    let mut env = vec![
        field_env("MESH_NAMESPACE", "metadata.namespace"),
        field_env("MESH_WORKLOAD", "metadata.name"),
        field_env("MESH_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        value_env("MESH_CONTROL_PLANE", &settings.control_plane),
        value_env("MESH_TRUST_DOMAIN", &settings.trust_domain),
        value_env(
            "MESH_TRUST_BUNDLE",
            &format!("{TRUST_BUNDLE_DIR}/{TRUST_BUNDLE_KEY}"),
        ),
        value_env("MESH_TOKEN_FILE", &format!("{TOKEN_DIR}/token")),
        value_env("MESH_LABELS_FILE", &format!("{PODINFO_DIR}/labels")),
        value_env("MESH_INBOUND", &format!("0.0.0.0:{INBOUND_PORT}")),
        value_env("MESH_OUTBOUND", &format!("127.0.0.1:{OUTBOUND_PORT}")),
        value_env("MESH_ADMIN", &format!("0.0.0.0:{ADMIN_PORT}")),
    ];
    if let Some(probes) = app_probes {
        env.push(value_env(crate::probes::APP_PROBES_ENV, &probes));
    }
    let cpu = o.cpu.as_deref().unwrap_or(&settings.proxy_cpu);
    let memory = o.memory.as_deref().unwrap_or(&settings.proxy_memory);
    Container {
        name: PROXY_CONTAINER.to_owned(),
        image: Some(settings.proxy_image.clone()),
        args: Some(vec!["run".to_owned()]),
        restart_policy: Some("Always".to_owned()),
        env: Some(env),
        ports: Some(vec![
            port("palisade-in", INBOUND_PORT),
            port("palisade-admin", ADMIN_PORT),
        ]),
        security_context: Some(SecurityContext {
            run_as_user: Some(PROXY_UID),
            run_as_group: Some(PROXY_UID),
            run_as_non_root: Some(true),
            ..restricted(&[])
        }),
        volume_mounts: Some(vec![
            mount(TOKEN_VOLUME, TOKEN_DIR, true),
            mount(TRUST_BUNDLE_VOLUME, TRUST_BUNDLE_DIR, true),
            mount(PODINFO_VOLUME, PODINFO_DIR, true),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity(cpu.to_owned())),
                ("memory".to_owned(), Quantity(memory.to_owned())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity(memory.to_owned()),
            )])),
            ..Default::default()
        }),
        // Ready = holds a certificate and a policy (DESIGN.md): the app's
        // containers start only after this succeeds.
        startup_probe: Some(Probe {
            period_seconds: Some(1),
            failure_threshold: Some(STARTUP_PROBE_FAILURES),
            ..admin_probe("/ready")
        }),
        liveness_probe: Some(Probe {
            period_seconds: Some(10),
            ..admin_probe("/live")
        }),
        readiness_probe: Some(Probe {
            period_seconds: Some(5),
            ..admin_probe("/ready")
        }),
        ..Default::default()
    }
}

/// The volumes the proxy reads: its projected token, the trust bundle and
/// the pod's labels; and /run for the init container.
pub fn volumes(settings: &Settings) -> Vec<Volume> {
    vec![
        Volume {
            name: TOKEN_VOLUME.to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(TOKEN_AUDIENCE.to_owned()),
                        expiration_seconds: Some(settings.token_expiration_seconds),
                        path: "token".to_owned(),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: TRUST_BUNDLE_VOLUME.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: settings.trust_bundle_configmap.clone(),
                items: Some(vec![KeyToPath {
                    key: TRUST_BUNDLE_KEY.to_owned(),
                    path: TRUST_BUNDLE_KEY.to_owned(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: PODINFO_VOLUME.to_owned(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: "labels".to_owned(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.labels".to_owned(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: INIT_RUN_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_owned()),
                size_limit: Some(Quantity("1Mi".to_owned())),
            }),
            ..Default::default()
        },
    ]
}

/// Read-only root, no privilege escalation, RuntimeDefault seccomp, every
/// capability dropped but `add`.
fn restricted(add: &[&str]) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            add: (!add.is_empty()).then(|| add.iter().map(|c| (*c).to_owned()).collect()),
            drop: Some(vec!["ALL".to_owned()]),
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn admin_probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(ADMIN_PORT),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn resources(cpu: &str, memory: &str) -> ResourceRequirements {
    let both = BTreeMap::from([
        ("cpu".to_owned(), Quantity(cpu.to_owned())),
        ("memory".to_owned(), Quantity(memory.to_owned())),
    ]);
    ResourceRequirements {
        requests: Some(both.clone()),
        limits: Some(both),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..Default::default()
    }
}
