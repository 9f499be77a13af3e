//! Where a day's files go: `daily` (`<dest>/<date>/<TABLE>/part-...`, manifest
//! `<date>/_manifest.json`) or `hive` (`<dest>/<TABLE>/dt=<date>/part-...`, manifest
//! `_manifests/<date>.json`, for Athena, Spark and Trino partitions). Manifest paths are
//! relative to [`Layout::base`].

use super::manifest::MANIFEST_FILE;

/// The folder of the hive layout's manifests, one per date.
const HIVE_MANIFESTS: &str = "_manifests";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Layout {
    #[default]
    Daily,
    Hive,
}

impl Layout {
    /// The manifest's `layout`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Daily => "daily",
            Layout::Hive => "hive",
        }
    }

    /// The key prefix manifest paths are relative to.
    pub fn base(self, date: &str) -> String {
        match self {
            Layout::Daily => date.to_string(),
            Layout::Hive => String::new(),
        }
    }

    /// A table's folder, relative to [`Layout::base`].
    pub fn table_dir(self, date: &str, table: &str) -> String {
        match self {
            Layout::Daily => table.to_string(),
            Layout::Hive => format!("{table}/dt={date}"),
        }
    }

    pub fn manifest_key(self, date: &str) -> String {
        match self {
            Layout::Daily => format!("{date}/{MANIFEST_FILE}"),
            Layout::Hive => format!("{HIVE_MANIFESTS}/{date}.json"),
        }
    }

    /// The manifest key of a day folder opened on its own (a daily day folder as the root).
    pub fn day_folder_manifest_key() -> &'static str {
        MANIFEST_FILE
    }

    /// The layout and date whose manifest `key` (relative to an export root) is, if it is one.
    pub fn of_manifest_key(key: &str) -> Option<(Layout, String)> {
        let daily = key.strip_suffix(&format!("/{MANIFEST_FILE}")).filter(|d| !d.contains('/'));
        let hive = key.strip_prefix(&format!("{HIVE_MANIFESTS}/")).and_then(|k| k.strip_suffix(".json"));
        match (daily, hive) {
            (Some(d), _) => Some((Layout::Daily, d.to_string())),
            (None, Some(d)) if !d.contains('/') => Some((Layout::Hive, d.to_string())),
            _ => None,
        }
    }

    /// Where this layout keeps the files of `date` for a reader pointed at the export root
    /// `root`: the day folder (daily) or the root itself (hive).
    pub fn location(self, root: &str, date: &str) -> String {
        match self.base(date) {
            base if base.is_empty() => root.to_string(),
            base => Layout::join(root, &base),
        }
    }

    /// Whether `key` (relative to the destination) is a part of `date` in this layout.
    pub fn holds_part_of(self, key: &str, date: &str) -> bool {
        match self {
            Layout::Daily => key.starts_with(&format!("{date}/")) && !key.ends_with(MANIFEST_FILE),
            Layout::Hive => {
                let mut parts = key.split('/');
                let (table, dt) = (parts.next(), parts.next());
                table.is_some_and(|t| !t.starts_with('_'))
                    && dt == Some(&format!("dt={date}"))
                    && parts.next().is_some()
            }
        }
    }

    pub fn join(base: &str, path: &str) -> String {
        if base.is_empty() { path.to_string() } else { format!("{}/{path}", base.trim_end_matches('/')) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_per_layout() {
        let d = "2026-11-23";
        assert_eq!(Layout::join(&Layout::Daily.base(d), &Layout::Daily.table_dir(d, "OWNERS")), "2026-11-23/OWNERS");
        assert_eq!(Layout::join(&Layout::Hive.base(d), &Layout::Hive.table_dir(d, "OWNERS")), "OWNERS/dt=2026-11-23");
        assert_eq!(Layout::Hive.manifest_key(d), "_manifests/2026-11-23.json");
        assert!(Layout::Hive.holds_part_of("OWNERS/dt=2026-11-23/part-00000.csv.gz", d));
        assert!(!Layout::Hive.holds_part_of("OWNERS/dt=2026-11-22/part-00000.csv.gz", d));
        assert!(!Layout::Hive.holds_part_of("_manifests/2026-11-23.json", d));
        assert!(Layout::Daily.holds_part_of("2026-11-23/OWNERS/part-00000.csv.gz", d));
        assert!(!Layout::Daily.holds_part_of("2026-11-23/_manifest.json", d));
        for layout in [Layout::Daily, Layout::Hive] {
            assert_eq!(Layout::of_manifest_key(&layout.manifest_key(d)), Some((layout, d.to_string())));
        }
        assert_eq!(Layout::of_manifest_key("2026-11-23/OWNERS/_manifest.json"), None);
        assert_eq!(Layout::of_manifest_key("_manifests/x/2026-11-23.json"), None);
        assert_eq!(Layout::Daily.location("s3://b/x", d), "s3://b/x/2026-11-23");
        assert_eq!(Layout::Hive.location("s3://b/x", d), "s3://b/x");
    }
}
