//! Fuzz target `download_path`: the `download` action's choice of a file, from the alias, the
//! logged-in user name and the `filename` parameter (raw, and percent-decoded as the server
//! decodes it), over a real tree with symlinks that lead out of their alias.
//!
//! The invariant, beyond "no panic": a file that is served is a regular file inside its
//! alias root with every symlink resolved; a private root is exactly one plain component
//! below `private/`; a name with a `..` component, NUL or a backslash is refused as outside;
//! and the `Content-Disposition` built from the name cannot inject a header or a quote.
//!
//! Input: `ALIAS\nUSER\nFILENAME` (missing lines are empty).
#![no_main]

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pollgate::fuzzing::{content_disposition, download_alias_root, resolve_download, Resolve};
use pollgate::params::decode;

/// A download tree made once per process, beside a file that must never be served:
///
/// ```text
/// outside.txt                 (never served)
/// fs/private/alice/notes.txt, sub/deep.txt
/// fs/private/alice/up -> ../bob          (a symlink to another user's folder)
/// fs/private/alice/out -> ../../../outside.txt
/// fs/private/alice/self -> notes.txt     (a symlink that stays inside)
/// fs/private/bob/secret.txt
/// fs/public/readme.txt
/// fs/public/private -> ../private        (out of the public alias)
/// fs/public-other/x.txt                  (a sibling whose name shares a prefix)
/// ```
struct Tree {
    fs_root: PathBuf,
}

fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("pollgate-fuzz-download-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let fs_root = base.join("fs");
        let write = |rel: &str| {
            let path = base.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, rel).unwrap();
        };
        for rel in [
            "outside.txt",
            "fs/private/alice/notes.txt",
            "fs/private/alice/sub/deep.txt",
            "fs/private/bob/secret.txt",
            "fs/public/readme.txt",
            "fs/public-other/x.txt",
        ] {
            write(rel);
        }
        let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, base.join(at)).unwrap();
        link("../bob", "fs/private/alice/up");
        link("../../../outside.txt", "fs/private/alice/out");
        link("notes.txt", "fs/private/alice/self");
        link("../private", "fs/public/private");
        Tree { fs_root: fs_root.canonicalize().unwrap() }
    })
}

/// Resolves `filename` and checks the invariant; returns nothing, panics on a violation.
fn check(alias_root: &Path, filename: &str) {
    let outcome = resolve_download(alias_root, filename);
    let lexically_outside = filename.contains(['\0', '\\'])
        || Path::new(filename).components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if lexically_outside {
        assert_eq!(outcome, Err(Resolve::Outside), "{filename:?} must be refused before the file system is asked");
    }
    if let Ok(path) = outcome {
        let root = alias_root.canonicalize().expect("a root that served a file exists");
        assert!(path.starts_with(&root), "{filename:?} under {root:?} escaped to {path:?}");
        assert_eq!(path.canonicalize().ok().as_ref(), Some(&path), "{path:?} is not fully resolved");
        assert!(path.is_file(), "{path:?} is not a regular file");
        let d = content_disposition(&path.file_name().unwrap().to_string_lossy());
        assert!(d.bytes().all(|b| (0x20..0x7f).contains(&b)), "header value {d:?}");
        assert!(!d.contains("\r") && !d.contains("\n"), "header value {d:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let tree = tree();
    let mut lines = data.splitn(3, |b| *b == b'\n');
    let alias = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let user = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let raw = lines.next().unwrap_or_default();

    // Whatever the name, a Content-Disposition is one safe header value.
    let d = content_disposition(&String::from_utf8_lossy(raw));
    assert!(d.bytes().all(|b| (0x20..0x7f).contains(&b)), "header value {d:?}");
    let quoted_name = d.split(';').nth(1).unwrap_or_default();
    assert!(quoted_name.matches('"').count() <= 2, "a quote inside the fallback name: {d:?}");

    let Ok(alias_root) = download_alias_root(&tree.fs_root, &alias, &user) else { return };
    let below: Vec<Component> =
        alias_root.strip_prefix(&tree.fs_root).expect("an alias root is under fs_root").components().collect();
    let plain = below.iter().all(|c| matches!(c, Component::Normal(_)));
    let shape_ok = match &below[..] {
        [Component::Normal(p)] => *p == "public",
        [Component::Normal(p), Component::Normal(_)] => *p == "private",
        _ => false,
    };
    assert!(plain && shape_ok, "alias {alias:?} for user {user:?} gave the root {alias_root:?}");

    // The parameter as the server sees it (decoded), and the raw bytes as a name.
    check(&alias_root, &decode(raw));
    check(&alias_root, &String::from_utf8_lossy(raw));
});
