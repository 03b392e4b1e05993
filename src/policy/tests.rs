use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::*;
use crate::paths::HostPaths;

struct Tree {
    dir: TempDir,
}

impl Tree {
    fn new() -> Self {
        Self {
            dir: TempDir::new().unwrap(),
        }
    }

    fn paths(&self) -> HostPaths {
        HostPaths::new(self.dir.path())
    }

    fn write(&self, host_path: &str, text: &str) -> PathBuf {
        let p = self.paths().resolve(host_path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        p
    }

    fn load(&self) -> Result<Policy, PolicyErrors> {
        load(&self.paths())
    }

    fn errors(&self) -> Vec<PolicyError> {
        self.load().expect_err("policy should be refused").0
    }
}

const SHOP: &str = "unit = \"shop.service\"\nserver = \"uwsgi\"\n[memory]\nsoft_limit = \"300M\"\nhard_limit = \"400M\"\n";

fn one_error(tree: &Tree) -> PolicyError {
    let mut errors = tree.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors.remove(0)
}

#[test]
fn no_files_means_defaults_and_no_apps() {
    let tree = Tree::new();
    let policy = tree.load().unwrap();
    assert_eq!(policy.global, GlobalPolicy::default());
    assert!(policy.apps.is_empty());
    assert!(policy.to_toml().contains("nothing will be managed"));
}

#[test]
fn shipped_files_are_valid() {
    let tree = Tree::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let global = fs::read_to_string(repo.join("adaptive-workers.toml")).unwrap();
    tree.write("/etc/adaptive-workers/adaptive-workers.toml", &global);
    for name in ["uwsgi-shop", "gunicorn-blog", "unicorn-shelf"] {
        let text = fs::read_to_string(repo.join(format!("examples/{name}.toml"))).unwrap();
        tree.write(
            &format!("/etc/adaptive-workers/policies.d/{name}.toml"),
            &text,
        );
    }
    let policy = tree.load().unwrap();
    // The shipped global file spells out the defaults.
    assert_eq!(policy.global.host, GlobalPolicy::default().host);
    assert_eq!(policy.global.workers, GlobalPolicy::default().workers);
    assert_eq!(policy.apps.len(), 3);
    assert_eq!(
        policy.app("unicorn-shelf").unwrap().server,
        ServerKind::Unicorn
    );
}

#[test]
fn unicorn_refuses_freezing_and_stops_idle_workers_by_default() {
    let tree = Tree::new();
    let path = tree.write(
        "/etc/adaptive-workers/policies.d/shelf.toml",
        "unit = \"shelf.service\"\nserver = \"unicorn\"\n[scaling]\nmax_workers = 4\n",
    );
    let app = tree.load().unwrap().apps.remove(0);
    assert_eq!(app.scaling.unwrap().scale_down, ScaleDown::Stop);
    tree.write(
        "/etc/adaptive-workers/policies.d/shelf.toml",
        "unit = \"shelf.service\"\nserver = \"unicorn\"\n[scaling]\nmax_workers = 4\nscale_down = \"freeze\"\n",
    );
    let e = one_error(&tree);
    assert_eq!(e.file, path);
    assert_eq!(e.position.map(|p| p.0), Some(5));
    assert_eq!(e.key.as_deref(), Some("scaling.scale_down"));
    assert!(e.message.contains("heartbeat"), "{e}");
}

#[test]
fn app_values_are_read_with_units() {
    let tree = Tree::new();
    tree.write("/etc/adaptive-workers/policies.d/shop.toml", SHOP);
    let policy = tree.load().unwrap();
    let app = policy.app("shop").unwrap();
    assert_eq!(app.unit, "shop.service");
    assert_eq!(app.server, ServerKind::Uwsgi);
    assert_eq!(app.memory.soft_limit, Some(ByteSize(300 << 20)));
    assert_eq!(app.memory.hard_limit, Some(ByteSize(400 << 20)));
    assert_eq!(app.mode, Mode::Enforce);
    assert_eq!(
        app.memory.min_lifetime,
        GlobalPolicy::default().workers.min_lifetime
    );
}

#[test]
fn uwsgi_names_count_megabytes() {
    let tree = Tree::new();
    tree.write(
        "/etc/adaptive-workers/policies.d/shop.toml",
        "unit = \"shop.service\"\nserver = \"uwsgi\"\n[memory]\nreload-on-rss = 256\nevil-reload-on-rss = 512\n",
    );
    let app = tree.load().unwrap().apps.remove(0);
    assert_eq!(app.memory.soft_limit, Some(ByteSize(256 << 20)));
    assert_eq!(app.memory.hard_limit, Some(ByteSize(512 << 20)));
}

#[test]
fn etc_wins_over_run_over_usr_lib() {
    let tree = Tree::new();
    tree.write(
        "/usr/lib/adaptive-workers/policies.d/shop.toml",
        "unit = \"lib.service\"\nserver = \"uwsgi\"\n",
    );
    tree.write(
        "/run/adaptive-workers/policies.d/shop.toml",
        "unit = \"run.service\"\nserver = \"uwsgi\"\n",
    );
    tree.write(
        "/usr/lib/adaptive-workers/policies.d/blog.toml",
        "unit = \"blog.service\"\nserver = \"gunicorn\"\n",
    );
    tree.write(
        "/usr/lib/adaptive-workers/adaptive-workers.toml",
        "mode = \"observe\"\n",
    );
    let policy = tree.load().unwrap();
    assert_eq!(policy.app("shop").unwrap().unit, "run.service");
    assert_eq!(policy.app("blog").unwrap().unit, "blog.service");
    assert_eq!(policy.global.mode, Mode::Observe);
    // Apps inherit the global mode unless they set their own.
    assert_eq!(policy.app("blog").unwrap().mode, Mode::Observe);

    tree.write(
        "/etc/adaptive-workers/policies.d/shop.toml",
        "unit = \"etc.service\"\nserver = \"uwsgi\"\nmode = \"enforce\"\n",
    );
    let policy = tree.load().unwrap();
    assert_eq!(policy.app("shop").unwrap().unit, "etc.service");
    assert_eq!(policy.app("shop").unwrap().mode, Mode::Enforce);
}

#[test]
fn symlink_to_dev_null_masks() {
    let tree = Tree::new();
    tree.write("/usr/lib/adaptive-workers/policies.d/shop.toml", SHOP);
    tree.write(
        "/usr/lib/adaptive-workers/adaptive-workers.toml",
        "mode = \"observe\"\n",
    );
    let etc = tree.paths().resolve("/etc/adaptive-workers/policies.d");
    fs::create_dir_all(&etc).unwrap();
    symlink("/dev/null", etc.join("shop.toml")).unwrap();
    symlink(
        "/dev/null",
        etc.parent().unwrap().join("adaptive-workers.toml"),
    )
    .unwrap();
    let policy = tree.load().unwrap();
    assert!(policy.apps.is_empty());
    assert_eq!(
        policy.global.mode,
        Mode::Enforce,
        "masked global file means defaults"
    );
}

#[test]
fn unknown_key_names_file_line_column_and_key() {
    let tree = Tree::new();
    let path = tree.write(
        "/etc/adaptive-workers/policies.d/shop.toml",
        "unit = \"shop.service\"\nserver = \"uwsgi\"\n[memory]\nsoft_limt = \"300M\"\n",
    );
    let e = one_error(&tree);
    assert_eq!(e.file, path);
    assert_eq!(e.position, Some((4, 1)));
    assert_eq!(e.key.as_deref(), Some("memory.soft_limt"));
    assert!(e.message.contains("unknown field"), "{e}");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}:4:1: memory.soft_limt: ", path.display())),
        "{shown}"
    );
}

#[test]
fn wrong_type_names_the_key() {
    let tree = Tree::new();
    tree.write(
        "/etc/adaptive-workers/adaptive-workers.toml",
        "[host]\ninterval = \"100ms\"\nlower_bound = 85\n",
    );
    let e = one_error(&tree);
    assert_eq!(e.position.map(|p| p.0), Some(3));
    assert_eq!(e.key.as_deref(), Some("host.lower_bound"));
    assert!(e.message.contains("\"85%\""), "{e}");
}

#[test]
fn bad_size_is_explained() {
    let tree = Tree::new();
    tree.write(
        "/etc/adaptive-workers/policies.d/shop.toml",
        "unit = \"shop.service\"\nserver = \"uwsgi\"\n[memory]\nsoft_limit = \"300Q\"\n",
    );
    let e = one_error(&tree);
    assert_eq!(e.key.as_deref(), Some("memory.soft_limit"));
    assert_eq!(e.position, Some((4, 14)));
    assert!(e.message.contains("unknown size unit"), "{e}");
}

#[test]
fn lower_bound_must_be_below_upper() {
    let tree = Tree::new();
    tree.write(
        "/etc/adaptive-workers/adaptive-workers.toml",
        "[host]\nlower_bound = \"90%\"\nupper_bound = \"80%\"\n",
    );
    let e = one_error(&tree);
    assert_eq!(e.key.as_deref(), Some("host.lower_bound"));
    assert_eq!(e.position, Some((2, 15)));
    assert!(e.message.contains("below the upper bound"), "{e}");
}

#[test]
fn hard_limit_must_be_above_soft() {
    let tree = Tree::new();
    tree.write(
        "/etc/adaptive-workers/policies.d/shop.toml",
        "unit = \"shop.service\"\nserver = \"uwsgi\"\n[memory]\nsoft_limit = \"400M\"\nhard_limit = \"400M\"\n",
    );
    let e = one_error(&tree);
    assert_eq!(e.key.as_deref(), Some("memory.hard_limit"));
    assert_eq!(e.position.map(|p| p.0), Some(5));
    assert!(e.message.contains("must be above the soft limit"), "{e}");
}

#[test]
fn unit_must_be_a_service() {
    let tree = Tree::new();
    tree.write(
        "/etc/adaptive-workers/policies.d/shop.toml",
        "unit = \"shop.socket\"\nserver = \"uwsgi\"\n",
    );
    let e = one_error(&tree);
    assert_eq!(e.key.as_deref(), Some("unit"));
    assert_eq!(e.position, Some((1, 8)));
    assert!(e.message.contains("not a .service"), "{e}");
}

#[test]
fn two_policies_for_one_unit() {
    let tree = Tree::new();
    tree.write("/etc/adaptive-workers/policies.d/a.toml", SHOP);
    let second = tree.write("/etc/adaptive-workers/policies.d/b.toml", SHOP);
    let e = one_error(&tree);
    assert_eq!(e.file, second);
    assert_eq!(e.key.as_deref(), Some("unit"));
    assert_eq!(e.position, Some((1, 1)));
    assert!(e.message.contains("already has a policy in"), "{e}");
    assert!(e.message.contains("a.toml"), "{e}");
}

#[test]
fn missing_keys_are_reported_together() {
    let tree = Tree::new();
    tree.write(
        "/etc/adaptive-workers/policies.d/shop.toml",
        "[memory]\nsoft_limit = \"1G\"\n",
    );
    let errors = tree.errors();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{text:?}");
    assert!(text[0].contains("missing key \"unit\""));
    assert!(text[1].contains("missing key \"server\""));
}

#[test]
fn world_writable_file_is_refused() {
    let tree = Tree::new();
    let p = tree.write("/etc/adaptive-workers/policies.d/shop.toml", SHOP);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
    let e = one_error(&tree);
    assert_eq!(e.file, p);
    assert!(e.message.contains("writable by every user"), "{e}");
}

#[test]
fn file_owned_by_another_user_is_refused() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: chown to another user needs root");
        return;
    }
    let tree = Tree::new();
    let p = tree.write("/etc/adaptive-workers/policies.d/shop.toml", SHOP);
    std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
    let e = one_error(&tree);
    assert!(e.message.contains("owned by uid 65534"), "{e}");
}

#[test]
fn unreadable_file_is_named() {
    let tree = Tree::new();
    let p = tree
        .paths()
        .resolve("/etc/adaptive-workers/policies.d/shop.toml");
    fs::create_dir_all(&p).unwrap();
    let e = one_error(&tree);
    assert_eq!(e.file, p);
    assert!(e.message.contains("not a regular file"), "{e}");
}

#[test]
fn bad_app_file_name_is_refused() {
    let tree = Tree::new();
    tree.write("/etc/adaptive-workers/policies.d/my app.toml", SHOP);
    let e = one_error(&tree);
    assert!(e.message.contains("not a usable app name"), "{e}");
}

#[test]
fn tables_must_match_the_server() {
    let tree = Tree::new();
    tree.write(
        "/etc/adaptive-workers/policies.d/blog.toml",
        "unit = \"blog.service\"\nserver = \"gunicorn\"\n[uwsgi]\nstats = \"/run/x.sock\"\n",
    );
    let e = one_error(&tree);
    assert_eq!(e.key.as_deref(), Some("uwsgi"));
}

#[test]
fn generic_signals_are_restricted() {
    let tree = Tree::new();
    tree.write(
        "/etc/adaptive-workers/policies.d/x.toml",
        "unit = \"x.service\"\nserver = \"generic\"\n[generic]\nrecycle_signal = \"SIGKILL\"\n",
    );
    let e = one_error(&tree);
    assert_eq!(e.key.as_deref(), Some("generic.recycle_signal"));
    tree.write(
        "/etc/adaptive-workers/policies.d/x.toml",
        "unit = \"x.service\"\nserver = \"generic\"\n[generic]\nrecycle_signal = \"usr1\"\n",
    );
    let app = tree.load().unwrap().apps.remove(0);
    assert_eq!(app.generic.unwrap().recycle_signal, Signal(libc::SIGUSR1));
}

#[test]
fn scaling_bounds_are_checked() {
    let tree = Tree::new();
    tree.write(
        "/etc/adaptive-workers/policies.d/shop.toml",
        "unit = \"shop.service\"\nserver = \"uwsgi\"\n[scaling]\nmin_workers = 5\nmax_workers = 3\nsockets = [\"127.0.0.1:8000\", \"/run/shop.sock\", \"nowhere\"]\n",
    );
    let errors = tree.errors();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].key.as_deref(), Some("scaling.min_workers"));
    assert_eq!(errors[1].key.as_deref(), Some("scaling.sockets"));
    assert_eq!(errors[1].position.map(|p| p.0), Some(6));
}

#[test]
fn effective_policy_prints_as_valid_toml() {
    let tree = Tree::new();
    tree.write("/etc/adaptive-workers/policies.d/shop.toml", SHOP);
    let text = tree.load().unwrap().to_toml();
    assert!(text.contains("[apps.shop.memory]"), "{text}");
    assert!(text.contains("soft_limit = \"300M\""), "{text}");
    assert!(text.contains("lower_bound = \"85%\""), "{text}");
    let parsed: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(
        parsed["apps"]["shop"]["unit"].as_str(),
        Some("shop.service")
    );
}

mod bad_input;
