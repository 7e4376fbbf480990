//! A node that joined a running cluster (`quorumdb server --join ADDR`).
//!
//! Such a node's config need not list the cluster: at its first start it asks an existing
//! node for the latest committed layout and the founding members (the CLI does that, it has
//! the HTTP client) and keeps the answer in `joined.json` in its data directory. Every later
//! start reads that file, with or without `--join`: the founders fix the metadata group's raft
//! ids and founding configuration, the layout's members are the node's startup member list
//! (its ring and peer clients; the metadata's address book follows the applied layout from
//! then on). The node's metadata itself comes from its raft state on disk, which it got as a
//! learner from the leader.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{MemberConfig, NodeConfig};

/// The file in the data directory that records how this node joined.
pub const JOINED_FILE: &str = "joined.json";

/// What an existing node told this one when it joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    /// The HTTP address it was asked at.
    pub via: String,
    /// The committed layout version that listed this node.
    pub layout_version: u64,
    pub founders: Vec<MemberConfig>,
    /// The members of that layout (this node included).
    pub members: Vec<MemberConfig>,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(JOINED_FILE)
}

/// The record of an earlier join, if this node joined.
pub fn load(data_dir: &Path) -> Result<Option<Joined>, String> {
    let p = path(data_dir);
    match std::fs::read(&p) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{} is corrupt: {e}", p.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}

/// Writes the record durably (temporary file, fsync, rename, fsync of the directory).
pub fn save(data_dir: &Path, joined: &Joined) -> Result<(), String> {
    use std::io::Write as _;
    std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let p = path(data_dir);
    let tmp = data_dir.join(format!("{JOINED_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(joined).expect("plain data");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| format!("cannot write {}: {e}", p.display()))
}

/// The members this node starts with: the joined layout's members (keeping this node's own
/// configured entry, which knows its Kafka address), and the founders for the metadata group.
pub fn apply(config: &mut NodeConfig, joined: &Joined) {
    let own = config.members.iter().find(|m| m.id == config.node_id).cloned();
    let mut members = joined.members.clone();
    if let Some(own) = own {
        if let Some(m) = members.iter_mut().find(|m| m.id == own.id) {
            if m.kafka.is_empty() {
                m.kafka = own.kafka;
            }
        }
    }
    config.members = members;
    config.founders = joined.founders.clone();
}

/// The config a node runs with: a joined node's members and founders come from its
/// `joined.json` (see the module doc); any other node's config is used as it is.
pub fn startup_config(mut config: NodeConfig) -> Result<NodeConfig, String> {
    if let Some(joined) = load(&config.data_dir)? {
        apply(&mut config, &joined);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, kafka: &str) -> MemberConfig {
        MemberConfig {
            id: id.into(),
            zone: "z1".into(),
            peer: format!("127.0.0.1:1{id}"),
            http: String::new(),
            kafka: kafka.into(),
        }
    }

    /// A saved join record loads back and gives a restart the joined members and the founders.
    #[test]
    fn a_joined_node_starts_with_the_recorded_members_and_founders() {
        let dir = std::env::temp_dir().join(format!("qdb-join-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let overrides = crate::config::ConfigOverrides {
            node_id: Some("n4".into()),
            zone: Some("z1".into()),
            members: Some("n4@z1@127.0.0.1:14".into()),
            http_listen: Some("127.0.0.1:24".into()),
            peer_listen: Some("127.0.0.1:14".into()),
            data_dir: Some(dir.clone()),
            ..Default::default()
        };
        let mut config = NodeConfig::load(None, overrides).unwrap();
        config.members[0].kafka = "127.0.0.1:9094".into();
        assert_eq!(startup_config(config.clone()).unwrap(), config, "no record: the config as it is");
        let joined = Joined {
            via: "http://127.0.0.1:1".into(),
            layout_version: 2,
            founders: vec![member("n1", ""), member("n2", ""), member("n3", "")],
            members: vec![member("n1", ""), member("n2", ""), member("n3", ""), member("n4", "")],
        };
        save(&dir, &joined).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(joined.clone()));
        let started = startup_config(config).unwrap();
        assert_eq!(started.members.len(), 4);
        assert_eq!(started.members[3].kafka, "127.0.0.1:9094");
        assert_eq!(started.founding_members(), &joined.founders[..]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
