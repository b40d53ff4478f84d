//! `meshctl lab stop` / `start`: one pod leaves the mesh and comes back.

use super::*;

/// Stops every process of one pod (its proxy and apps): the pod leaves the
/// mesh, as a scaled-down replica does. Its namespace and rules stay.
pub fn stop_pod(name: &str, pod: &str, opts: &Options) -> Result<(), LabError> {
    require_root()?;
    let (mut state, paths) = load_state(name, opts)?;
    let p = state
        .pods
        .iter_mut()
        .find(|p| p.name == pod)
        .ok_or_else(|| LabError::NoPod {
            lab: name.to_owned(),
            pod: pod.to_owned(),
        })?;
    let ns = p.netns.clone();
    stop_all(|| net::netns_pids(&ns));
    p.proxy_pid = None;
    p.app_pids.clear();
    state.save(&paths)
}

/// Starts a stopped pod again (proxy, then apps) and waits until it is
/// ready, as a scaled-up replica.
pub fn start_pod(name: &str, pod: &str, opts: &Options) -> Result<(), LabError> {
    require_root()?;
    let (mut state, paths) = load_state(name, opts)?;
    // The copies `lab up` made, which every UID can execute.
    let bins = if paths.bin().join("mesh-proxy").is_file() {
        paths.bin()
    } else {
        bin_dir(opts)?
    };
    let i = state
        .pods
        .iter()
        .position(|p| p.name == pod)
        .ok_or_else(|| LabError::NoPod {
            lab: name.to_owned(),
            pod: pod.to_owned(),
        })?;
    if !net::netns_pids(&state.pods[i].netns).is_empty() {
        return Err(LabError::AlreadyUp {
            name: name.to_owned(),
            what: format!("pod {pod} has running processes; meshctl lab stop {pod} first"),
        });
    }
    let started = Instant::now();
    let mut children = Vec::new();
    if state.pods[i].sidecar {
        let child = start_proxy(&state.pods[i], &paths, &bins)?;
        state.pods[i].proxy_pid = Some(child.id());
        children.push(Watched::new("the proxy", child, paths.proxy_log(pod)));
        state.save(&paths)?;
        if let Some(admin) = state.pods[i].admin {
            let log = paths.proxy_log(pod);
            wait_until(
                "the proxy is not ready",
                started,
                opts.timeout,
                &mut children,
                &log,
                || matches!(http::get(admin, "/ready"), Ok((200, _))),
            )?;
        }
    }
    for c in start_apps(&mut state.pods[i], &paths, &bins)? {
        children.push(Watched::new("the app", c, paths.app_log(pod)));
    }
    state.save(&paths)?;
    let (ns, ports) = (state.pods[i].netns.clone(), state.pods[i].ports.clone());
    let log = paths.app_log(pod);
    wait_until(
        "the app is not listening",
        started,
        opts.timeout,
        &mut children,
        &log,
        || {
            let l = listening_ports(&ns);
            ports.iter().all(|p| l.contains(p))
        },
    )
}
