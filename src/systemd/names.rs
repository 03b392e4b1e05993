//! Unit names for apps and workers.
//!
//! Every app gets `aw-<app>.slice`, which systemd nests under `aw.slice`
//! because of the dash; each worker gets `aw-<app>-<pid>.scope` in it. A
//! dash inside an app name would nest the slice one level deeper
//! (`aw-shop-api.slice` lives under `aw-shop.slice`), so app names are
//! escaped as `systemd-escape` does: `shop-api` becomes `shop\x2dapi`.

/// `systemd-escape` for a string (not a path): keeps `[A-Za-z0-9:_.]`
/// (but not a leading `.`) and writes every other byte as `\xNN`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b':' || b == b'_' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

pub fn slice_name(app: &str) -> String {
    format!("aw-{}.slice", escape(app))
}

pub fn scope_name(app: &str, pid: u32) -> String {
    format!("aw-{}-{pid}.scope", escape(app))
}

/// The app slice's cgroup, as systemd lays it out.
pub fn slice_cgroup(app: &str) -> String {
    format!("/aw.slice/{}", slice_name(app))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_systemd_escape() {
        // Checked against `systemd-escape shop-api` → shop\x2dapi.
        assert_eq!(escape("shop-api"), "shop\\x2dapi");
        assert_eq!(escape("shop_api.v2"), "shop_api.v2");
        assert_eq!(escape(".hidden"), "\\x2ehidden");
        assert_eq!(escape("a b"), "a\\x20b");
    }

    #[test]
    fn dashed_app_stays_one_level_below_aw_slice() {
        assert_eq!(slice_name("shop-api"), "aw-shop\\x2dapi.slice");
        assert_eq!(slice_cgroup("shop-api"), "/aw.slice/aw-shop\\x2dapi.slice");
        assert_eq!(scope_name("shop-api", 42), "aw-shop\\x2dapi-42.scope");
    }
}
