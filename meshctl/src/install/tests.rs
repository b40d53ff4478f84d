use mesh_injector::k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use mesh_injector::k8s_openapi::api::apps::v1::Deployment;
use mesh_injector::k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, Secret, Service, ServiceAccount,
};
use mesh_injector::k8s_openapi::api::policy::v1::PodDisruptionBudget;
use mesh_injector::k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, Role, RoleBinding,
};
use mesh_injector::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::*;

fn installed(dir: &Path) -> Vec<Value> {
    manifests(
        &Values::default(),
        &material(Some(dir), "cluster.local").unwrap(),
    )
    .unwrap()
}

/// Parses `doc` as `T` and back: a field the type does not know (a typo)
/// would be dropped by k8s-openapi and show up as a difference.
fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) -> T {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| {
        panic!(
            "{} does not parse: {e}",
            mesh_injector::patch::describe(doc)
        )
    });
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back,
        doc,
        "{} changed in a round trip through its type",
        mesh_injector::patch::describe(doc)
    );
    typed
}

fn typed(doc: &Value) {
    match doc["kind"].as_str().unwrap() {
        "Namespace" => drop(round_trip::<Namespace>(doc)),
        "CustomResourceDefinition" => drop(round_trip::<CustomResourceDefinition>(doc)),
        "ServiceAccount" => drop(round_trip::<ServiceAccount>(doc)),
        "ClusterRole" => drop(round_trip::<ClusterRole>(doc)),
        "ClusterRoleBinding" => drop(round_trip::<ClusterRoleBinding>(doc)),
        "Role" => drop(round_trip::<Role>(doc)),
        "RoleBinding" => drop(round_trip::<RoleBinding>(doc)),
        "Secret" => drop(round_trip::<Secret>(doc)),
        "ConfigMap" => drop(round_trip::<ConfigMap>(doc)),
        "Deployment" => drop(round_trip::<Deployment>(doc)),
        "Service" => drop(round_trip::<Service>(doc)),
        "PodDisruptionBudget" => drop(round_trip::<PodDisruptionBudget>(doc)),
        "MutatingWebhookConfiguration" => drop(round_trip::<MutatingWebhookConfiguration>(doc)),
        other => panic!("no type for {other}"),
    }
}

fn get<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn every_manifest_parses_into_its_kubernetes_type_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let docs = installed(dir.path());
    // Through YAML as printed, as kubectl reads it.
    let docs = yaml::parse("<install>", &yaml::render(&docs)).unwrap();
    assert_eq!(docs.len(), 27);
    for doc in &docs {
        typed(doc);
    }
}

#[test]
fn the_control_plane_runs_twice_on_different_nodes_and_survives_a_drain() {
    let dir = tempfile::tempdir().unwrap();
    let docs = installed(dir.path());
    let cp: Deployment = round_trip(get(&docs, "Deployment", "mesh-control-plane"));
    let spec = cp.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
    assert_eq!(
        anti.preferred_during_scheduling_ignored_during_execution
            .unwrap()[0]
            .pod_affinity_term
            .topology_key,
        "kubernetes.io/hostname"
    );
    let c = &pod.containers[0];
    assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some() && c.startup_probe.is_some());
    assert!(c.resources.as_ref().unwrap().requests.is_some());
    let pdb: PodDisruptionBudget =
        round_trip(get(&docs, "PodDisruptionBudget", "mesh-control-plane"));
    assert_eq!(
        serde_json::to_value(pdb.spec.unwrap().min_available).unwrap(),
        json!(1)
    );
}

#[test]
fn the_webhook_fails_closed_skips_system_namespaces_and_trusts_the_injector_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let m = material(Some(dir.path()), "cluster.local").unwrap();
    let docs = manifests(&Values::default(), &m).unwrap();
    let config: MutatingWebhookConfiguration = round_trip(get(
        &docs,
        "MutatingWebhookConfiguration",
        WEBHOOK_CONFIGURATION,
    ));
    let webhooks = config.webhooks.unwrap();
    assert_eq!(webhooks.len(), 2);
    for w in &webhooks {
        assert_eq!(w.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(w.side_effects, "None");
        assert_eq!(w.admission_review_versions, ["v1"]);
        assert_eq!(
            w.client_config.ca_bundle.as_ref().unwrap().0,
            m.webhook_ca_pem.as_bytes()
        );
        let service = w.client_config.service.as_ref().unwrap();
        assert_eq!(
            (service.name.as_str(), service.path.as_deref()),
            ("mesh-injector", Some("/inject"))
        );
        let exprs = w
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap();
        assert!(exprs.iter().any(|e| e.key == "kubernetes.io/metadata.name"
            && e.operator == "NotIn"
            && e.values.as_deref()
                == Some(&["kube-system".to_owned(), "mesh-system".to_owned()][..])));
    }
    // The Secret the injector mounts is a TLS identity mesh-injector accepts.
    let secret: Secret = round_trip(get(&docs, "Secret", WEBHOOK_SECRET));
    let data = secret.data.unwrap();
    std::fs::write(dir.path().join("c.pem"), &data["tls.crt"].0).unwrap();
    std::fs::write(dir.path().join("k.pem"), &data["tls.key"].0).unwrap();
    mesh_injector::server::tls_config(&dir.path().join("c.pem"), &dir.path().join("k.pem"))
        .unwrap();
}

#[test]
fn the_trust_bundle_is_the_root_of_the_ca_secret() {
    let dir = tempfile::tempdir().unwrap();
    let docs = installed(dir.path());
    let ca: Secret = round_trip(get(&docs, "Secret", CA_SECRET));
    assert_eq!(ca.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = ca.data.unwrap();
    let bundle: ConfigMap = round_trip(get(&docs, "ConfigMap", "palisade-trust-bundle"));
    let pem = &bundle.data.unwrap()["trust-bundle.pem"];
    assert_eq!(data["ca.crt"].0, pem.as_bytes());
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn a_secrets_dir_is_reused_so_an_upgrade_keeps_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let first = installed(dir.path());
    let second = installed(dir.path());
    assert_eq!(
        get(&first, "Secret", CA_SECRET),
        get(&second, "Secret", CA_SECRET)
    );
    assert_eq!(
        get(&first, "Secret", WEBHOOK_SECRET),
        get(&second, "Secret", WEBHOOK_SECRET)
    );
    let fresh = manifests(
        &Values::default(),
        &material(None, "cluster.local").unwrap(),
    )
    .unwrap();
    assert_ne!(
        get(&first, "Secret", CA_SECRET),
        get(&fresh, "Secret", CA_SECRET)
    );
}

#[test]
fn set_changes_what_it_names() {
    let mut v = Values::default();
    for pair in [
        "trustDomain=prod.example",
        "controlPlane.replicas=3",
        "injector.replicas=4",
        "proxy.image=registry.example/proxy:9",
        "certTTL=1h",
    ] {
        v.set(pair).unwrap();
    }
    let docs = manifests(&v, &Material::placeholder()).unwrap();
    let cp = get(&docs, "Deployment", "mesh-control-plane");
    assert_eq!(cp["spec"]["replicas"], 3);
    let env = &cp["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({"name": "MESH_TRUST_DOMAIN", "value": "prod.example"}))
    );
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({"name": "MESH_CERT_TTL", "value": "1h"}))
    );
    let inj = get(&docs, "Deployment", "mesh-injector");
    assert_eq!(inj["spec"]["replicas"], 4);
    let env = &inj["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({"name": "MESH_PROXY_IMAGE", "value": "registry.example/proxy:9"}))
    );
}

#[test]
fn bad_set_values_are_refused_naming_them() {
    let cases = [
        ("replicas", "expected KEY=VALUE"),
        ("controlPlane.replicas=0", "at least 1"),
        ("trustDomain=Not_Valid", "--set trustDomain=Not_Valid"),
        ("certTTL=soon", "--set certTTL=soon"),
        ("colour=blue", "unknown key; known keys: trustDomain"),
        ("proxy.image=", "expected an image reference"),
    ];
    for (pair, message) in cases {
        let e = Values::default().set(pair).unwrap_err();
        assert!(e.to_string().contains(message), "{pair}: {e}");
    }
}

#[test]
fn rbac_is_least_privilege() {
    let docs = shipped().unwrap();
    for role in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        for rule in role["rules"].as_array().unwrap() {
            for field in ["verbs", "resources", "apiGroups"] {
                assert!(
                    !rule[field].as_array().unwrap().contains(&json!("*")),
                    "{role}"
                );
            }
            let verbs = rule["verbs"].as_array().unwrap();
            if rule["resources"]
                .as_array()
                .unwrap()
                .contains(&json!("secrets"))
            {
                // Secrets are read, never written.
                assert!(
                    verbs
                        .iter()
                        .all(|v| ["get", "list", "watch"].contains(&v.as_str().unwrap())),
                    "{rule}"
                );
            }
        }
    }
    // The injector has no API access: no token, no binding.
    let sa = get(&docs, "ServiceAccount", "mesh-injector");
    assert_eq!(sa["automountServiceAccountToken"], false);
    assert!(!docs.iter().any(|d| {
        d["subjects"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "mesh-injector"))
    }));
}

#[test]
fn uninstall_names_every_object_and_keeps_the_crds_unless_asked() {
    let objects = uninstall(false).unwrap();
    assert!(
        objects
            .iter()
            .all(|o| o["kind"] != "CustomResourceDefinition")
    );
    assert!(
        objects
            .iter()
            .all(|o| o.get("spec").is_none() && o.get("data").is_none())
    );
    // Newest first: the webhook goes before the injector it calls.
    assert_eq!(objects[0]["kind"], "MutatingWebhookConfiguration");
    assert_eq!(objects.last().unwrap()["kind"], "Namespace");
    let with = uninstall(true).unwrap();
    assert_eq!(
        with.iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .count(),
        6
    );
}

#[test]
fn the_ingress_runs_twice_as_the_ingress_identity_and_keeps_client_addresses() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let mut values = Values::default();
    values.set("trustDomain=example.org").expect("a known key");
    let material = material(Some(dir.path()), "example.org").expect("generated material");
    let docs = manifests(&values, &material).expect("the shipped manifests");
    let d: Deployment = round_trip(get(&docs, "Deployment", "mesh-ingress"));
    let spec = d.spec.expect("the Deployment has a spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.expect("the template has a pod spec");
    // Its identity is the one the control plane gives the edge to.
    assert_eq!(pod.service_account_name.as_deref(), Some("ingress"));
    assert_eq!(d.metadata.namespace.as_deref(), Some("mesh-system"));
    let labels = spec
        .template
        .metadata
        .and_then(|m| m.labels)
        .expect("the template has labels");
    assert_eq!(labels.get("app").map(String::as_str), Some("ingress"));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some(values.proxy_image.as_str()));
    assert_eq!(c.args.as_deref(), Some(&["ingress".to_string()][..]));
    let env = |name: &str| {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(env("MESH_TRUST_DOMAIN").as_deref(), Some("example.org"));
    assert_eq!(env("MESH_LABELS").as_deref(), Some("app=ingress"));
    // Hardened as the other proxies, and able to bind 443 without a capability.
    let sc = c
        .security_context
        .as_ref()
        .expect("a container security context");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let sysctls = pod
        .security_context
        .and_then(|s| s.sysctls)
        .expect("pod sysctls");
    assert!(
        sysctls
            .iter()
            .any(|s| s.name == "net.ipv4.ip_unprivileged_port_start" && s.value == "0")
    );
    // The token it proves itself with is for the control plane only.
    let token = pod
        .volumes
        .into_iter()
        .flatten()
        .find(|v| v.name == "token")
        .and_then(|v| v.projected)
        .and_then(|p| p.sources)
        .and_then(|s| s.into_iter().find_map(|s| s.service_account_token))
        .expect("a projected ServiceAccount token");
    assert_eq!(token.audience.as_deref(), Some("mesh-control-plane"));
    // The Service keeps the client's address for edge policy.
    let svc: Service = round_trip(get(&docs, "Service", "mesh-ingress"));
    let svc = svc.spec.expect("the Service has a spec");
    assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(svc.external_traffic_policy.as_deref(), Some("Local"));
    let _: PodDisruptionBudget = round_trip(get(&docs, "PodDisruptionBudget", "mesh-ingress"));
}
