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
    // The local node saves its credential shortly after the API is up, and
    // the registry's address its firewall protects once it learns it.
    let deadline = Instant::now() + Duration::from_secs(30);
    for kept in ["node/node.json", "node/firewall.json"] {
        while !data.join(kept).exists() {
            assert!(Instant::now() < deadline, "the local node wrote no {kept}");
            std::thread::sleep(Duration::from_millis(100));
        }
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

/// The cluster's keys, as files in the data dir's `keys/`.
const KEYS: [&str; 3] = ["jwt-signing-key", "registry-signing-key", "secrets-key"];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_store_file_alone_holds_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = start(&data);
    // Use the keys: a user signs up and logs in (an access token signed).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(User::sign_up(&up.api, "alice"));
    up.stop();

    let store = std::fs::read(data.join(lb_store::embedded::FILE_NAME)).unwrap();
    assert!(store.len() > 4096, "the store file is nearly empty");
    for name in KEYS {
        let path = data.join("keys").join(format!("{name}.key"));
        let key =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let key = key.trim();
        assert_eq!(key.len(), 64, "{name}: {key:?}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
        // Whoever reads the store file (a backup, a local user) finds
        // neither the key nor its bytes.
        assert!(
            !contains(&store, key.as_bytes()),
            "{name} is in the store file"
        );
        let raw: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&key[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert!(
            !contains(&store, &raw),
            "{name}'s bytes are in the store file"
        );
    }
    let dir_mode = std::fs::metadata(data.join("keys"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
}

#[test]
fn keys_in_an_older_store_move_out_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let keys = lb_model::keys::Keys::default();
    let old = "ab".repeat(32);
    let file = data.join(lb_store::embedded::FILE_NAME);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // What an older lb left: the signing key inside the store.
    rt.block_on(async {
        use lb_store::StoreExt;
        let store = lb_store::embedded::EmbeddedStore::open(&file)
            .await
            .unwrap();
        store
            .put(&keys.cluster("jwt-signing-key"), old.clone().into_bytes())
            .await
            .unwrap();
    });
    let up = start(&data);
    up.stop();
    let moved = std::fs::read_to_string(data.join("keys/jwt-signing-key.key")).unwrap();
    assert_eq!(moved.trim(), old, "the store's key moved to the file");
    let stored = rt.block_on(async {
        let store = lb_store::embedded::EmbeddedStore::open(&file)
            .await
            .unwrap();
        lb_store::Store::get(&store, &keys.cluster("jwt-signing-key"))
            .await
            .unwrap()
            .unwrap()
            .value
    });
    assert_eq!(stored, lb_store::secrets::MOVED_MARKER);
}
