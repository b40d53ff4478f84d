use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::*;

fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {
            "containers": [{
                "name": "web",
                "image": "shop/web:1",
                "ports": [{"name": "http", "containerPort": 8080}],
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 3},
                "readinessProbe": {"tcpSocket": {"port": 8080}},
                "unknownFutureField": {"kept": true}
            }]
        }
    })
}

fn injected(mut v: Value) -> Value {
    match inject(&mut v, &Settings::default()).unwrap() {
        Outcome::Patch(_) => v,
        Outcome::Skip(why) => panic!("not injected: {why}"),
    }
}

#[test]
fn inject_then_uninject_restores_the_object_exactly() {
    let original = pod();
    let mut v = injected(original.clone());
    assert_ne!(v, original);
    assert!(uninject(&mut v).unwrap());
    assert_eq!(v, original);
}

#[test]
fn injecting_twice_changes_nothing_the_second_time() {
    let mut v = injected(pod());
    let once = v.clone();
    assert_eq!(
        inject(&mut v, &Settings::default()).unwrap(),
        Outcome::Skip("already injected".into())
    );
    assert_eq!(v, once);
}

#[test]
fn fields_the_types_do_not_know_are_kept() {
    let v = injected(pod());
    assert_eq!(
        v["spec"]["containers"][0]["unknownFutureField"],
        json!({"kept": true})
    );
}

#[test]
fn the_proxy_comes_before_the_apps_init_containers() {
    let mut p = pod();
    p["spec"]["initContainers"] = json!([{"name": "migrate", "image": "shop/migrate:1"}]);
    p["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    let original = p.clone();
    let mut v = injected(p);
    let pod: Pod = serde_json::from_value(v.clone()).unwrap();
    let spec = pod.spec.unwrap();
    let names: Vec<_> = spec
        .init_containers
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, [INIT_CONTAINER, PROXY_CONTAINER, "migrate"]);
    let volumes: Vec<_> = spec.volumes.unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(volumes[0], "data");
    assert_eq!(volumes[1..], VOLUMES);
    assert!(uninject(&mut v).unwrap());
    assert_eq!(v, original);
}

#[test]
fn http_probes_go_through_the_admin_port_and_others_stay() {
    let v = injected(pod());
    let c = &v["spec"]["containers"][0];
    assert_eq!(
        c["livenessProbe"],
        json!({"httpGet": {"path": "/app-health/web/livez", "port": 4191, "scheme": "HTTP"}, "periodSeconds": 3})
    );
    assert_eq!(c["readinessProbe"], json!({"tcpSocket": {"port": 8080}}));
    let pod: Pod = serde_json::from_value(v.clone()).unwrap();
    let proxy = &pod.spec.unwrap().init_containers.unwrap()[1];
    let env = proxy.env.as_ref().unwrap();
    let probes = env.iter().find(|e| e.name == APP_PROBES_ENV).unwrap();
    let probes: Vec<AppProbe> = serde_json::from_str(probes.value.as_ref().unwrap()).unwrap();
    // The named port is resolved for the proxy; the original is kept whole.
    assert_eq!(probes[0].port, 8080);
    assert_eq!(probes[0].path, "/app-health/web/livez");
    assert_eq!(
        serde_json::to_value(&probes[0].original).unwrap(),
        json!({"path": "/healthz", "port": "http"})
    );
}

#[test]
fn workloads_are_injected_in_their_pod_template() {
    let original = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "shop/web:1"}]}
            }
        }
    });
    let mut v = injected(original.clone());
    let d: Deployment = serde_json::from_value(v.clone()).unwrap();
    let spec = d.spec.unwrap().template.spec.unwrap();
    assert_eq!(spec.init_containers.unwrap().len(), 2);
    assert!(uninject(&mut v).unwrap());
    assert_eq!(v, original);
}

#[test]
fn skips_say_why() {
    let cases = [
        (
            "/metadata/namespace",
            json!("kube-system"),
            "namespace kube-system is never meshed",
        ),
        (
            "/metadata/namespace",
            json!("mesh-system"),
            "namespace mesh-system is never meshed",
        ),
        (
            "/metadata/annotations",
            json!({"palisade.dev/inject": "disabled"}),
            "palisade.dev/inject: disabled",
        ),
        ("/spec/hostNetwork", json!(true), "hostNetwork"),
    ];
    for (at, value, why) in cases {
        let mut v = pod();
        let (parent, field) = at.rsplit_once('/').unwrap();
        v.pointer_mut(parent).unwrap()[field] = value;
        let before = v.clone();
        match inject(&mut v, &Settings::default()).unwrap() {
            Outcome::Skip(reason) => assert!(reason.contains(why), "{reason}"),
            Outcome::Patch(_) => panic!("{at} should skip"),
        }
        assert_eq!(v, before);
    }
}

#[test]
fn other_kinds_pass_unchanged() {
    let mut v =
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {}});
    let before = v.clone();
    assert!(matches!(
        inject(&mut v, &Settings::default()).unwrap(),
        Outcome::Skip(_)
    ));
    assert!(!uninject(&mut v).unwrap());
    assert_eq!(v, before);
}

#[test]
fn a_bad_annotation_is_an_error_naming_it() {
    let mut v = pod();
    v["metadata"]["annotations"] = json!({"palisade.dev/skip-subnets": "10.0.0.0/40"});
    let e = inject(&mut v, &Settings::default()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("annotation palisade.dev/skip-subnets:"),
        "{e}"
    );
}

#[test]
fn a_template_that_is_not_a_pod_spec_is_an_error() {
    let mut v = pod();
    v["spec"]["containers"] = json!("web");
    let e = inject(&mut v, &Settings::default()).unwrap_err();
    assert!(
        e.to_string().starts_with("Pod shop/web does not parse"),
        "{e}"
    );
}
