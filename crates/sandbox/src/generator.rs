//! Deterministic data of the sandbox CRM, generated lazily from `(seed, scale)`.
//!
//! Every value is a pure function of the seed, the object type, the record index and the
//! property, so the server never holds a type in memory and tests can ask for the ground
//! truth of any record. Associations follow a few arithmetic rules whose inverse is cheap,
//! so both directions of every pair can be served and checked.

use chrono::{DateTime, Duration, Utc};

use super::changes::{Changes, ModifiedIndex, Touch};

/// Records were last modified within this many days before the anchor: a backfill over
/// that span holds every record.
pub const UPDATE_SPAN_DAYS: i64 = 30;

/// Settings of one sandbox account.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Everything generated derives from this.
    pub seed: u64,
    /// Records per object type.
    pub scale: u64,
    /// "Now" for the generated data: timestamps fall in the two years before it.
    pub anchor: DateTime<Utc>,
    /// The Bearer token the server accepts; `None` accepts any non-empty token.
    pub token: Option<String>,
    /// Scopes the token lacks: endpoints needing them answer 403 with HubSpot's body
    /// (`crm.objects.<type>.read`, `crm.lists.read`, `behavioral_events.event_definitions.read_write`,
    /// `settings.users.teams.read`).
    pub missing_scopes: Vec<String>,
    /// Requests allowed per rolling period (429 `TEN_SECONDLY_ROLLING` beyond), `None` for
    /// no limit. Search has its own 5 per second either way.
    pub rate_limit: Option<(u32, std::time::Duration)>,
    /// Faults injected into API responses.
    pub faults: super::faults::Faults,
    /// Requests the account may make "today": past it, 429 with HubSpot's DAILY body.
    pub daily_limit: Option<u64>,
    /// Share of live records served with a defect (see [`Defect`]) by list and batch read.
    pub bad_records: f64,
    /// Number fields without their occasional "N/A".
    pub clean_numbers: bool,
    /// Custom behavioral event types added to the standard three.
    pub extra_event_types: u32,
    /// Records modified while a search is being paged: after answering a page of a search
    /// on the last-modified date, the sandbox modifies this many of the records the page
    /// returned (as a user editing records during a nightly run would), moving them out of
    /// the search's window.
    pub search_churn: u32,
    /// Search sorts by last-modified as if each record were modified up to this many
    /// milliseconds later (out of order across pages, as HubSpot's index can be).
    pub search_disorder_ms: i64,
    /// A change is invisible to search until this many milliseconds after it was made.
    pub index_delay_ms: i64,
    /// Search answers as if no filter had been sent (a broken proxy, a misbehaving index).
    pub search_ignores_filters: bool,
    /// Answer every API request with a 307 to this base URL (see the server's `redirect`).
    pub redirect_to: Option<String>,
    /// Which CRM's API the server imitates.
    pub flavor: Flavor,
    /// Longest request URL (path and query) answered; longer ones get HubSpot's 414. HubSpot
    /// refuses URLs from about 16,000 bytes.
    pub max_url_bytes: usize,
    /// Where to send the webhooks of the changes test hooks make, if anywhere.
    pub webhooks: Option<crate::webhooks::WebhookConfig>,
}

/// The CRM API a sandbox imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Flavor {
    #[default]
    Hubspot,
    Pipedrive,
}

/// What is wrong with a bad record as served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// The record comes without its `id`.
    NoId,
    /// The touched property holds bytes that are not UTF-8.
    InvalidUtf8,
    /// The touched property holds a 2 MiB value.
    Huge,
    /// The record's own creation time is not a timestamp (`createdAt` in HubSpot,
    /// `add_time` in Pipedrive): the record is exported with that column NULL, counted.
    BadTimestamp,
}

impl Defect {
    /// Every defect, in the order a record's hash picks them.
    pub const ALL: [Defect; 4] = [Defect::NoId, Defect::InvalidUtf8, Defect::Huge, Defect::BadTimestamp];

    /// The text served in place of the creation time by [`Defect::BadTimestamp`].
    pub const BAD_TIMESTAMP: &'static str = "last Tuesday";
}

impl SandboxConfig {
    pub fn new(seed: u64, scale: u64) -> SandboxConfig {
        SandboxConfig {
            seed,
            scale,
            anchor: default_anchor(),
            token: None,
            missing_scopes: Vec::new(),
            rate_limit: None,
            faults: Default::default(),
            daily_limit: None,
            bad_records: 0.0,
            clean_numbers: false,
            extra_event_types: 0,
            search_churn: 0,
            search_disorder_ms: 0,
            index_delay_ms: 0,
            search_ignores_filters: false,
            redirect_to: None,
            flavor: Flavor::Hubspot,
            max_url_bytes: crate::settings::DEFAULT_MAX_URL_BYTES,
            webhooks: None,
        }
    }
}

/// The start of the current UTC day: data is stable within a day.
pub fn default_anchor() -> DateTime<Utc> {
    let now = Utc::now();
    now.date_naive().and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// splitmix64: a tiny, well-known mixing function; the whole generator is built on it.
pub(super) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub(super) fn hash(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5EED_u64, |acc, &p| mix(acc ^ p))
}

/// A property definition served by `/crm/v3/properties/{type}`.
#[derive(Debug, Clone)]
pub struct PropertyDef {
    pub name: String,
    pub label: String,
    /// HubSpot's `type`: string, number, datetime, date, bool, enumeration, phone_number.
    pub ty: &'static str,
    pub field_type: &'static str,
    pub group: &'static str,
    pub options: Vec<(String, String)>,
    pub hubspot_defined: bool,
    pub calculated: bool,
    pub has_unique_value: bool,
    /// Most history entries a value of this property has (1: only the current value).
    pub history_depth: u64,
    role: Role,
}

/// What a property's values are made of.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    ObjectId,
    CreatedAt,
    UpdatedAt,
    Owner,
    FirstName,
    LastName,
    Email,
    /// A deal pipeline or ticket pipeline and its stage.
    Pipeline,
    Stage,
    /// A number field where HubSpot sometimes sends "N/A".
    SloppyNumber,
    /// `hs_merged_object_ids`: the ids merged into the record, `;`-separated; null until a
    /// merge.
    MergedIds,
    /// A property added after the account was generated (`POST /_sandbox/add-property`):
    /// not defined before, then set by each touch after it was added.
    Late,
    Generic,
}

/// One object type of the sandbox account.
#[derive(Debug, Clone)]
pub struct SandboxType {
    pub api_name: &'static str,
    pub type_id: String,
    pub singular_label: String,
    pub plural_label: String,
    /// Set for custom objects (`p<portal>_<name>`).
    pub fully_qualified_name: Option<String>,
    pub primary_display_property: &'static str,
    pub properties: Vec<PropertyDef>,
    pub id_base: i64,
    /// Records of this type (archived ones included).
    pub count: u64,
    /// The scope a token needs to read this type.
    pub scope: String,
    ordinal: u64,
}

impl SandboxType {
    pub fn is_custom(&self) -> bool {
        self.fully_qualified_name.is_some()
    }

    /// Record index of an id, when the id belongs to this type.
    pub fn index_of(&self, id: i64) -> Option<u64> {
        let i = id.checked_sub(self.id_base)?;
        (i >= 0 && (i as u64) < self.count).then_some(i as u64)
    }

    pub fn id_of(&self, index: u64) -> i64 {
        self.id_base + index as i64
    }
}

/// An association type (label) between two object types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationType {
    pub category: &'static str,
    pub type_id: i32,
    pub label: Option<&'static str>,
}

const fn assoc(category: &'static str, type_id: i32, label: Option<&'static str>) -> AssociationType {
    AssociationType { category, type_id, label }
}

/// How the records of two types are linked; each shape has a cheap inverse.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// from i -> to i / k
    Div(u64),
    /// from i -> to (i + s) mod n
    Shift(u64),
    /// from i with i % m == 0 -> to the last record
    Hub(u64),
}

struct Rule {
    from: usize,
    to: usize,
    shape: Shape,
    forward: &'static [AssociationType],
    inverse: &'static [AssociationType],
}

const HD: &str = "HUBSPOT_DEFINED";
const UD: &str = "USER_DEFINED";

/// An owner served by `/crm/v3/owners`.
#[derive(Debug, Clone)]
pub struct Owner {
    pub id: i64,
    pub user_id: i64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub archived: bool,
    pub created_at: String,
    pub updated_at: String,
    /// (team id, team name, primary)
    pub teams: Vec<(String, String, bool)>,
}

/// A pipeline stage: id, label, metadata pairs.
pub type Stage = (String, String, Vec<(&'static str, String)>);

/// A pipeline with its stages.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub id: String,
    pub label: String,
    pub display_order: i32,
    pub created_at: String,
    pub updated_at: String,
    pub stages: Vec<Stage>,
}

/// One generated record.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: i64,
    pub created_at: String,
    pub updated_at: String,
    pub archived: bool,
    pub archived_at: Option<String>,
}

/// One historical value of a property (`ValueWithTimestamp`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub value: String,
    pub timestamp: String,
    pub source_type: &'static str,
    /// Left out when there is none, as HubSpot does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by_user_id: Option<i64>,
}

/// The sandbox account's whole data set, as functions.
pub struct Generator {
    pub config: SandboxConfig,
    pub portal_id: i64,
    pub types: Vec<SandboxType>,
    pub owners: Vec<Owner>,
    rules: Vec<Rule>,
    /// Touches and archives made through the test hooks.
    changes: Changes,
    event_types: Vec<EventTypeDef>,
}

/// Values that trip exporters: separators, quotes, line breaks, unicode, padding.
pub(super) const TRICKY_TEXT: &[&str] = &[
    "Smith, John",
    "He said \"hello\"",
    "line one\nline two",
    "crlf\r\nline",
    "Zoë Ångström",
    "日本語のテキスト",
    "emoji 🚀 ok",
    "  padded  ",
    "comma, \"quote\" and\nnewline",
    "tab\there",
    "a;b;c",
    "'single quotes'",
    "ends with backslash \\",
];

pub(super) const FIRST_NAMES: &[&str] =
    &["Ana", "Bo", "Chloé", "Dmitri", "Eun-ji", "Farid", "Grace", "Håkon", "Isabel", "Jun"];
pub(super) const LAST_NAMES: &[&str] =
    &["Nguyen", "O'Brien", "Müller", "García", "Smith", "Kowalski", "Tanaka", "Okafor", "Rossi", "Ivanova"];

impl Generator {
    pub fn new(config: SandboxConfig) -> Generator {
        let portal_id = 10_000_000 + (hash(&[config.seed, 1]) % 89_999_999) as i64;
        let types = build_types(portal_id, config.scale);
        let owners = build_owners(&config);
        let rules = build_rules();
        let event_types = build_event_types(&config, portal_id);
        Generator { config, portal_id, types, owners, rules, changes: Changes::default(), event_types }
    }

    /// Records of type `t`, archived ones included.
    pub fn count(&self, t: usize) -> u64 {
        self.types[t].count
    }

    /// About one record in 40 is archived (in the recycle bin): listed only with
    /// `archived=true`, without associations.
    pub fn is_archived(&self, t: usize, index: u64) -> bool {
        self.changes.gone(t, index).is_none()
            && ((self.generated_archived(t, index) && self.changes.restored_at(t, index).is_none())
                || self.changes.archived_at(t, index).is_some())
    }

    /// Deleted for good, privacy-deleted or merged away: in no list, read or recycle bin.
    pub fn is_gone(&self, t: usize, index: u64) -> bool {
        self.changes.gone(t, index).is_some()
    }

    /// Neither archived nor gone.
    pub fn is_live(&self, t: usize, index: u64) -> bool {
        !self.is_archived(t, index) && !self.is_gone(t, index)
    }

    /// Every record merged into record `index`, directly or through a record merged into it
    /// (a into b, then b into c: c's are b and a), in the order they were merged. HubSpot's
    /// survivor keeps the identities of what it absorbed: a contact carries at most 250 merged
    /// ids, a limit successive merges reach, which only an accumulating list can.
    fn merged_chain(&self, t: usize, index: u64) -> Vec<u64> {
        let mut out = Vec::new();
        for merged in self.changes.merged_into(t, index) {
            out.push(merged);
            out.extend(self.merged_chain(t, merged));
        }
        out
    }

    /// The record a read of record `index` answers: itself, or the survivor it was merged into.
    pub fn survivor(&self, t: usize, index: u64) -> Option<u64> {
        match self.changes.gone(t, index) {
            None => Some(index),
            Some((super::changes::Gone::Merged(into), _)) => self.survivor(t, into),
            Some(_) => None,
        }
    }

    fn generated_archived(&self, t: usize, index: u64) -> bool {
        // The last record (the association hub) is never archived.
        index + 1 < self.count(t) && hash(&[self.config.seed, self.types[t].ordinal, index, 0xA5C41]).is_multiple_of(40)
    }

    /// Whether the token lacks `scope`.
    pub fn scope_missing(&self, scope: &str) -> bool {
        self.config.missing_scopes.iter().any(|s| s == scope)
    }

    /// A type by API name, type id or fully qualified name.
    pub fn type_index(&self, name: &str) -> Option<usize> {
        // HubSpot also takes the singular (`contact`, `line_item`) for the standard types.
        let singular = |t: &SandboxType| t.singular_label.to_lowercase().replace(' ', "_");
        self.types.iter().position(|t| {
            t.api_name.eq_ignore_ascii_case(name)
                || t.type_id == name
                || t.fully_qualified_name.as_deref() == Some(name)
                || (t.fully_qualified_name.is_none() && singular(t).eq_ignore_ascii_case(name))
        })
    }

    /// Created, last modified and (for records generated archived) archived times, before any
    /// test hook touched the record. Every record was last modified in the
    /// [`UPDATE_SPAN_DAYS`] days before the anchor, so backfills over that span see it all.
    fn generated_times(&self, t: usize, index: u64) -> (DateTime<Utc>, DateTime<Utc>, Option<DateTime<Utc>>) {
        let ty = &self.types[t];
        let h = hash(&[self.config.seed, ty.ordinal, index, 0xC4EA7ED]);
        let two_years_ms = 730 * 86_400_000_i64;
        let anchor = self.config.anchor;
        let created = anchor - Duration::milliseconds(1 + (h % two_years_ms as u64) as i64);
        let span_start = created.max(anchor - Duration::days(UPDATE_SPAN_DAYS));
        let span_ms = (anchor - span_start).num_milliseconds().max(1);
        let updated = span_start + Duration::milliseconds((mix(h) % span_ms as u64) as i64);
        let archived_at = self.generated_archived(t, index).then(|| {
            let left = (anchor - updated).num_milliseconds().max(1);
            updated + Duration::milliseconds((mix(h ^ 0xA5) % left as u64) as i64)
        });
        (created, updated, archived_at)
    }

    /// The record as the API shows it now (test hooks included).
    pub fn record(&self, t: usize, index: u64) -> Record {
        let (created, updated, archived_at) = self.record_times(t, index);
        Record {
            id: self.types[t].id_of(index),
            created_at: iso(created),
            updated_at: iso(updated),
            archived: archived_at.is_some(),
            archived_at: archived_at.map(iso),
        }
    }

    /// Created, last modified and archived times as the API shows them now.
    fn record_times(&self, t: usize, index: u64) -> (DateTime<Utc>, DateTime<Utc>, Option<DateTime<Utc>>) {
        let (created, mut updated, mut archived_at) = self.generated_times(t, index);
        if let Some(touch) = self.changes.touched(t, index) {
            updated = touch.at;
        }
        if let Some(bumped) = self.changes.bumped_at(t, index) {
            updated = updated.max(bumped);
        }
        if !self.is_archived(t, index) {
            archived_at = None;
        } else if archived_at.is_none() || self.changes.restored_at(t, index).is_some() {
            archived_at = self.changes.archived_at(t, index);
        }
        (created, updated, archived_at)
    }

    /// Last-modified millisecond of a record as the API shows it now.
    fn modified_ms(&self, t: usize, index: u64) -> i64 {
        self.record_times(t, index).1.timestamp_millis()
    }

    /// The change log of type `t` (touches and archivings, by record index).
    pub fn changes_of(&self, t: usize) -> Vec<super::changes::Change> {
        self.changes.of_type(t)
    }

    /// `(last-modified ms, id)` of every live record of type `t`, sorted: the search
    /// endpoint's view (search never returns archived records).
    pub fn modified_index(&self, t: usize) -> ModifiedIndex {
        self.changes.index(t, || {
            let mut index: Vec<(i64, i64)> = (0..self.count(t))
                .filter(|&i| self.is_live(t, i))
                .map(|i| (self.modified_ms(t, i), self.types[t].id_of(i)))
                .collect();
            index.sort_unstable();
            index
        })
    }

    /// The defect record `index` of type `t` is served with, if any (never the last record,
    /// the association hub, nor an archived one).
    pub fn defect(&self, t: usize, index: u64) -> Option<Defect> {
        let p = self.config.bad_records;
        if p <= 0.0 || index + 1 >= self.count(t) || !self.is_live(t, index) {
            return None;
        }
        let h = hash(&[self.config.seed, self.types[t].ordinal, index, 0xBAD]);
        if ((h >> 11) as f64 / (1u64 << 53) as f64) >= p {
            return None;
        }
        Some(Defect::ALL[(mix(h) % Defect::ALL.len() as u64) as usize])
    }

    /// Modifies the records of type `t` at `indexes` (the touched property and `updatedAt`,
    /// = `at`), leaving the next `touch`'s starting point alone. Returns their ids.
    pub fn touch_records(&self, t: usize, indexes: &[u64], at: DateTime<Utc>) -> Vec<i64> {
        let value = format!("touched at {}", iso(at));
        let touches: Vec<Touch> = indexes.iter().map(|_| Touch { at, value: value.clone() }).collect();
        self.changes.record_touches(t, indexes, &touches, self.changes.touch_cursor(t));
        indexes.iter().map(|&i| self.types[t].id_of(i)).collect()
    }

    /// The property a touch changes: the type's first plain text property.
    pub fn touch_property(&self, t: usize) -> usize {
        let props = &self.types[t].properties;
        props.iter().position(|p| p.role == Role::Generic && p.ty == "string").unwrap_or(0)
    }

    /// `POST /_sandbox/touch`: changes the touched property and `updatedAt` (= `at`) of
    /// `count` live records, taken in id order after the previous touch's last (wrapping),
    /// spread evenly over `spread_ms` milliseconds from `at` (0: all in the same millisecond).
    /// Returns the property's name, its new value and the ids.
    pub fn touch(
        &self,
        t: usize,
        count: u64,
        at: DateTime<Utc>,
        spread_ms: i64,
    ) -> Result<(String, String, Vec<i64>), String> {
        let n = self.count(t);
        let start = self.changes.touch_cursor(t);
        let picked: Vec<u64> =
            (0..n).map(|k| (start + k) % n).filter(|&i| self.is_live(t, i)).take(count as usize).collect();
        if (picked.len() as u64) < count {
            return Err(format!(
                "{} has only {} live records; cannot touch {count}",
                self.types[t].api_name,
                picked.len()
            ));
        }
        let value = format!("touched at {}", iso(at));
        let cursor = picked.last().map(|&i| (i + 1) % n).unwrap_or(start);
        let touches: Vec<Touch> = (0..picked.len() as i64)
            .map(|k| Touch {
                at: at + Duration::milliseconds(spread_ms * k / count.max(1) as i64),
                value: value.clone(),
            })
            .collect();
        self.changes.record_touches(t, &picked, &touches, cursor);
        let property = self.types[t].properties[self.touch_property(t)].name.clone();
        Ok((property, value, picked.iter().map(|&i| self.types[t].id_of(i)).collect()))
    }

    /// `POST /_sandbox/archive`: archives `count` live records at `at`, taken from the
    /// highest ids down (never the last record, the association hub). Returns the ids.
    pub fn archive(&self, t: usize, count: u64, at: DateTime<Utc>) -> Result<Vec<i64>, String> {
        let n = self.count(t);
        let skip = self.changes.archive_cursor(t);
        let mut picked = Vec::new();
        let mut from_end = skip;
        // From the second-to-last record down.
        while (picked.len() as u64) < count && from_end + 2 <= n {
            let i = n - 2 - from_end;
            if self.is_live(t, i) {
                picked.push(i);
            }
            from_end += 1;
        }
        if (picked.len() as u64) < count {
            return Err(format!(
                "{} has only {} live records to archive; cannot archive {count}",
                self.types[t].api_name,
                picked.len()
            ));
        }
        self.changes.record_archives(t, &picked, at, from_end);
        Ok(picked.iter().map(|&i| self.types[t].id_of(i)).collect())
    }

    /// `count` records of type `t` matching `wanted`, from the second-to-last down (never the
    /// last record, the association hub).
    fn pick_from_end(&self, t: usize, count: u64, wanted: impl Fn(u64) -> bool) -> Result<Vec<u64>, String> {
        let n = self.count(t);
        let picked: Vec<u64> = (0..n.saturating_sub(1)).rev().filter(|&i| wanted(i)).take(count as usize).collect();
        if (picked.len() as u64) < count {
            return Err(format!(
                "{} has only {} such records; cannot take {count}",
                self.types[t].api_name,
                picked.len()
            ));
        }
        Ok(picked)
    }

    /// `POST /_sandbox/delete` (and `privacy-delete`, contacts only): deletes `count` live
    /// records for good at `at`, from the highest ids down. Returns the ids.
    pub fn delete(&self, t: usize, count: u64, at: DateTime<Utc>, privacy: bool) -> Result<Vec<i64>, String> {
        if privacy && self.types[t].type_id != "0-1" {
            return Err("a privacy deletion is for contacts only".into());
        }
        let picked = self.pick_from_end(t, count, |i| self.is_live(t, i))?;
        let why = if privacy { super::changes::Gone::PrivacyDeleted } else { super::changes::Gone::Deleted };
        let gone: Vec<(u64, super::changes::Gone)> = picked.iter().map(|&i| (i, why)).collect();
        self.changes.record_gone(t, &gone, at);
        Ok(picked.iter().map(|&i| self.types[t].id_of(i)).collect())
    }

    /// `POST /_sandbox/merge`: `count` merges of two live records at `at`, the higher id merged
    /// into the lower (the survivor gets `hs_merged_object_ids` and `updatedAt` = `at`).
    /// Returns `(survivor id, merged id)` pairs.
    pub fn merge(&self, t: usize, count: u64, at: DateTime<Utc>) -> Result<Vec<(i64, i64)>, String> {
        let picked = self.pick_from_end(t, 2 * count, |i| self.is_live(t, i))?;
        let pairs: Vec<(u64, u64)> = picked.chunks_exact(2).map(|p| (p[1], p[0])).collect();
        let gone: Vec<(u64, super::changes::Gone)> =
            pairs.iter().map(|&(survivor, merged)| (merged, super::changes::Gone::Merged(survivor))).collect();
        self.changes.record_gone(t, &gone, at);
        let id = |i: u64| self.types[t].id_of(i);
        Ok(pairs.iter().map(|&(s, m)| (id(s), id(m))).collect())
    }

    /// `POST /_sandbox/restore`: takes `count` archived records out of the recycle bin at `at`
    /// (their `updatedAt` = `at`), from the highest ids down. Returns the ids.
    pub fn restore(&self, t: usize, count: u64, at: DateTime<Utc>) -> Result<Vec<i64>, String> {
        let picked = self.pick_from_end(t, count, |i| self.is_archived(t, i))?;
        self.changes.record_restores(t, &picked, at);
        Ok(picked.iter().map(|&i| self.types[t].id_of(i)).collect())
    }

    /// `POST /_sandbox/associate` (`remove` false) and `dissociate`: `count` associations
    /// between live records of `from` and `to` added (with the pair's default type) or
    /// removed, neither record's `updatedAt` moved. Returns `(from id, to id)` pairs.
    pub fn link(
        &self,
        from: usize,
        to: usize,
        count: u64,
        remove: bool,
        at: DateTime<Utc>,
    ) -> Result<Vec<(i64, i64)>, String> {
        if self.association_labels(from, to).is_empty() {
            return Err(format!(
                "{} and {} have no association type",
                self.types[from].api_name, self.types[to].api_name
            ));
        }
        let mut pairs = Vec::new();
        let n = self.count(to);
        for i in (0..self.count(from).saturating_sub(1)).filter(|&i| self.is_live(from, i)) {
            if pairs.len() as u64 == count {
                break;
            }
            let current: Vec<u64> = self.associations(from, i, to).into_iter().map(|(j, _)| j).collect();
            let target = if remove {
                current.first().copied()
            } else {
                (0..n)
                    .map(|k| (i * 7 + 3 + k) % n)
                    .find(|&j| self.is_live(to, j) && !current.contains(&j) && !(from == to && j == i) && j + 1 < n)
            };
            if let Some(j) = target {
                self.changes.record_link((from, i), (to, j), remove, at);
                pairs.push((self.types[from].id_of(i), self.types[to].id_of(j)));
            }
        }
        if (pairs.len() as u64) < count {
            return Err(format!(
                "only {} pairs could be {}",
                pairs.len(),
                if remove { "dissociated" } else { "associated" }
            ));
        }
        Ok(pairs)
    }

    /// Every association a hook added or removed, in order.
    pub fn link_changes(&self) -> Vec<super::changes::LinkChange> {
        self.changes.link_log()
    }

    /// The value of property `p` of record `index` as the API sends it (`None` is JSON null).
    pub fn property_value(&self, t: usize, index: u64, p: usize) -> Option<String> {
        match self.types[t].properties[p].role {
            Role::MergedIds => {
                let merged = self.merged_chain(t, index);
                return (!merged.is_empty())
                    .then(|| merged.iter().map(|&i| self.types[t].id_of(i).to_string()).collect::<Vec<_>>().join(";"));
            }
            Role::UpdatedAt if self.changes.bumped_at(t, index).is_some() => {
                return Some(iso(self.record_times(t, index).1));
            }
            Role::Late => {
                let touch = self.changes.touched(t, index)?;
                return self.late_value(t, &touch);
            }
            _ => {}
        }
        if let Some(touch) = self.changes.touched(t, index) {
            if p == self.touch_property(t) {
                return Some(touch.value);
            }
            if self.types[t].properties[p].role == Role::UpdatedAt {
                return Some(iso(touch.at));
            }
        }
        self.generated_value(t, index, p)
    }

    /// The late property's value after `touch`: set by touches after it was added.
    fn late_value(&self, t: usize, touch: &Touch) -> Option<String> {
        let added = self.changes.revealed_at(t)?;
        (touch.at >= added).then(|| format!("tier set at {}", iso(touch.at)))
    }

    /// Whether property `p` of type `t` is defined (a late property only once added).
    pub fn is_defined(&self, t: usize, p: usize) -> bool {
        self.types[t].properties[p].role != Role::Late || self.changes.revealed_at(t).is_some()
    }

    /// Type `t`'s properties defined now, with their indexes: what the
    /// properties API lists and an export's columns hold.
    pub fn defined_properties(&self, t: usize) -> impl Iterator<Item = (usize, &PropertyDef)> + '_ {
        self.types[t].properties.iter().enumerate().filter(move |(p, _)| self.is_defined(t, *p))
    }

    /// `POST /_sandbox/add-property`: adds type `t`'s late property at `at`; its name.
    pub fn add_property(&self, t: usize, at: DateTime<Utc>) -> Result<String, String> {
        let ty = &self.types[t];
        let p = ty
            .properties
            .iter()
            .position(|p| p.role == Role::Late)
            .ok_or_else(|| format!("{} has no property to add (contacts has one)", ty.api_name))?;
        self.changes.reveal(t, at);
        Ok(ty.properties[p].name.clone())
    }

    /// The value of property `p` before any test hook touched the record.
    fn generated_value(&self, t: usize, index: u64, p: usize) -> Option<String> {
        let ty = &self.types[t];
        let prop = &ty.properties[p];
        let h = hash(&[self.config.seed, ty.ordinal, index, p as u64 + 1]);
        match prop.role {
            Role::ObjectId => return Some(ty.id_of(index).to_string()),
            Role::CreatedAt => return Some(iso(self.generated_times(t, index).0)),
            Role::UpdatedAt => return Some(iso(self.generated_times(t, index).1)),
            Role::MergedIds | Role::Late => return None,
            Role::FirstName => return Some(FIRST_NAMES[(h % 10) as usize].to_string()),
            Role::LastName => return Some(LAST_NAMES[(mix(h) % 10) as usize].to_string()),
            Role::Email => {
                return Some(format!("person{}@example{}.com", ty.id_of(index), index % 7));
            }
            _ => {}
        }
        // About 15% of values are null and 2% the empty string.
        let roll = h % 100;
        if roll < 15 {
            return None;
        }
        if roll < 17 && prop.role == Role::Generic {
            return Some(String::new());
        }
        let v = mix(h);
        Some(match prop.role {
            Role::Owner => {
                let active: Vec<&Owner> = self.owners.iter().collect();
                active[(v % active.len() as u64) as usize].id.to_string()
            }
            Role::Pipeline => self.pipeline_of(t, index).id,
            Role::Stage => self.stage_of(t, index, v),
            Role::SloppyNumber if v.is_multiple_of(10) && !self.config.clean_numbers => "N/A".to_string(),
            _ => generic_value(prop, v, self.config.anchor),
        })
    }

    /// The pipeline of a deal or ticket.
    fn pipeline_of(&self, t: usize, index: u64) -> Pipeline {
        let mut pipelines = self.pipelines(t);
        let at = hash(&[self.config.seed, self.types[t].ordinal, index, 77]) % pipelines.len() as u64;
        pipelines.swap_remove(at as usize)
    }

    /// A stage of the record's pipeline, picked by `v`.
    fn stage_of(&self, t: usize, index: u64, v: u64) -> String {
        let pipeline = self.pipeline_of(t, index);
        pipeline.stages[(v % pipeline.stages.len() as u64) as usize].0.clone()
    }

    /// Pipelines of a type (deals and tickets have them).
    pub fn pipelines(&self, t: usize) -> Vec<Pipeline> {
        let epoch = "1970-01-01T00:00:00Z".to_string();
        let later = iso(self.config.anchor - Duration::days(400));
        match self.types[t].api_name {
            "deals" => vec![
                Pipeline {
                    id: "default".into(),
                    label: "Sales Pipeline".into(),
                    display_order: 0,
                    created_at: epoch.clone(),
                    updated_at: epoch.clone(),
                    stages: [
                        ("appointmentscheduled", "Appointment Scheduled", "0.2"),
                        ("qualifiedtobuy", "Qualified To Buy", "0.4"),
                        ("contractsent", "Contract Sent", "0.9"),
                        ("closedwon", "Closed Won", "1.0"),
                        ("closedlost", "Closed Lost", "0.0"),
                    ]
                    .iter()
                    .map(|(id, label, p)| {
                        let closed = if id.starts_with("closed") { "true" } else { "false" };
                        (
                            id.to_string(),
                            label.to_string(),
                            vec![("isClosed", closed.to_string()), ("probability", p.to_string())],
                        )
                    })
                    .collect(),
                },
                Pipeline {
                    id: "9182736".into(),
                    label: "Renewals, \"EMEA\"".into(),
                    display_order: 1,
                    created_at: later.clone(),
                    updated_at: later,
                    stages: vec![
                        (
                            "9182737".into(),
                            "Renewal due".into(),
                            vec![("isClosed", "false".into()), ("probability", "0.5".into())],
                        ),
                        (
                            "9182738".into(),
                            "Renewed ✓".into(),
                            vec![("isClosed", "true".into()), ("probability", "1.0".into())],
                        ),
                    ],
                },
            ],
            "tickets" => vec![Pipeline {
                id: "0".into(),
                label: "Support Pipeline".into(),
                display_order: 0,
                created_at: epoch.clone(),
                updated_at: epoch,
                stages: [("1", "New", "OPEN"), ("2", "Waiting on contact", "OPEN"), ("4", "Closed", "CLOSED")]
                    .iter()
                    .map(|(id, label, state)| {
                        (id.to_string(), label.to_string(), vec![("ticketState", state.to_string())])
                    })
                    .collect(),
            }],
            _ => Vec::new(),
        }
    }

    /// Association types defined from type `from` to type `to` (empty when none).
    pub fn association_labels(&self, from: usize, to: usize) -> Vec<AssociationType> {
        let mut out: Vec<AssociationType> = Vec::new();
        for r in &self.rules {
            // A type associated with itself uses both directions of its rule.
            let forward = if (r.from, r.to) == (from, to) { r.forward } else { &[] };
            let inverse = if (r.to, r.from) == (from, to) { r.inverse } else { &[] };
            for t in forward.iter().chain(inverse) {
                if !out.iter().any(|o| o.type_id == t.type_id) {
                    out.push(t.clone());
                }
            }
        }
        out
    }

    /// Records of type `to` associated with record `index` of type `from`, ordered by
    /// target index, each with its association types.
    pub fn associations(&self, from: usize, index: u64, to: usize) -> Vec<(u64, Vec<AssociationType>)> {
        if !self.is_live(from, index) {
            return Vec::new();
        }
        // Rules link the core types, which all have `scale` records.
        let n = self.count(from);
        // Collected, then sorted and merged: a hub has tens of thousands of targets at 1M
        // records, and a search per target made each of its pages quadratic.
        let mut found: Vec<(u64, &'static [AssociationType])> = Vec::new();
        let mut add = |target: u64, types: &'static [AssociationType]| {
            if !(from == to && target == index) {
                found.push((target, types));
            }
        };
        for r in &self.rules {
            if (r.from, r.to) == (from, to) {
                match r.shape {
                    Shape::Div(k) => add(index / k, r.forward),
                    Shape::Shift(s) => add((index + s) % n, r.forward),
                    Shape::Hub(m) => {
                        if index.is_multiple_of(m) {
                            add(n - 1, r.forward)
                        }
                    }
                }
            }
            if (r.to, r.from) == (from, to) {
                match r.shape {
                    Shape::Div(k) => {
                        for i in index * k..((index + 1) * k).min(n) {
                            add(i, r.inverse);
                        }
                    }
                    Shape::Shift(s) => add((index + n - s % n) % n, r.inverse),
                    Shape::Hub(m) => {
                        if index == n - 1 {
                            for i in (0..n).step_by(m as usize) {
                                add(i, r.inverse);
                            }
                        }
                    }
                }
            }
        }
        let (added, removed) = self.changes.links_of((from, index));
        found.retain(|(target, _)| self.is_live(to, *target) && !removed.contains(&(to, *target)));
        // Stable: a target's types stay in rule order.
        found.sort_by_key(|(t, _)| *t);
        let mut out: Vec<(u64, Vec<AssociationType>)> = Vec::with_capacity(found.len());
        for (target, types) in found {
            match out.last_mut() {
                Some((last, existing)) if *last == target => {
                    for t in types {
                        if !existing.contains(t) {
                            existing.push(t.clone());
                        }
                    }
                }
                _ => out.push((target, types.to_vec())),
            }
        }
        // Associations a hook added: with the pair's default association type, seen from this
        // end (HubSpot labels the two ends of a company-to-company link "Parent Company" and
        // "Child Company").
        for ((t, target), forward) in added {
            if t != to || !self.is_live(to, target) {
                continue;
            }
            if let Err(at) = out.binary_search_by_key(&target, |(t, _)| *t) {
                out.insert(at, (target, self.default_association(from, to, forward)));
            }
        }
        out
    }

    /// The association type a hook gives a new association of `from` and `to`: the pair's
    /// first, or for a type associated with itself, the first of the direction this end is.
    fn default_association(&self, from: usize, to: usize, forward: bool) -> Vec<AssociationType> {
        if from == to
            && let Some(rule) = self.rules.iter().find(|r| (r.from, r.to) == (from, to))
        {
            let types = if forward { rule.forward } else { rule.inverse };
            return types.iter().take(1).cloned().collect();
        }
        self.association_labels(from, to).into_iter().take(1).collect()
    }
}

/// A list (segment) served by the lists API.
#[derive(Debug, Clone)]
pub struct ListDef {
    pub list_id: String,
    pub name: String,
    /// Index of the object type of its members.
    pub object_type: usize,
    pub processing_type: &'static str,
    pub created_at: String,
    pub updated_at: String,
    /// Members are records with `hash % every == 0` (archived records excluded).
    every: u64,
}

/// An event type served by the events API.
#[derive(Debug, Clone)]
pub struct EventTypeDef {
    /// `e_visited_page`, or `pe<portal>_<name>` for a custom behavioral event.
    pub name: String,
    pub label: String,
    /// Index of the object type the events are on.
    pub object_type: usize,
    /// (name, label, type)
    pub properties: Vec<(String, String, &'static str)>,
    pub custom: bool,
    pub count: u64,
}

/// One event occurrence.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub object_index: u64,
    pub occurred_at: String,
    pub properties: Vec<(String, Option<String>)>,
}

/// A team: id, name, primary user ids, secondary user ids.
pub type Team = (String, String, Vec<String>, Vec<String>);

const SOURCE_TYPES: &[&str] = &["CRM_UI", "API", "IMPORT", "CALCULATED", "INTEGRATION", "AUTOMATION_PLATFORM"];

impl Generator {
    /// Every value property `p` of record `index` has had, newest first, with strictly
    /// decreasing timestamps; the newest is the current value. Empty when the current value
    /// is null.
    pub fn history(&self, t: usize, index: u64, p: usize) -> Vec<HistoryEntry> {
        let role = self.types[t].properties[p].role;
        let mut entries: Vec<HistoryEntry> = self
            .changes
            .touches(t, index)
            .iter()
            .rev()
            .filter_map(|touch| {
                let value = match role {
                    Role::UpdatedAt => Some(iso(touch.at)),
                    Role::Late => self.late_value(t, touch),
                    _ if p == self.touch_property(t) => Some(touch.value.clone()),
                    _ => None,
                }?;
                Some(HistoryEntry {
                    value,
                    timestamp: iso(touch.at),
                    source_type: "API",
                    source_id: None,
                    updated_by_user_id: None,
                })
            })
            .collect();
        let Some(current) = self.generated_value(t, index, p) else {
            return entries;
        };
        let ty = &self.types[t];
        let prop = &ty.properties[p];
        let h = hash(&[self.config.seed, ty.ordinal, index, p as u64 + 1, 0x4157]);
        let depth = 1 + h % prop.history_depth.max(1);
        let mut at = self.generated_times(t, index).1;
        entries.extend((0..depth).map(|k| {
            let e = mix(h ^ k);
            let value = if k == 0 {
                current.clone()
            } else if prop.role == Role::Stage {
                // A stage the record was in before: one of its pipeline's.
                self.stage_of(t, index, e)
            } else if prop.role == Role::Generic && prop.ty != "string" {
                generic_value(prop, e, at)
            } else {
                format!("earlier #{k}: {}", current.chars().take(20).collect::<String>())
            };
            let user = (!e.is_multiple_of(3)).then(|| 9_000_000 + (e % 24) as i64);
            let entry = HistoryEntry {
                value,
                timestamp: iso(at),
                source_type: SOURCE_TYPES[(e % SOURCE_TYPES.len() as u64) as usize],
                source_id: user.map(|u| format!("userId:{u}")),
                updated_by_user_id: user,
            };
            at -= Duration::milliseconds(60_000 + (e % 86_400_000) as i64);
            entry
        }));
        entries
    }

    /// The lists (segments) of the account.
    pub fn lists(&self) -> Vec<ListDef> {
        let specs: [(&str, usize, &str, u64); 6] = [
            ("Newsletter, \"weekly\"", 0, "MANUAL", 3),
            ("Customers ✓", 0, "DYNAMIC", 5),
            ("Webinar 2024 attendees", 0, "SNAPSHOT", 11),
            ("Key accounts", 1, "MANUAL", 4),
            ("Open deals > 10k", 2, "DYNAMIC", 6),
            ("Empty list", 0, "MANUAL", u64::MAX),
        ];
        specs
            .iter()
            .enumerate()
            .map(|(k, (name, object_type, processing_type, every))| {
                let created = self.config.anchor - Duration::days(300 - 20 * k as i64);
                ListDef {
                    list_id: (101 + k).to_string(),
                    name: name.to_string(),
                    object_type: *object_type,
                    processing_type,
                    created_at: iso(created),
                    updated_at: iso(created + Duration::days(7)),
                    every: *every,
                }
            })
            .collect()
    }

    /// Members of list `k` in ascending record id order, with the time each was added.
    pub fn list_members(&self, k: usize) -> Vec<(u64, String)> {
        let list = &self.lists()[k];
        (0..self.count(list.object_type))
            .filter(|&i| self.is_list_member(list, k, i))
            .map(|i| (i, self.membership_time(k, i)))
            .collect()
    }

    /// Whether record `i` (of the list's type) is a member of list `k`.
    pub fn is_list_member(&self, list: &ListDef, k: usize, i: u64) -> bool {
        self.is_live(list.object_type, i) && hash(&[self.config.seed, 0x1157, k as u64, i]).is_multiple_of(list.every)
    }

    /// When record `i` was added to list `k`.
    pub fn membership_time(&self, k: usize, i: u64) -> String {
        let h = hash(&[self.config.seed, 0x1158, k as u64, i]);
        iso(self.config.anchor - Duration::milliseconds(1 + (h % (200 * 86_400_000)) as i64))
    }

    /// The event types of the account (standard and custom behavioral events).
    pub fn event_types(&self) -> &[EventTypeDef] {
        &self.event_types
    }

    /// Occurrence `j` of event type `e`.
    pub fn event(&self, e: usize, j: u64) -> Event {
        let def = &self.event_types()[e];
        let h = hash(&[self.config.seed, 0xE7E47, e as u64, j]);
        let occurred = self.config.anchor - Duration::milliseconds(1 + (h % (90 * 86_400_000)) as i64);
        let properties = def
            .properties
            .iter()
            .enumerate()
            .map(|(p, (name, _, ty))| {
                let v = mix(h ^ p as u64);
                let value = match *ty {
                    "number" => Some(format!("{}.{}", v % 500, v % 10)),
                    "bool" => Some(if v.is_multiple_of(2) { "true" } else { "false" }.to_string()),
                    "enumeration" => Some(["ORGANIC_SEARCH", "DIRECT_TRAFFIC", "SOCIAL"][(v % 3) as usize].to_string()),
                    _ if v.is_multiple_of(9) => None,
                    _ if name == "hs_url" => Some(format!("https://example.com/pricing?q={}&utm=a,b", v % 1000)),
                    _ => Some(TRICKY_TEXT[(v % TRICKY_TEXT.len() as u64) as usize].to_string()),
                };
                (name.clone(), value)
            })
            .collect();
        Event {
            id: format!("{:x}-{e}-{j}", h),
            object_index: mix(h) % self.count(def.object_type),
            occurred_at: iso(occurred),
            properties,
        }
    }

    /// Teams, with the user ids of their primary and secondary members (from the owners).
    pub fn teams(&self) -> Vec<Team> {
        let mut teams: Vec<Team> = Vec::new();
        for o in &self.owners {
            for (id, name, primary) in &o.teams {
                let i = match teams.iter().position(|t| &t.0 == id) {
                    Some(i) => i,
                    None => {
                        teams.push((id.clone(), name.clone(), Vec::new(), Vec::new()));
                        teams.len() - 1
                    }
                };
                let list = if *primary { &mut teams[i].2 } else { &mut teams[i].3 };
                list.push(o.user_id.to_string());
            }
        }
        teams
    }
}

pub use super::time::iso;

fn generic_value(prop: &PropertyDef, v: u64, anchor: DateTime<Utc>) -> String {
    match prop.ty {
        "number" => match v % 6 {
            0 => format!("{}", v % 1000),
            1 => format!("{}.{:02}", v % 100_000, v % 100),
            2 => format!("-{}.5", v % 50),
            3 => "1234.50".to_string(),
            4 => format!("{}", (v % 10_000_000) * 1000),
            _ => "0".to_string(),
        },
        "datetime" => {
            let t = anchor - Duration::milliseconds((v % (900 * 86_400_000)) as i64);
            // HubSpot sends most datetimes as ISO text, some as epoch milliseconds.
            if v.is_multiple_of(9) { t.timestamp_millis().to_string() } else { iso(t) }
        }
        "date" => (anchor - Duration::days((v % 3000) as i64)).format("%Y-%m-%d").to_string(),
        "bool" => if v.is_multiple_of(2) { "true" } else { "false" }.to_string(),
        "enumeration" => {
            let o = &prop.options[(v % prop.options.len() as u64) as usize];
            if prop.field_type == "checkbox" && v.is_multiple_of(3) && prop.options.len() > 1 {
                format!("{};{}", o.1, prop.options[0].1)
            } else {
                o.1.clone()
            }
        }
        "phone_number" => format!("+1 (555) {:03}-{:04}", v % 1000, (v >> 10) % 10_000),
        _ => {
            if v.is_multiple_of(4) {
                TRICKY_TEXT[((v >> 3) % TRICKY_TEXT.len() as u64) as usize].to_string()
            } else {
                format!("{} {}", prop.label, v % 100_000)
            }
        }
    }
}

fn prop(name: &str, label: &str, ty: &'static str, field_type: &'static str, role: Role) -> PropertyDef {
    PropertyDef {
        name: name.to_string(),
        label: label.to_string(),
        ty,
        field_type,
        group: "sandbox",
        options: Vec::new(),
        hubspot_defined: true,
        calculated: false,
        has_unique_value: role == Role::ObjectId,
        history_depth: 1,
        role,
    }
}

fn enumeration(name: &str, label: &str, field_type: &'static str, values: &[&str]) -> PropertyDef {
    let mut p = prop(name, label, "enumeration", field_type, Role::Generic);
    p.options = values.iter().map(|v| (v.replace('_', " "), v.to_string())).collect();
    p
}

/// Custom properties: `count` of them, cycling through the value types.
fn custom_properties(prefix: &str, count: usize) -> Vec<PropertyDef> {
    const KINDS: &[(&str, &str)] = &[
        ("string", "text"),
        ("number", "number"),
        ("datetime", "date"),
        ("date", "date"),
        ("bool", "booleancheckbox"),
        ("enumeration", "select"),
        ("string", "textarea"),
        ("phone_number", "phonenumber"),
    ];
    (0..count)
        .map(|i| {
            let (ty, field_type) = KINDS[i % KINDS.len()];
            let name = format!("{prefix}_{i:03}");
            let label = format!("Custom {} {i}", ty.replace('_', " "));
            let mut p = if ty == "enumeration" {
                enumeration(&name, &label, field_type, &["gold", "silver", "bronze_tier", "Ünïcode"])
            } else {
                prop(&name, &label, ty, field_type, Role::Generic)
            };
            p.hubspot_defined = false;
            p.group = "custom_fields";
            p
        })
        .collect()
}

fn build_types(portal_id: i64, scale: u64) -> Vec<SandboxType> {
    let last_modified = |name: &str| prop(name, "Last Modified Date", "datetime", "date", Role::UpdatedAt);
    let common = |modified: &str| {
        vec![
            prop("hs_object_id", "Record ID", "number", "number", Role::ObjectId),
            prop("createdate", "Create Date", "datetime", "date", Role::CreatedAt),
            last_modified(modified),
            prop("hubspot_owner_id", "Owner", "enumeration", "select", Role::Owner),
        ]
    };
    let merged = || prop("hs_merged_object_ids", "Merged record IDs", "enumeration", "checkbox", Role::MergedIds);
    let mut contacts = common("lastmodifieddate");
    contacts.extend([
        merged(),
        prop("firstname", "First Name", "string", "text", Role::FirstName),
        prop("lastname", "Last Name", "string", "text", Role::LastName),
        prop("email", "Email", "string", "text", Role::Email),
        prop("phone", "Phone Number", "string", "phonenumber", Role::Generic),
        prop("jobtitle", "Job Title", "string", "text", Role::Generic),
        prop("date_of_birth", "Date of birth", "date", "date", Role::Generic),
        prop("annualrevenue", "Annual Revenue", "number", "number", Role::SloppyNumber),
        prop("hs_email_optout", "Opted out of email", "bool", "booleancheckbox", Role::Generic),
        prop("notes_last_contacted", "Last Contacted", "datetime", "date", Role::Generic),
        enumeration(
            "lifecyclestage",
            "Lifecycle Stage",
            "radio",
            &["subscriber", "lead", "marketingqualifiedlead", "customer"],
        ),
        enumeration("hs_buying_role", "Buying Role", "checkbox", &["BUDGET_HOLDER", "CHAMPION", "END_USER"]),
        prop("customer_tier", "Customer tier", "string", "text", Role::Late),
    ]);
    // Long names, as real portals have: together they overflow an 8 KiB URL.
    contacts.extend(custom_properties("custom_contact_attribute_with_a_long_descriptive_name", 230));

    let mut companies = common("hs_lastmodifieddate");
    companies.extend([
        merged(),
        prop("name", "Company name", "string", "text", Role::Generic),
        prop("domain", "Company Domain Name", "string", "text", Role::Generic),
        prop("numberofemployees", "Number of Employees", "number", "number", Role::SloppyNumber),
        prop("founded_year", "Year Founded", "string", "text", Role::Generic),
        enumeration("industry", "Industry", "select", &["COMPUTER_SOFTWARE", "BANKING", "RETAIL"]),
    ]);
    companies.extend(custom_properties("company_custom", 40));

    let mut deals = common("hs_lastmodifieddate");
    deals.extend([
        merged(),
        prop("dealname", "Deal Name", "string", "text", Role::Generic),
        prop("amount", "Amount", "number", "number", Role::SloppyNumber),
        prop("closedate", "Close Date", "datetime", "date", Role::Generic),
        prop("pipeline", "Pipeline", "enumeration", "select", Role::Pipeline),
        prop("dealstage", "Deal Stage", "enumeration", "radio", Role::Stage),
    ]);
    deals.extend(custom_properties("deal_custom", 25));

    let mut tickets = common("hs_lastmodifieddate");
    tickets.extend([
        merged(),
        prop("subject", "Ticket name", "string", "text", Role::Generic),
        prop("content", "Ticket description", "string", "textarea", Role::Generic),
        prop("hs_pipeline", "Pipeline", "enumeration", "select", Role::Pipeline),
        prop("hs_pipeline_stage", "Ticket status", "enumeration", "select", Role::Stage),
        enumeration("hs_ticket_priority", "Priority", "select", &["LOW", "MEDIUM", "HIGH"]),
    ]);
    tickets.extend(custom_properties("ticket_custom", 15));

    let mut cars = common("hs_lastmodifieddate");
    cars.extend([
        prop("model", "Model", "string", "text", Role::Generic),
        prop("year", "Year", "number", "number", Role::Generic),
        prop("vin", "VIN", "string", "text", Role::Generic),
    ]);
    for p in cars.iter_mut().skip(4) {
        p.hubspot_defined = false;
    }
    cars.extend(custom_properties("car_custom", 6));

    // Values that change often keep long histories: more than the 45 (contacts) and 20
    // (other types) newest entries an export keeps.
    let track = |props: &mut Vec<PropertyDef>, names: &[&str], depth: u64| {
        for p in props.iter_mut().filter(|p| names.contains(&p.name.as_str())) {
            p.history_depth = depth;
        }
    };
    track(&mut contacts, &["lifecyclestage", "email", "custom_contact_attribute_with_a_long_descriptive_name_000"], 60);
    track(&mut companies, &["name", "company_custom_001"], 30);
    track(&mut deals, &["dealstage", "amount"], 30);
    track(&mut tickets, &["hs_pipeline_stage"], 30);
    track(&mut cars, &["model"], 30);

    let core = [
        ("contacts", "0-1", "Contact", "Contacts", None, "email", contacts),
        ("companies", "0-2", "Company", "Companies", None, "name", companies),
        ("deals", "0-3", "Deal", "Deals", None, "dealname", deals),
        ("tickets", "0-5", "Ticket", "Tickets", None, "subject", tickets),
        ("cars", "2-3508482", "Car", "Cars", Some(format!("p{portal_id}_cars")), "model", cars),
    ];
    let mut types: Vec<SandboxType> = core
        .into_iter()
        .enumerate()
        .map(|(ordinal, (api_name, type_id, singular, plural, fqn, display, properties))| SandboxType {
            api_name,
            type_id: type_id.to_string(),
            singular_label: singular.to_string(),
            plural_label: plural.to_string(),
            scope: if fqn.is_some() {
                "crm.objects.custom.read".to_string()
            } else {
                format!("crm.objects.{api_name}.read")
            },
            fully_qualified_name: fqn,
            primary_display_property: display,
            properties,
            id_base: (ordinal as i64 + 1) * 100_000_000_000 + 1_001,
            count: scale,
            ordinal: ordinal as u64,
        })
        .collect();
    // Every other standard type, smaller; products carry 1,200 properties.
    let others: Vec<_> =
        HUBSPOT_STANDARD_TYPES.iter().filter(|s| !types.iter().any(|t| t.api_name == s.0)).copied().collect();
    for (api_name, type_id, singular, plural) in others {
        let ordinal = types.len() as u64;
        let mut properties = common("hs_lastmodifieddate");
        properties.push(prop("hs_name", "Name", "string", "text", Role::Generic));
        let extra = if api_name == "products" { 1_200 - properties.len() } else { 6 };
        properties.extend(custom_properties(&format!("{api_name}_attribute"), extra));
        types.push(SandboxType {
            api_name,
            type_id: type_id.to_string(),
            singular_label: singular.to_string(),
            plural_label: plural.to_string(),
            fully_qualified_name: None,
            primary_display_property: "hs_name",
            properties,
            id_base: (ordinal as i64 + 1) * 100_000_000_000 + 1_001,
            count: (scale / 10).max(1),
            scope: format!("crm.objects.{api_name}.read"),
            ordinal,
        });
    }
    types
}

fn build_owners(config: &SandboxConfig) -> Vec<Owner> {
    let teams = [("178588", "West Coast Sales"), ("178590", "Support, \"Tier 2\""), ("178591", "Équipe Paris")];
    (0..24)
        .map(|i| {
            let h = hash(&[config.seed, 0x0E7E4, i]);
            let created = config.anchor - Duration::days(100 + (h % 900) as i64);
            let mut member_of = vec![];
            if i % 4 != 3 {
                let t = teams[(i % 3) as usize];
                member_of.push((t.0.to_string(), t.1.to_string(), true));
                if i % 5 == 0 {
                    let s = teams[((i + 1) % 3) as usize];
                    member_of.push((s.0.to_string(), s.1.to_string(), false));
                }
            }
            Owner {
                id: 60_000_000 + (i as i64) * 37,
                user_id: 9_000_000 + i as i64,
                email: format!("owner{i}@sandbox.example"),
                first_name: FIRST_NAMES[(i % 10) as usize].to_string(),
                last_name: LAST_NAMES[((i / 3) % 10) as usize].to_string(),
                archived: i >= 20,
                created_at: iso(created),
                updated_at: iso(created + Duration::days((h % 50) as i64)),
                teams: member_of,
            }
        })
        .collect()
}

fn build_rules() -> Vec<Rule> {
    const CONTACT_COMPANY: &[AssociationType] = &[assoc(HD, 1, Some("Primary")), assoc(HD, 279, None)];
    const COMPANY_CONTACT: &[AssociationType] = &[assoc(HD, 2, Some("Primary")), assoc(HD, 280, None)];
    const CONTACT_COMPANY_BILLING: &[AssociationType] =
        &[assoc(HD, 279, None), assoc(UD, 1001, Some("Billing contact"))];
    const COMPANY_CONTACT_BILLING: &[AssociationType] =
        &[assoc(HD, 280, None), assoc(UD, 1002, Some("Billing contact"))];
    const DEAL_CONTACT: &[AssociationType] = &[assoc(HD, 3, None), assoc(UD, 1003, Some("Decision maker, \"final\""))];
    const CONTACT_DEAL: &[AssociationType] = &[assoc(HD, 4, None), assoc(UD, 1004, Some("Decision maker, \"final\""))];
    const DEAL_COMPANY: &[AssociationType] = &[assoc(HD, 5, Some("Primary")), assoc(HD, 341, None)];
    const COMPANY_DEAL: &[AssociationType] = &[assoc(HD, 6, Some("Primary")), assoc(HD, 342, None)];
    const TICKET_CONTACT: &[AssociationType] = &[assoc(HD, 16, None)];
    const CONTACT_TICKET: &[AssociationType] = &[assoc(HD, 15, None)];
    const TICKET_COMPANY: &[AssociationType] = &[assoc(HD, 339, None)];
    const COMPANY_TICKET: &[AssociationType] = &[assoc(HD, 340, None)];
    const CHILD_PARENT: &[AssociationType] = &[assoc(HD, 14, Some("Parent Company"))];
    const PARENT_CHILD: &[AssociationType] = &[assoc(HD, 13, Some("Child Company"))];
    const CAR_CONTACT: &[AssociationType] = &[assoc(UD, 2001, Some("Driver ✓"))];
    const CONTACT_CAR: &[AssociationType] = &[assoc(UD, 2002, Some("Drives"))];
    let rule = |from, to, shape, forward, inverse| Rule { from, to, shape, forward, inverse };
    vec![
        rule(0, 1, Shape::Div(3), CONTACT_COMPANY, COMPANY_CONTACT),
        rule(0, 1, Shape::Hub(10), CONTACT_COMPANY_BILLING, COMPANY_CONTACT_BILLING),
        rule(2, 0, Shape::Shift(1), DEAL_CONTACT, CONTACT_DEAL),
        rule(2, 1, Shape::Div(2), DEAL_COMPANY, COMPANY_DEAL),
        rule(3, 0, Shape::Shift(0), TICKET_CONTACT, CONTACT_TICKET),
        rule(3, 1, Shape::Div(4), TICKET_COMPANY, COMPANY_TICKET),
        rule(1, 1, Shape::Div(5), CHILD_PARENT, PARENT_CHILD),
        rule(4, 0, Shape::Shift(0), CAR_CONTACT, CONTACT_CAR),
    ]
}

/// The standard event types, a custom one, and `config.extra_event_types` more custom ones.
fn build_event_types(config: &SandboxConfig, portal_id: i64) -> Vec<EventTypeDef> {
    let n = config.scale;
    let mut types = vec![
        EventTypeDef {
            name: "e_visited_page".into(),
            label: "Visited page".into(),
            object_type: 0,
            properties: vec![
                ("hs_url".into(), "URL".into(), "string"),
                ("hs_page_title".into(), "Page title".into(), "string"),
                ("hs_visit_source".into(), "Source".into(), "enumeration"),
            ],
            custom: false,
            count: n,
        },
        EventTypeDef {
            name: format!("pe{}_software_usage - daily", portal_id),
            label: "Software usage - daily".into(),
            object_type: 0,
            properties: vec![
                ("feature_name".into(), "Feature".into(), "string"),
                ("minutes_used".into(), "Minutes used".into(), "number"),
                ("first_use".into(), "First use".into(), "bool"),
            ],
            custom: true,
            count: n / 2 + 1,
        },
        EventTypeDef {
            name: "e_form_submission_v2".into(),
            label: "Form submission".into(),
            object_type: 1,
            properties: vec![("hs_form_id".into(), "Form".into(), "string")],
            custom: false,
            count: 0,
        },
    ];
    types.extend((0..config.extra_event_types).map(|k| EventTypeDef {
        name: format!("pe{portal_id}_load_{k:04}"),
        label: format!("Load test event {k}"),
        object_type: 0,
        properties: vec![("step".into(), "Step".into(), "string"), ("amount".into(), "Amount".into(), "number")],
        custom: true,
        count: 1 + (n / 50 + u64::from(k)) % 7,
    }));
    types
}

/// HubSpot's standard object types as its schemas API names them: API name, fixed type id,
/// singular and plural label. The sandbox's own copy of these facts (the exporter keeps its
/// own), in the order their generated ids follow.
const HUBSPOT_STANDARD_TYPES: &[(&str, &str, &str, &str)] = &[
    ("contacts", "0-1", "Contact", "Contacts"),
    ("companies", "0-2", "Company", "Companies"),
    ("deals", "0-3", "Deal", "Deals"),
    ("tickets", "0-5", "Ticket", "Tickets"),
    ("products", "0-7", "Product", "Products"),
    ("line_items", "0-8", "Line item", "Line items"),
    ("quotes", "0-14", "Quote", "Quotes"),
    ("communications", "0-18", "Communication", "Communications"),
    ("tasks", "0-27", "Task", "Tasks"),
    ("notes", "0-46", "Note", "Notes"),
    ("meetings", "0-47", "Meeting", "Meetings"),
    ("calls", "0-48", "Call", "Calls"),
    ("emails", "0-49", "Email", "Emails"),
    ("postal_mail", "0-116", "Postal mail", "Postal mail"),
    ("feedback_submissions", "0-19", "Feedback submission", "Feedback submissions"),
    ("invoices", "0-53", "Invoice", "Invoices"),
    ("marketing_events", "0-54", "Marketing event", "Marketing events"),
    ("subscriptions", "0-69", "Subscription", "Subscriptions"),
    ("goal_targets", "0-74", "Goal target", "Goal targets"),
    ("discounts", "0-84", "Discount", "Discounts"),
    ("fees", "0-85", "Fee", "Fees"),
    ("taxes", "0-86", "Tax", "Taxes"),
    ("commerce_payments", "0-101", "Payment", "Payments"),
    ("users", "0-115", "User", "Users"),
    ("orders", "0-123", "Order", "Orders"),
    ("leads", "0-136", "Lead", "Leads"),
    ("carts", "0-142", "Cart", "Carts"),
    ("services", "0-162", "Service", "Services"),
    ("courses", "0-410", "Course", "Courses"),
    ("listings", "0-420", "Listing", "Listings"),
    ("appointments", "0-421", "Appointment", "Appointments"),
    ("projects", "0-970", "Project", "Projects"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(scale: u64) -> Generator {
        let mut c = SandboxConfig::new(7, scale);
        c.anchor = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap().with_timezone(&Utc);
        Generator::new(c)
    }

    #[test]
    fn data_is_deterministic_and_has_the_hard_cases() {
        let a = generator(300);
        let b = generator(300);
        let contacts = a.type_index("contacts").unwrap();
        assert!(a.types[contacts].properties.len() >= 150);
        let mut seen_null = false;
        let mut seen_empty = false;
        let mut seen_na = false;
        let mut seen_tricky = false;
        for i in 0..300 {
            for p in 0..a.types[contacts].properties.len() {
                let v = a.property_value(contacts, i, p);
                assert_eq!(v, b.property_value(contacts, i, p));
                match v.as_deref() {
                    None => seen_null = true,
                    Some("") => seen_empty = true,
                    Some("N/A") => seen_na = true,
                    Some(s) if s.contains(['\n', '"', ',']) => seen_tricky = true,
                    _ => {}
                }
            }
        }
        assert!(seen_null && seen_empty && seen_na && seen_tricky);
        let r = a.record(contacts, 5);
        assert!(r.created_at <= r.updated_at && r.updated_at.as_str() < "2026-11-01");
    }

    #[test]
    fn associations_are_symmetric() {
        let g = generator(120);
        for (from, to) in [(0, 1), (1, 0), (2, 0), (0, 2), (1, 1), (3, 1), (4, 0)] {
            for i in 0..120 {
                for (j, types) in g.associations(from, i, to) {
                    let back = g.associations(to, j, from);
                    assert!(back.iter().any(|(k, _)| *k == i), "{from}:{i} -> {to}:{j} has no inverse");
                    let labels = g.association_labels(from, to);
                    assert!(types.iter().all(|t| labels.contains(t)));
                }
            }
        }
        // The hub company has more than one page of contacts.
        assert!(g.associations(1, 119, 0).len() >= 10);
        assert!(g.association_labels(0, 3).len() == 1 && g.association_labels(3, 2).is_empty());
    }
}

#[cfg(test)]
mod link_tests {
    use super::*;

    /// A company linked to a company by a hook: "Parent Company" (14) seen from the end the
    /// hook named first, "Child Company" (13) from the other, as HubSpot labels them.
    #[test]
    fn a_company_to_company_link_is_labelled_from_each_end() {
        let g = Generator::new(SandboxConfig::new(3, 40));
        let companies = g.type_index("companies").unwrap();
        let pairs = g.link(companies, companies, 1, false, default_anchor()).unwrap();
        let (from, to) = pairs[0];
        let ty = &g.types[companies];
        let (from, to) = (ty.index_of(from).unwrap(), ty.index_of(to).unwrap());
        let types_of = |a: u64, b: u64| -> Vec<i32> {
            g.associations(companies, a, companies)
                .into_iter()
                .find(|(t, _)| *t == b)
                .unwrap()
                .1
                .iter()
                .map(|t| t.type_id)
                .collect()
        };
        assert_eq!(types_of(from, to), [14]);
        assert_eq!(types_of(to, from), [13]);
    }
}
