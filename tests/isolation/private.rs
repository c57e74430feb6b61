//! The data dir with the cluster's keys is private to lb's user, also after
//! someone widened it.

use super::harness::*;

/// Every file and directory under `root` with its mode.
fn modes(root: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push((
            path.clone(),
            meta.permissions().mode() & 0o777,
            meta.is_dir(),
        ));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
    }
    out
}

fn assert_private(root: &Path) {
    let all = modes(root);
    assert!(all.len() > 3, "the data dir is nearly empty: {all:?}");
    let open: Vec<_> = all
        .iter()
        .filter(|(_, mode, is_dir)| {
            let want = if *is_dir { 0o700 } else { 0o600 };
            mode & 0o077 != 0 || (*is_dir && *mode != want)
        })
        .map(|(path, mode, _)| format!("{} {mode:04o}", path.display()))
        .collect();
    assert!(open.is_empty(), "readable by others: {open:#?}");
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_data_dir_is_private_and_stays_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = start(&data);
    // The local node saves its credential shortly after the API is up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !data.join("node/node.json").exists() {
        assert!(
            Instant::now() < deadline,
            "the local node saved no credential"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_private(&data);
    up.stop();

    // Someone widens the store, the registry and the data dir itself.
    let store = data.join(lb_store::embedded::FILE_NAME);
    assert!(store.exists(), "no store file at {}", store.display());
    set_mode(&store, 0o644);
    set_mode(&data, 0o755);
    let registry = modes(&data)
        .into_iter()
        .find(|(path, _, is_dir)| *is_dir && path.ends_with("sha256"))
        .map(|(path, _, _)| path)
        .expect("a registry blob directory");
    set_mode(&registry, 0o777);
    let stray = data.join("stray");
    std::fs::write(&stray, "x").unwrap();
    set_mode(&stray, 0o666);

    let up = start(&data);
    assert_private(&data);
    let stderr = up.stop();
    assert!(
        stderr.contains("readable by others"),
        "no warning about the widened files: {stderr}"
    );
}
