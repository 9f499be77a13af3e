//! What an export root holds, read once by walking all of it: its dates (committed or not, in
//! either layout), its state, leases and claims, and whatever crmdump did not write or left
//! behind (staging files, probes, upload markers of older versions, foreign files). `verify`
//! and `status` both read a root through this.

use std::collections::{BTreeMap, BTreeSet};

use super::Sink;
use super::layout::Layout;
use super::lease;
use super::manifest::Manifest;
use crate::error::Result;

/// One export date of a root.
#[derive(Debug, Clone)]
pub struct Day {
    pub date: String,
    pub layout: Layout,
    /// The committed manifest, `None` for a date whose run was killed or is running.
    pub manifest: Option<Manifest>,
    /// Every file of the date (the manifest excluded), staging files included.
    pub files: Vec<String>,
}

/// What is under a root.
#[derive(Debug, Default)]
pub struct Scan {
    pub days: Vec<Day>,
    /// Files that are no part of any date nor of crmdump's own places, and what to do about each.
    pub strays: Vec<(String, &'static str)>,
    pub leases: Vec<lease::Seen>,
    /// The state files (`_state/<source>-<account>.json`).
    pub states: Vec<String>,
}

/// `YYYY-MM-DD`.
fn is_date(text: &str) -> bool {
    text.parse::<chrono::NaiveDate>().is_ok() && text.len() == 10
}

const PROBE: &str = "a probe a killed run left: remove it";
const FOREIGN: &str = "not crmdump's: move it away (Spark, Athena and Hive read every file of a folder)";
const UPLOAD_MARKER: &str = "the marker of a multipart upload an older crmdump started: abort that upload (or let a bucket lifecycle rule do it), then remove the marker";

/// Reads `sink` whole. Keys under `others` (such as the webhook journal) are left to whoever
/// checks them.
pub async fn scan(sink: &Sink, others: &[&str]) -> Result<Scan> {
    let mut out = Scan { leases: lease::list(sink).await?, ..Scan::default() };
    let mut daily: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut hive: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut manifests: BTreeSet<(Layout, String)> = BTreeSet::new();
    for key in sink.files_under("").await? {
        let mut parts = key.split('/');
        let first = parts.next().unwrap_or_default();
        let second = parts.next();
        if others.contains(&first) {
            continue;
        }
        if let Some((layout, date)) = Layout::of_manifest_key(&key) {
            manifests.insert((layout, date));
            continue;
        }
        match first {
            "_state" => {
                if second.is_some() && parts.next().is_none() {
                    out.states.push(key.clone());
                }
            }
            "_crmdump" => match second {
                Some("uploads") => out.strays.push((key.clone(), UPLOAD_MARKER)),
                Some(name) if name.starts_with("probe-") => out.strays.push((key.clone(), PROBE)),
                _ => {}
            },
            name if name.starts_with("_crmdump_probe-") => out.strays.push((key.clone(), PROBE)),
            date if is_date(date) && second.is_some() => daily.entry(date.to_string()).or_default().push(key.clone()),
            table => match second.and_then(|dt| dt.strip_prefix("dt=")) {
                Some(date) if is_date(date) && !table.starts_with('_') && parts.next().is_some() => {
                    hive.entry(date.to_string()).or_default().push(key.clone())
                }
                _ => out.strays.push((key.clone(), FOREIGN)),
            },
        }
    }
    for (layout, files_of) in [(Layout::Daily, &mut daily), (Layout::Hive, &mut hive)] {
        let mut dates: BTreeSet<String> = files_of.keys().cloned().collect();
        dates.extend(manifests.iter().filter(|(l, _)| *l == layout).map(|(_, d)| d.clone()));
        for date in dates {
            let manifest = match sink.get(&layout.manifest_key(&date)).await? {
                Some(bytes) => Some(Manifest::parse(&bytes, &layout.manifest_key(&date))?),
                None => None,
            };
            let files = files_of.remove(&date).unwrap_or_default();
            out.days.push(Day { date, layout, manifest, files });
        }
    }
    out.days.sort_by(|a, b| (&a.date, a.layout).cmp(&(&b.date, b.layout)));
    Ok(out)
}

impl Scan {
    /// What is wrong with the root besides the committed days' own contents, each with what
    /// to do: dates without a manifest, strays, leases gone stale.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for day in self.days.iter().filter(|d| d.manifest.is_none()) {
            let folder = match day.layout {
                Layout::Daily => format!("{}/", day.date),
                Layout::Hive => format!("dt={} partitions", day.date),
            };
            problems.push(format!(
                "{folder}: no manifest, {} files: a run of {} was killed, failed or is running; export {} again (the \
                 run removes them), or delete them",
                day.files.len(),
                day.date,
                day.date
            ));
        }
        for (key, what) in &self.strays {
            problems.push(format!("{key}: {what}"));
        }
        for l in &self.leases {
            if let Some(age) = l.age.filter(|a| a.to_std().is_ok_and(|a| a > lease::DEFAULT_STALE_AFTER)) {
                problems.push(format!(
                    "lease {}: not renewed for {} s by the store's clock: if its run is dead, `crmdump lease break` \
                     removes it (the next run takes it over once it has watched it stale)",
                    l.name,
                    age.num_seconds()
                ));
            }
        }
        problems
    }
}
