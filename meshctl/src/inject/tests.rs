use mesh_injector::k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use mesh_injector::k8s_openapi::api::batch::v1::{CronJob, Job};
use mesh_injector::k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, PodSpec, Service};

use super::*;

const WORKLOADS: &str = include_str!("../../tests/data/workloads.yaml");

fn injected() -> (Vec<Value>, Vec<Note>) {
    let mut docs = parse("workloads.yaml", WORKLOADS).unwrap();
    let notes = inject("workloads.yaml", &mut docs, &Settings::default()).unwrap();
    (docs, notes)
}

fn of<T: serde::de::DeserializeOwned>(doc: &Value) -> T {
    serde_json::from_value(doc.clone()).unwrap()
}

fn init_names(spec: &PodSpec) -> Vec<String> {
    spec.init_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect()
}

#[test]
fn every_workload_kind_is_meshed_and_parses_back_as_its_type() {
    let (docs, _) = injected();
    // Printed and read again, as `kubectl apply -f -` reads it.
    let docs = parse("<output>", &render(&docs)).unwrap();
    assert_eq!(docs.len(), 11);
    let meshed = ["palisade-init", "palisade-proxy"];
    let pod: Pod = of(&docs[2]);
    assert_eq!(init_names(pod.spec.as_ref().unwrap()), meshed);
    let d: Deployment = of(&docs[3]);
    assert_eq!(
        init_names(d.spec.unwrap().template.spec.as_ref().unwrap()),
        meshed
    );
    let s: StatefulSet = of(&docs[4]);
    assert_eq!(
        init_names(s.spec.unwrap().template.spec.as_ref().unwrap()),
        meshed
    );
    let ds: DaemonSet = of(&docs[5]);
    assert_eq!(
        init_names(ds.spec.unwrap().template.spec.as_ref().unwrap()),
        meshed
    );
    let rs: ReplicaSet = of(&docs[6]);
    let rs_spec = rs.spec.unwrap().template.unwrap().spec.unwrap();
    // The proxy starts before the app's own init containers.
    assert_eq!(
        init_names(&rs_spec),
        ["palisade-init", "palisade-proxy", "wait"]
    );
    let job: Job = of(&docs[7]);
    assert_eq!(
        init_names(job.spec.unwrap().template.spec.as_ref().unwrap()),
        meshed
    );
    let cron: CronJob = of(&docs[8]);
    let cron_spec = cron
        .spec
        .unwrap()
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert_eq!(init_names(&cron_spec), meshed);
    let legacy: Deployment = of(&docs[9]);
    assert!(init_names(legacy.spec.unwrap().template.spec.as_ref().unwrap()).is_empty());
    let _: Namespace = of(&docs[0]);
    let _: ConfigMap = of(&docs[1]);
    let _: Service = of(&docs[10]);
}

#[test]
fn other_objects_pass_through_unchanged() {
    let original = parse("workloads.yaml", WORKLOADS).unwrap();
    let (docs, _) = injected();
    for i in [0, 1, 10] {
        assert_eq!(docs[i], original[i]);
    }
    // Quoted strings stay strings through the YAML round trip.
    let docs = parse("<output>", &render(&docs)).unwrap();
    assert_eq!(docs[1]["data"]["mode"], "on");
    assert_eq!(docs[1]["data"]["retries"], "3");
}

#[test]
fn the_pods_annotations_shape_its_proxy() {
    let (docs, _) = injected();
    let d: Deployment = of(&docs[3]);
    let spec = d.spec.unwrap().template.spec.unwrap();
    let inits = spec.init_containers.unwrap();
    let args = inits[0].args.as_ref().unwrap();
    let at = args
        .iter()
        .position(|a| a == "--skip-outbound-ports")
        .unwrap();
    assert_eq!(args[at + 1], "5432");
    let cpu = &inits[1]
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap()["cpu"];
    assert_eq!(cpu.0, "250m");
}

#[test]
fn injecting_twice_changes_nothing_the_second_time() {
    let (mut docs, _) = injected();
    let once = render(&docs);
    let notes = inject("again", &mut docs, &Settings::default()).unwrap();
    assert_eq!(render(&docs), once);
    assert!(notes.iter().all(|n| !n.changed));
    assert!(
        notes
            .iter()
            .filter(|n| n.object != "Deployment shop/legacy")
            .all(|n| n.reason.as_deref() == Some("already injected"))
    );
}

#[test]
fn uninject_restores_the_original() {
    let original = parse("workloads.yaml", WORKLOADS).unwrap();
    let (docs, _) = injected();
    let mut docs = parse("<output>", &render(&docs)).unwrap();
    let notes = uninject("<output>", &mut docs).unwrap();
    assert_eq!(docs, original);
    assert_eq!(notes.iter().filter(|n| n.changed).count(), 7);
}

#[test]
fn the_report_names_each_workload_and_why_it_was_left_alone() {
    let (_, notes) = injected();
    let legacy = notes
        .iter()
        .find(|n| n.object == "Deployment shop/legacy")
        .unwrap();
    assert!(!legacy.changed);
    assert_eq!(
        legacy.reason.as_deref(),
        Some("palisade.dev/inject: disabled")
    );
    assert!(
        notes
            .iter()
            .any(|n| n.object == "CronJob shop/report" && n.changed)
    );
    assert_eq!(
        notes.len(),
        8,
        "Namespace, ConfigMap and Service are not workloads"
    );
}

#[test]
fn items_of_a_list_are_meshed() {
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a}\n  spec: {containers: [{name: a, image: a}]}\n";
    let mut docs = parse("list.yaml", list).unwrap();
    let notes = inject("list.yaml", &mut docs, &Settings::default()).unwrap();
    assert_eq!(notes.len(), 1);
    assert!(notes[0].changed);
    assert_eq!(
        docs[0]["items"][0]["spec"]["initContainers"][1]["name"],
        "palisade-proxy"
    );
}

#[test]
fn errors_name_the_file_and_document() {
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {palisade.dev/skip-inbound-ports: http}}\nspec: {containers: [{name: a, image: a}]}\n";
    let mut docs = parse("bad.yaml", bad).unwrap();
    let e = inject("bad.yaml", &mut docs, &Settings::default()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("bad.yaml: document 2: annotation palisade.dev/skip-inbound-ports:"),
        "{e}"
    );
    let e = parse("broken.yaml", "a: [").unwrap_err();
    assert!(e.to_string().starts_with("broken.yaml: "), "{e}");
}
