//! `meshctl lab down`: removes everything of a lab by name, also after a
//! crash.

use super::*;

/// What `lab down` removed.
#[derive(Debug, Default)]
pub struct Down {
    pub processes: usize,
    pub netns: Vec<String>,
    pub links: Vec<String>,
    pub state_removed: bool,
}

impl Down {
    pub fn is_empty(&self) -> bool {
        self.processes == 0 && self.netns.is_empty() && self.links.is_empty() && !self.state_removed
    }
}

/// Removes every namespace, link, file and process of lab `name`, whether
/// or not its state survived.
pub fn down(name: &str, opts: &Options) -> Result<Down, LabError> {
    require_root()?;
    down_named(name, &opts.state_dir)
}

pub(super) fn down_named(name: &str, state_dir: &Path) -> Result<Down, LabError> {
    let names = Names::new(name);
    let paths = Paths::new(state_dir, name);
    let mut report = Down::default();

    // Processes first: a namespace with a process in it outlives its name.
    let namespaces = net::netns_with_prefix(&names.prefix())?;
    // The control plane runs in the root namespace; it is ours if it was
    // started on this lab's data dir.
    let data = paths.data().display().to_string();
    report.processes = stop_all(|| {
        let mut pids: Vec<u32> = namespaces
            .iter()
            .flat_map(|ns| net::netns_pids(ns))
            .collect();
        pids.extend(process::with_argument(&data));
        pids
    });

    for ns in namespaces {
        net::ip(&["netns", "del", &ns])?;
        report.netns.push(ns);
    }
    // The veths went with their namespaces; the bridge (and any veth whose
    // namespace was lost) are left.
    for link in net::links_with_prefix(&names.prefix())? {
        // A veth disappears with its peer; it may be gone by now.
        if let Err(e) = net::ip(&["link", "del", &link])
            && net::links_with_prefix(&link)?.contains(&link)
        {
            return Err(e);
        }
        report.links.push(link);
    }
    for dir in net::etc_dirs_with_prefix(&names.prefix()) {
        std::fs::remove_dir_all(&dir).map_err(io(format!("cannot remove {}", dir.display())))?;
    }
    if paths.root.exists() {
        std::fs::remove_dir_all(&paths.root)
            .map_err(io(format!("cannot remove {}", paths.root.display())))?;
        report.state_removed = true;
    }
    Ok(report)
}

/// Rounds of stopping before `stop_all` gives up: each round catches what
/// the previous one's processes started (a shell loop's next `curl`) before
/// they died.
pub(super) const STOP_ROUNDS: usize = 5;

/// Stops every process `find` lists, again and again until it lists none;
/// returns how many were stopped.
pub(super) fn stop_all(mut find: impl FnMut() -> Vec<u32>) -> usize {
    let mut stopped = std::collections::BTreeSet::new();
    for _ in 0..STOP_ROUNDS {
        let mut pids: Vec<u32> = find().into_iter().filter(|p| process::alive(*p)).collect();
        pids.sort_unstable();
        pids.dedup();
        if pids.is_empty() {
            break;
        }
        process::stop(&pids);
        stopped.extend(pids);
    }
    stopped.len()
}
