//! The Pipedrive flavour's account, generated lazily like the HubSpot one: users, pipelines
//! and stages, field definitions with 40-character hash keys for custom fields, and seven
//! entities (persons, organizations, deals, activities, products on API v2; leads and notes
//! on v1), with changelogs, deal products, archived and deleted deals, archived leads.
//!
//! Every value is generated once as a typed [`Val`]; the server encodes it the way the API
//! version of its entity does (v2: `custom_fields` objects, RFC 3339 times; v1: flat keys,
//! `YYYY-MM-DD HH:MM:SS`), and [`World::truth`] gives the text an exporter should keep for
//! each field key, so tests compare an export with what was served without re-reading JSON.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{Map, Value, json};

pub(crate) mod api;
mod fields;
pub(crate) mod prices;

use crate::changes::{Changes, Touch};
use crate::generator::{Defect, FIRST_NAMES, LAST_NAMES, SandboxConfig, TRICKY_TEXT, UPDATE_SPAN_DAYS, hash, mix};

/// One Pipedrive entity as the sandbox serves it.
#[derive(Debug)]
pub struct EntityDef {
    /// `person`, `deal`: the entity name (and `OBJECTTYPEID`).
    pub name: &'static str,
    /// `persons`, `deals`: the list path.
    pub plural: &'static str,
    /// Served on API v2 (else v1).
    pub v2: bool,
    /// Has `/v1/{plural}/{id}/changelog`.
    pub changelog: bool,
    /// Has an archive (`/api/v2/deals/archived`, `/v1/leads/archived`).
    pub archivable: bool,
    /// The text field a touch changes.
    pub text_key: &'static str,
}

const fn entity(
    name: &'static str,
    plural: &'static str,
    v2: bool,
    changelog: bool,
    archivable: bool,
    text_key: &'static str,
) -> EntityDef {
    EntityDef { name, plural, v2, changelog, archivable, text_key }
}

pub const PERSON: usize = 0;
pub const ORGANIZATION: usize = 1;
pub const DEAL: usize = 2;
pub const ACTIVITY: usize = 3;
pub const PRODUCT: usize = 4;
pub const LEAD: usize = 5;
pub const NOTE: usize = 6;

pub const ENTITIES: &[EntityDef] = &[
    entity("person", "persons", true, true, false, "name"),
    entity("organization", "organizations", true, true, false, "name"),
    entity("deal", "deals", true, true, true, "title"),
    entity("activity", "activities", true, false, false, "subject"),
    entity("product", "products", true, false, false, "name"),
    entity("lead", "leads", false, false, true, "title"),
    entity("note", "notes", false, false, false, "content"),
];

/// How a field's values are generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Name,
    FirstName,
    LastName,
    Text,
    Html,
    Word,
    /// Where a lead came from: `API` or `Manually created`, always set.
    LeadSource,
    Owner,
    /// An id of the entity with this index.
    Ref(usize),
    Int,
    Double,
    Money,
    Currency,
    Date,
    DateRange,
    Enum,
    Set,
    Bool,
    Phone,
    Address,
    Emails,
    Phones,
    Prices,
    LeadValue,
    Status,
    Pipeline,
    Stage,
    AddTime,
    UpdateTime,
    WonTime,
    IsDeleted,
    IsArchived,
    ArchiveTime,
    Website,
}

/// A field definition as `*Fields` serves it.
#[derive(Debug, Clone)]
pub struct FieldDef {
    /// `title`, or a 40-character hash for a custom field.
    pub key: String,
    pub name: String,
    pub field_type: &'static str,
    pub custom: bool,
    pub kind: Kind,
    /// Option sets of `enum` and `set` fields: (id, label).
    pub options: Vec<(i64, String)>,
    /// Extra data fields of monetary, daterange and address fields beside the main value:
    /// (part, name, type). v2 names a part by itself (`currency`), v1 as `<key>_<part>`.
    pub subfields: Vec<(&'static str, String, &'static str)>,
}

/// A value as generated, before an API version encodes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(i64),
    Num(f64),
    Text(String),
    Bool(bool),
    Date(NaiveDate),
    Instant(DateTime<Utc>),
    Set(Vec<i64>),
    Money(f64, &'static str),
    Range(NaiveDate, NaiveDate),
    Address { value: String, country: &'static str, locality: &'static str, postal_code: String },
    Json(Value),
}

/// A Pipedrive user (`/v1/users`).
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub active: bool,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
}

/// A stage: (id, name, order, deal probability).
pub type Stage = (i64, String, i64, i64);

#[derive(Debug, Clone)]
pub struct PdPipeline {
    pub id: i64,
    pub name: String,
    pub order_nr: i64,
    pub stages: Vec<Stage>,
}

/// One change of `/v1/{deals,persons,organizations}/{id}/changelog`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEntry {
    pub field_key: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub actor_user_id: i64,
    pub time: DateTime<Utc>,
    pub change_source: &'static str,
    pub user_agent: Option<&'static str>,
}

/// One line item of `/api/v2/deals/products`.
#[derive(Debug, Clone)]
pub struct DealProduct {
    pub id: i64,
    pub deal_id: i64,
    pub product_id: i64,
    pub quantity: i64,
    pub item_price: f64,
}

/// A record's state as served now (test hooks included).
#[derive(Debug, Clone)]
pub struct PdRecord {
    /// Integer ids as text; leads' UUIDs.
    pub id: String,
    pub add_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub archived_at: Option<DateTime<Utc>>,
    pub deleted: bool,
}

/// Entries of the hub record's changelog: more than one page of 500.
pub const HUB_CHANGES: usize = 520;

pub struct World {
    pub seed: u64,
    pub scale: u64,
    pub anchor: DateTime<Utc>,
    pub company_id: i64,
    pub users: Vec<User>,
    pub pipelines: Vec<PdPipeline>,
    /// Field definitions per entity (leads inherit the deals' custom fields).
    pub fields: Vec<Vec<FieldDef>>,
    /// Share of live records served with a defect (`--bad-records`).
    pub bad_records: f64,
    changes: Changes,
}

const CURRENCIES: &[&str] = &["EUR", "USD", "GBP", "JPY"];
const COUNTRIES: &[(&str, &str)] = &[("Estonia", "Tallinn"), ("Germany", "Köln"), ("Japan", "東京"), ("USA", "Austin")];
const DEAL_STATUSES: &[&str] = &["open", "open", "open", "won", "lost"];

impl World {
    pub fn new(config: &SandboxConfig) -> World {
        let seed = config.seed;
        let anchor = config.anchor;
        let company_id = 1_000_000 + (hash(&[seed, 0x9D]) % 8_999_999) as i64;
        let users = (0..10)
            .map(|k| {
                let h = hash(&[seed, 0x05E4, k]);
                let name = format!("{} {}", FIRST_NAMES[(h % 10) as usize], LAST_NAMES[(mix(h) % 10) as usize]);
                User {
                    id: 12_000_000 + k as i64 * 7 + 1,
                    email: format!("user{k}@sandbox-{seed}.example"),
                    name,
                    active: k != 9,
                    created: anchor - Duration::days(900 - k as i64 * 3),
                    modified: anchor - Duration::days(40 - k as i64),
                }
            })
            .collect();
        let pipelines = vec![
            PdPipeline {
                id: 1,
                name: "Sales pipeline".into(),
                order_nr: 1,
                stages: vec![
                    (1, "Qualified".into(), 1, 10),
                    (2, "Contact made".into(), 2, 25),
                    (3, "Proposal, \"final\"".into(), 3, 60),
                    (4, "Negotiations".into(), 4, 80),
                ],
            },
            PdPipeline {
                id: 2,
                name: "Partnerships — EMEA".into(),
                order_nr: 2,
                stages: vec![(5, "Intro".into(), 1, 20), (6, "Pilot".into(), 2, 50), (7, "Signed".into(), 3, 100)],
            },
        ];
        let fields = (0..ENTITIES.len()).map(|e| fields::build(seed, e)).collect();
        World {
            seed,
            scale: config.scale.max(1),
            anchor,
            company_id,
            users,
            pipelines,
            fields,
            bad_records: config.bad_records,
            changes: Changes::default(),
        }
    }

    pub fn company_domain(&self) -> String {
        format!("sandbox-{}", self.seed)
    }

    /// Records of entity `e` (archived and deleted ones included).
    pub fn count(&self, e: usize) -> u64 {
        match e {
            NOTE => self.scale + self.scale / 2,
            PRODUCT => (self.scale / 4).max(3),
            _ => self.scale,
        }
    }

    /// The id of record `index` of `e`: `index + 1`, except leads (UUIDs).
    pub fn id(&self, e: usize, index: u64) -> String {
        if e == LEAD {
            let h = hash(&[self.seed, 0x1EAD, index]);
            let l = mix(h);
            format!(
                "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                h >> 32,
                (h >> 16) & 0xFFFF,
                h & 0xFFF,
                l >> 52,
                l & 0xFFFF_FFFF_FFFF
            )
        } else {
            (index + 1).to_string()
        }
    }

    /// The index of record `id` of entity `e`.
    pub fn index_of(&self, e: usize, id: &str) -> Option<u64> {
        if e == LEAD {
            return (0..self.count(e)).find(|&i| self.id(e, i) == id);
        }
        let n: u64 = id.parse().ok()?;
        (n >= 1 && n <= self.count(e)).then(|| n - 1)
    }

    fn h(&self, e: usize, index: u64, salt: u64) -> u64 {
        hash(&[self.seed, 0x91DE_u64 ^ e as u64, index, salt])
    }

    /// About one deal or lead in 40 is archived, one deal in 50 deleted (never the hub, the last record).
    fn generated_archived(&self, e: usize, index: u64) -> bool {
        ENTITIES[e].archivable && index + 1 < self.count(e) && self.h(e, index, 0xA4C).is_multiple_of(40)
    }

    /// Deleted: generated so (one deal in 50), or by a hook (deleted or merged away). A
    /// deleted deal is still listed with `status=deleted`; other deleted records nowhere.
    pub fn is_deleted(&self, e: usize, index: u64) -> bool {
        self.changes.gone(e, index).is_some()
            || (e == DEAL
                && index + 1 < self.count(e)
                && !self.is_archived(e, index)
                && self.h(e, index, 0xDE1).is_multiple_of(50))
    }

    pub fn is_archived(&self, e: usize, index: u64) -> bool {
        self.changes.gone(e, index).is_none()
            && ((self.generated_archived(e, index) && self.changes.restored_at(e, index).is_none())
                || self.changes.archived_at(e, index).is_some())
    }

    fn is_live(&self, e: usize, index: u64) -> bool {
        !self.is_archived(e, index) && !self.is_deleted(e, index)
    }

    fn generated_times(&self, e: usize, index: u64) -> (DateTime<Utc>, DateTime<Utc>) {
        let h = self.h(e, index, 0x71AE);
        let two_years = 730 * 86_400_i64;
        let created = self.anchor - Duration::seconds(1 + (h % two_years as u64) as i64);
        let span_start = created.max(self.anchor - Duration::days(UPDATE_SPAN_DAYS));
        let span = (self.anchor - span_start).num_seconds().max(1);
        let updated = span_start + Duration::seconds((mix(h) % span as u64) as i64);
        (created, updated)
    }

    pub fn record(&self, e: usize, index: u64) -> PdRecord {
        let (add_time, mut update_time) = self.generated_times(e, index);
        if let Some(t) = self.changes.touched(e, index) {
            update_time = t.at;
        }
        for moved in [self.changes.bumped_at(e, index), self.changes.gone(e, index).map(|(_, at)| at)] {
            update_time = update_time.max(moved.unwrap_or(update_time));
        }
        let mut archived_at = self.changes.archived_at(e, index);
        if archived_at.is_some() {
            update_time = update_time.max(archived_at.unwrap_or(update_time));
        } else if self.is_archived(e, index) {
            let left = (self.anchor - update_time).num_seconds().max(1);
            archived_at = Some(update_time + Duration::seconds((self.h(e, index, 0xA5) % left as u64) as i64));
            update_time = archived_at.unwrap_or(update_time);
        }
        PdRecord { id: self.id(e, index), add_time, update_time, archived_at, deleted: self.is_deleted(e, index) }
    }

    fn pick_user(&self, h: u64) -> i64 {
        self.users[(h % self.users.len() as u64) as usize].id
    }

    /// The value of field `f` of record `index` (`None`: null or absent).
    pub fn value(&self, e: usize, index: u64, f: usize) -> Option<Val> {
        self.value_of(e, index, f, &self.record(e, index))
    }

    fn value_of(&self, e: usize, index: u64, f: usize, rec: &PdRecord) -> Option<Val> {
        let field = &self.fields[e][f];
        if let Some(t) = self.changes.touched(e, index)
            && field.key == ENTITIES[e].text_key
        {
            return Some(Val::Text(t.value));
        }
        let h = self.h(e, index, 0xF1E1D ^ (f as u64) << 8);
        let v = mix(h);
        let day = |offset: u64| (self.anchor - Duration::days((offset % 900) as i64 - 120)).date_naive();
        match field.kind {
            Kind::AddTime => return Some(Val::Instant(rec.add_time)),
            Kind::UpdateTime => return Some(Val::Instant(rec.update_time)),
            Kind::IsDeleted => return Some(Val::Bool(rec.deleted)),
            Kind::IsArchived => return Some(Val::Bool(rec.archived_at.is_some())),
            Kind::ArchiveTime => return rec.archived_at.map(Val::Instant),
            Kind::Status => {
                return Some(Val::Text(if rec.deleted {
                    "deleted".into()
                } else {
                    DEAL_STATUSES[(v % DEAL_STATUSES.len() as u64) as usize].into()
                }));
            }
            Kind::WonTime => {
                let status = self.fields[e].iter().position(|f| f.kind == Kind::Status)?;
                return match self.value_of(e, index, status, rec) {
                    Some(Val::Text(s)) if s == "won" => Some(Val::Instant(rec.update_time - Duration::hours(3))),
                    _ => None,
                };
            }
            Kind::Name | Kind::FirstName | Kind::LastName if e == PERSON => {
                let first = FIRST_NAMES[(self.h(e, index, 1) % 10) as usize];
                let last = LAST_NAMES[(self.h(e, index, 2) % 10) as usize];
                return Some(Val::Text(match field.kind {
                    Kind::FirstName => first.to_string(),
                    Kind::LastName => last.to_string(),
                    _ => format!("{first} {last}"),
                }));
            }
            Kind::Name => {
                let text = match e {
                    ORGANIZATION => format!("{} {} Ltd", LAST_NAMES[(v % 10) as usize], index + 1),
                    PRODUCT => format!("Product {} «{}»", index + 1, ["basic", "pro", "max"][(v % 3) as usize]),
                    _ => format!("{} #{}", ENTITIES[e].name, index + 1),
                };
                return Some(Val::Text(text));
            }
            Kind::Pipeline | Kind::Stage => {
                let p = &self.pipelines[(self.h(e, index, 0x919E) % self.pipelines.len() as u64) as usize];
                return Some(Val::Int(if field.kind == Kind::Pipeline {
                    p.id
                } else {
                    p.stages[(v % p.stages.len() as u64) as usize].0
                }));
            }
            Kind::Owner if field.key == "owner_id" || field.key == "user_id" => {
                return Some(Val::Int(self.pick_user(v)));
            }
            _ => {}
        }
        // About 15% of the other values are null; never the built-in ones Pipedrive requires
        // or defaults (a deal's title and value, a lead's title, a note's content, an
        // activity's subject).
        if h % 100 < 15 && !always_set(e, field) {
            return None;
        }
        Some(match field.kind {
            Kind::Text | Kind::Name | Kind::FirstName | Kind::LastName => {
                if v.is_multiple_of(3) {
                    Val::Text(TRICKY_TEXT[(v / 3 % TRICKY_TEXT.len() as u64) as usize].to_string())
                } else {
                    Val::Text(format!("{} {}", ENTITIES[e].name, v % 10_000))
                }
            }
            Kind::Html => Val::Text(format!(
                "<p>Call notes {}: {}</p>",
                index + 1,
                TRICKY_TEXT[(v % TRICKY_TEXT.len() as u64) as usize]
            )),
            Kind::Word => Val::Text(["call", "meeting", "task", "email", "lunch"][(v % 5) as usize].to_string()),
            Kind::LeadSource => Val::Text(["API", "Manually created"][(v % 2) as usize].to_string()),
            Kind::Owner => Val::Int(self.pick_user(v)),
            Kind::Ref(target) => {
                if target == LEAD {
                    return Some(Val::Text(self.id(LEAD, v % self.count(LEAD))));
                }
                Val::Int((v % self.count(target)) as i64 + 1)
            }
            Kind::Int => Val::Int((v % 5000) as i64 - 100),
            Kind::Double => Val::Num((v % 10_000_000) as f64 / 100.0),
            Kind::Money => Val::Money((v % 100_000_000) as f64 / 100.0, CURRENCIES[(mix(v) % 4) as usize]),
            Kind::Currency => Val::Text(CURRENCIES[(v % 4) as usize].to_string()),
            Kind::Date => Val::Date(day(v)),
            Kind::DateRange => {
                let from = day(v);
                Val::Range(from, from + Duration::days((mix(v) % 400) as i64))
            }
            Kind::Enum => Val::Int(field.options[(v % field.options.len() as u64) as usize].0),
            Kind::Set => {
                let n = field.options.len() as u64;
                let mut ids: Vec<i64> =
                    (0..n).filter(|k| (v >> k) & 1 == 1).map(|k| field.options[k as usize].0).collect();
                if ids.is_empty() {
                    ids.push(field.options[0].0);
                }
                Val::Set(ids)
            }
            Kind::Bool => Val::Bool(v.is_multiple_of(2)),
            Kind::Phone => Val::Text(format!("+372 5{:03} {:04}", v % 1000, mix(v) % 10_000)),
            Kind::Website => Val::Text(format!("https://example-{}.test/path?q=a,b", v % 1000)),
            Kind::Address => {
                let (country, locality) = COUNTRIES[(v % COUNTRIES.len() as u64) as usize];
                let postal_code = format!("{:05}", mix(v) % 100_000);
                Val::Address {
                    value: format!("{} Main St, {locality} {postal_code}, {country}", v % 200),
                    country,
                    locality,
                    postal_code,
                }
            }
            Kind::Emails => Val::Json(json!([
                {"value": format!("p{}@example.com", index + 1), "primary": true, "label": "work"},
                {"value": format!("p{}.home@example.org", index + 1), "primary": false, "label": "home"}
            ])),
            Kind::Phones => Val::Json(json!([
                {"value": format!("+372 5{:03} {:04}", v % 1000, mix(v) % 10_000), "primary": true, "label": "work"}
            ])),
            Kind::Prices => Val::Json(json!([
                {"product_id": index + 1, "price": (v % 100_000) as f64 / 100.0, "currency": "EUR", "cost": 0, "direct_cost": null, "notes": ""}
            ])),
            Kind::LeadValue => Val::Json(json!({"amount": (v % 100_000) as i64, "currency": "EUR"})),
            _ => return None,
        })
    }

    /// The values of record `index` of `e`: (field index, value), nulls left out.
    pub fn values(&self, e: usize, index: u64) -> Vec<(usize, Val)> {
        let rec = self.record(e, index);
        (0..self.fields[e].len()).filter_map(|f| self.value_of(e, index, f, &rec).map(|v| (f, v))).collect()
    }

    /// The record as the API version of `e` shows it.
    pub fn record_json(&self, e: usize, index: u64) -> Value {
        let rec = self.record(e, index);
        let v2 = ENTITIES[e].v2;
        let mut out = Map::new();
        out.insert("id".into(), if e == LEAD { json!(rec.id) } else { json!(index + 1) });
        let mut custom = Map::new();
        for (f, field) in self.fields[e].iter().enumerate() {
            let value = self.value_of(e, index, f, &rec);
            if v2 {
                let encoded = value.map(|v| encode_v2(&v)).unwrap_or_else(|| empty(field));
                if field.custom {
                    custom.insert(field.key.clone(), encoded);
                } else {
                    out.insert(v2_record_key(field).to_string(), encoded);
                }
            } else {
                match value {
                    Some(v) => {
                        for (key, val) in encode_v1(&field.key, &v, old_style_times(e)) {
                            out.insert(key, val);
                        }
                    }
                    // v1 leaves unset custom fields out.
                    None if field.custom => {}
                    None => {
                        out.insert(field.key.clone(), empty(field));
                    }
                }
            }
        }
        if v2 {
            out.insert("custom_fields".into(), Value::Object(custom));
        }
        if e == NOTE {
            // v1 notes carry related objects the exporter does not need.
            let user = &self.users[(self.h(e, index, 0x05) % self.users.len() as u64) as usize];
            out.insert("user".into(), json!({"email": user.email, "name": user.name, "is_you": false}));
        }
        Value::Object(out)
    }

    /// The text an exporter should keep per field key (subfields as `<key>_<suffix>`), nulls
    /// left out: numbers as JSON prints them, times as sent, sets as comma lists, other
    /// arrays and objects as compact JSON.
    pub fn truth(&self, e: usize, index: u64) -> Vec<(String, String)> {
        let v1 = old_style_times(e);
        let mut out = Vec::new();
        for (f, v) in self.values(e, index) {
            let key = &self.fields[e][f].key;
            match v {
                Val::Money(n, c) => {
                    out.push((key.clone(), number(n)));
                    out.push((format!("{key}_currency"), c.to_string()));
                }
                Val::Range(a, b) => {
                    out.push((key.clone(), a.to_string()));
                    out.push((format!("{key}_until"), b.to_string()));
                }
                Val::Address { value, country, locality, postal_code } => {
                    out.push((format!("{key}_formatted_address"), value.clone()));
                    out.push((key.clone(), value));
                    out.push((format!("{key}_country"), country.to_string()));
                    out.push((format!("{key}_locality"), locality.to_string()));
                    out.push((format!("{key}_postal_code"), postal_code));
                }
                Val::Int(n) => out.push((key.clone(), n.to_string())),
                Val::Num(n) => out.push((key.clone(), number(n))),
                Val::Text(s) => out.push((key.clone(), s)),
                Val::Bool(b) => out.push((key.clone(), b.to_string())),
                Val::Date(d) => out.push((key.clone(), d.to_string())),
                Val::Instant(t) => out.push((key.clone(), instant_text(t, v1))),
                Val::Set(ids) => {
                    out.push((key.clone(), ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")))
                }
                Val::Json(j) => out.push((key.clone(), j.to_string())),
            }
        }
        out
    }

    /// The changelog of record `index` of `e`, newest first.
    pub fn changelog(&self, e: usize, index: u64) -> Vec<ChangeEntry> {
        if !ENTITIES[e].changelog {
            return Vec::new();
        }
        let rec = self.record(e, index);
        let (created, updated) = self.generated_times(e, index);
        let n = if index + 1 == self.count(e) { HUB_CHANGES } else { (self.h(e, index, 0xC1) % 5) as usize };
        let custom_text = self.fields[e].iter().find(|f| f.custom && f.field_type == "varchar").map(|f| f.key.clone());
        let keys: Vec<String> = [Some(ENTITIES[e].text_key.to_string()), Some("owner_id".to_string()), custom_text]
            .into_iter()
            .flatten()
            .collect();
        let span = (updated - created).num_seconds().max(1);
        let mut entries: Vec<ChangeEntry> = (0..n)
            .map(|j| {
                let h = self.h(e, index, 0xC4A6 + j as u64);
                let key = keys[(h % keys.len() as u64) as usize].clone();
                let (old_value, new_value) = if key == "owner_id" {
                    (Some(self.pick_user(h).to_string()), Some(self.pick_user(mix(h)).to_string()))
                } else {
                    (
                        (j > 0).then(|| format!("value {}", j - 1)),
                        Some(if j % 7 == 3 {
                            TRICKY_TEXT[j % TRICKY_TEXT.len()].to_string()
                        } else {
                            format!("value {j}")
                        }),
                    )
                };
                ChangeEntry {
                    field_key: key,
                    old_value,
                    new_value,
                    actor_user_id: self.pick_user(mix(h ^ 1)),
                    time: created + Duration::seconds(span * (j as i64 + 1) / (n as i64 + 1)),
                    change_source: ["app", "api", "mobile", "import"][(h % 4) as usize],
                    user_agent: (h % 4 == 1).then_some("crmdump-sandbox/1.0"),
                }
            })
            .collect();
        if let Some(t) = self.changes.touched(e, index) {
            entries.push(ChangeEntry {
                field_key: ENTITIES[e].text_key.to_string(),
                old_value: None,
                new_value: Some(t.value),
                actor_user_id: self.users[0].id,
                time: rec.update_time,
                change_source: "api",
                user_agent: Some("crmdump-sandbox/1.0"),
            });
        }
        entries.reverse();
        entries
    }

    /// The line items of deal `index` (0 to 3 products).
    pub fn deal_products(&self, index: u64) -> Vec<DealProduct> {
        let h = self.h(DEAL, index, 0x9D0C);
        let products = self.count(PRODUCT);
        (0..h % 4)
            .map(|k| {
                let v = mix(h ^ k);
                DealProduct {
                    id: (index * 4 + k + 1) as i64,
                    deal_id: index as i64 + 1,
                    product_id: (v % products) as i64 + 1,
                    quantity: (v % 9) as i64 + 1,
                    item_price: (mix(v) % 100_000) as f64 / 100.0,
                }
            })
            .collect()
    }

    /// `POST /_sandbox/touch` for `e`: `count` live records in id order after the previous
    /// touch's last, their text field set and `update_time` = `at` (seconds), spread over `spread_ms`.
    pub fn touch(
        &self,
        e: usize,
        count: u64,
        at: DateTime<Utc>,
        spread_ms: i64,
    ) -> Result<(String, String, Vec<String>), String> {
        let n = self.count(e);
        let start = self.changes.touch_cursor(e);
        let picked: Vec<u64> = (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| !self.is_archived(e, i) && !self.is_deleted(e, i))
            .take(count as usize)
            .collect();
        if (picked.len() as u64) < count {
            return Err(format!("{} has only {} live records; cannot touch {count}", ENTITIES[e].plural, picked.len()));
        }
        let value = format!("touched at {}", crate::time::iso(at));
        let cursor = picked.last().map(|&i| (i + 1) % n).unwrap_or(start);
        let touches: Vec<Touch> = (0..picked.len() as i64)
            .map(|k| Touch {
                at: seconds(at + Duration::milliseconds(spread_ms * k / count.max(1) as i64)),
                value: value.clone(),
            })
            .collect();
        self.changes.record_touches(e, &picked, &touches, cursor);
        Ok((ENTITIES[e].text_key.to_string(), value, picked.iter().map(|&i| self.id(e, i)).collect()))
    }

    /// Modifies the records of `e` at `indexes` (their text field and `update_time`, = `at`),
    /// leaving the next `touch`'s starting point alone. Returns their ids.
    pub fn touch_records(&self, e: usize, indexes: &[u64], at: DateTime<Utc>) -> Vec<String> {
        let value = format!("touched at {}", crate::time::iso(at));
        let touches: Vec<Touch> = indexes.iter().map(|_| Touch { at: seconds(at), value: value.clone() }).collect();
        self.changes.record_touches(e, indexes, &touches, self.changes.touch_cursor(e));
        indexes.iter().map(|&i| self.id(e, i)).collect()
    }

    /// The change log of `e` (touches and archivings, by record index).
    pub fn changes_of(&self, e: usize) -> Vec<crate::changes::Change> {
        self.changes.of_type(e)
    }

    /// Archives the records of `e` at `indexes` now (a deal or lead archived by a user while a
    /// list is paged), leaving the next `archive`'s starting point alone. Returns their ids.
    pub fn archive_records(&self, e: usize, indexes: &[u64], at: DateTime<Utc>) -> Vec<String> {
        self.changes.record_archives(e, indexes, seconds(at), self.changes.archive_cursor(e));
        indexes.iter().map(|&i| self.id(e, i)).collect()
    }

    /// `POST /_sandbox/archive` for deals and leads: `count` live records from the highest ids down.
    pub fn archive(&self, e: usize, count: u64, at: DateTime<Utc>) -> Result<Vec<String>, String> {
        if !ENTITIES[e].archivable {
            return Err(format!("only deals and leads can be archived in Pipedrive, not {}", ENTITIES[e].plural));
        }
        let n = self.count(e);
        let mut from_end = self.changes.archive_cursor(e);
        let mut picked = Vec::new();
        while (picked.len() as u64) < count && from_end + 2 <= n {
            let i = n - 2 - from_end;
            if !self.is_archived(e, i) && !self.is_deleted(e, i) {
                picked.push(i);
            }
            from_end += 1;
        }
        if (picked.len() as u64) < count {
            return Err(format!("{} has only {} live records to archive", ENTITIES[e].plural, picked.len()));
        }
        self.changes.record_archives(e, &picked, seconds(at), from_end);
        Ok(picked.iter().map(|&i| self.id(e, i)).collect())
    }

    /// `count` records of `e` matching `wanted`, from the second-to-last down (never the hub).
    fn pick_from_end(&self, e: usize, count: u64, wanted: impl Fn(u64) -> bool) -> Result<Vec<u64>, String> {
        let picked: Vec<u64> =
            (0..self.count(e).saturating_sub(1)).rev().filter(|&i| wanted(i)).take(count as usize).collect();
        if (picked.len() as u64) < count {
            return Err(format!("{} has only {} such records; cannot take {count}", ENTITIES[e].plural, picked.len()));
        }
        Ok(picked)
    }

    /// `POST /_sandbox/delete`: deletes `count` live records of `e` at `at`, from the highest
    /// ids down. Returns their ids.
    pub fn delete(&self, e: usize, count: u64, at: DateTime<Utc>) -> Result<Vec<String>, String> {
        let picked = self.pick_from_end(e, count, |i| self.is_live(e, i))?;
        let gone: Vec<(u64, crate::changes::Gone)> =
            picked.iter().map(|&i| (i, crate::changes::Gone::Deleted)).collect();
        self.changes.record_gone(e, &gone, seconds(at));
        Ok(picked.iter().map(|&i| self.id(e, i)).collect())
    }

    /// `POST /_sandbox/merge` (persons, organizations, deals): `count` merges of two live
    /// records at `at`, the higher id into the lower, which survives (its `update_time` = `at`).
    /// Returns `(survivor id, merged id)` pairs.
    pub fn merge(&self, e: usize, count: u64, at: DateTime<Utc>) -> Result<Vec<(String, String)>, String> {
        if ![PERSON, ORGANIZATION, DEAL].contains(&e) {
            return Err(format!("Pipedrive merges persons, organizations and deals, not {}", ENTITIES[e].plural));
        }
        let picked = self.pick_from_end(e, 2 * count, |i| self.is_live(e, i))?;
        let pairs: Vec<(u64, u64)> = picked.chunks_exact(2).map(|p| (p[1], p[0])).collect();
        let gone: Vec<(u64, crate::changes::Gone)> =
            pairs.iter().map(|&(survivor, merged)| (merged, crate::changes::Gone::Merged(survivor))).collect();
        self.changes.record_gone(e, &gone, seconds(at));
        Ok(pairs.iter().map(|&(s, m)| (self.id(e, s), self.id(e, m))).collect())
    }

    /// `POST /_sandbox/restore` (deals and leads): `count` archived records unarchived at `at`.
    pub fn restore(&self, e: usize, count: u64, at: DateTime<Utc>) -> Result<Vec<String>, String> {
        if !ENTITIES[e].archivable {
            return Err(format!("only deals and leads are archived in Pipedrive, not {}", ENTITIES[e].plural));
        }
        let picked = self.pick_from_end(e, count, |i| self.is_archived(e, i))?;
        self.changes.record_restores(e, &picked, seconds(at));
        Ok(picked.iter().map(|&i| self.id(e, i)).collect())
    }

    /// The defect record `index` of `e` is served with, if any (never the hub, nor an
    /// archived or deleted record): no id, invalid UTF-8 or a 2 MiB value in its text field,
    /// or an `add_time` that is no timestamp.
    pub fn defect(&self, e: usize, index: u64) -> Option<Defect> {
        if self.bad_records <= 0.0
            || index + 1 >= self.count(e)
            || self.is_archived(e, index)
            || self.is_deleted(e, index)
        {
            return None;
        }
        let h = self.h(e, index, 0xBAD);
        if ((h >> 11) as f64 / (1u64 << 53) as f64) >= self.bad_records {
            return None;
        }
        Some(Defect::ALL[(mix(h) % Defect::ALL.len() as u64) as usize])
    }

    pub fn entity_index(&self, name: &str) -> Option<usize> {
        ENTITIES.iter().position(|d| d.plural.eq_ignore_ascii_case(name) || d.name.eq_ignore_ascii_case(name))
    }
}

/// Whether field `f` of `e` always has a value: the texts Pipedrive requires when a record is
/// made (an activity's type too), built-in flags, and a deal's `value` and `currency`, which default to 0 and the
/// company's currency.
fn always_set(e: usize, f: &FieldDef) -> bool {
    !f.custom
        && (matches!(f.key.as_str(), "title" | "content" | "subject" | "type")
            || matches!(f.kind, Kind::Bool | Kind::LeadSource)
            || (e == DEAL && matches!(f.key.as_str(), "value" | "currency")))
}

/// `t` without its milliseconds: Pipedrive's timestamps have second resolution.
pub fn seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// How each API version writes an instant.
pub fn instant_text(t: DateTime<Utc>, v1: bool) -> String {
    if v1 { t.format("%Y-%m-%d %H:%M:%S").to_string() } else { t.format("%Y-%m-%dT%H:%M:%SZ").to_string() }
}

/// A number as JSON prints it.
pub fn number(n: f64) -> String {
    serde_json::Number::from_f64(n).map(|n| n.to_string()).unwrap_or_default()
}

fn encode_v2(v: &Val) -> Value {
    match v {
        Val::Int(n) => json!(n),
        Val::Num(n) => json!(n),
        Val::Text(s) => json!(s),
        Val::Bool(b) => json!(b),
        Val::Date(d) => json!(d.to_string()),
        Val::Instant(t) => json!(instant_text(*t, false)),
        Val::Set(ids) => json!(ids),
        Val::Money(n, c) => json!({"value": n, "currency": c}),
        Val::Range(a, b) => json!({"value": a.to_string(), "until": b.to_string()}),
        Val::Address { value, country, locality, postal_code } => json!({
            "value": value, "country": country, "locality": locality, "postal_code": postal_code,
            "route": null, "street_number": null, "subpremise": null, "sublocality": null,
            "admin_area_level_1": null, "admin_area_level_2": null, "formatted_address": value,
        }),
        Val::Json(j) => j.clone(),
    }
}

/// What a built-in field without a value is sent as: `[]` for the list-valued ones (labels,
/// emails, prices), as Pipedrive's specs require, `null` otherwise. The specs mark few
/// properties nullable, but the live API and the specs' own examples answer null for an
/// unset value (`archive_time`, `origin_id`, `address`), so the sandbox does too.
fn empty(field: &FieldDef) -> Value {
    match field.kind {
        Kind::Set | Kind::Emails | Kind::Phones | Kind::Prices if !field.custom => json!([]),
        _ => Value::Null,
    }
}

/// The key a v2 record carries a built-in field's value under: the field code, except for a
/// person's emails and phones, whose v2 field codes are the singular `email` and `phone`.
fn v2_record_key(field: &FieldDef) -> &str {
    match field.kind {
        Kind::Emails => "emails",
        Kind::Phones => "phones",
        _ => &field.key,
    }
}

/// Whether `e`'s instants are sent as v1's `YYYY-MM-DD HH:MM:SS`: notes do; leads, though
/// served by v1, use RFC 3339 as their spec and its examples show; v2 entities use RFC 3339.
fn old_style_times(e: usize) -> bool {
    !ENTITIES[e].v2 && e != LEAD
}

/// v1's flat keys: monetary, daterange and address values spread over `<key>_<suffix>`;
/// instants in v1's old style when `old_times`.
fn encode_v1(key: &str, v: &Val, old_times: bool) -> Vec<(String, Value)> {
    match v {
        Val::Money(n, c) => vec![(key.into(), json!(n)), (format!("{key}_currency"), json!(c))],
        Val::Range(a, b) => vec![(key.into(), json!(a.to_string())), (format!("{key}_until"), json!(b.to_string()))],
        Val::Address { value, country, locality, postal_code } => vec![
            (format!("{key}_formatted_address"), json!(value)),
            (key.into(), json!(value)),
            (format!("{key}_country"), json!(country)),
            (format!("{key}_locality"), json!(locality)),
            (format!("{key}_postal_code"), json!(postal_code)),
        ],
        Val::Set(ids) => vec![(key.into(), json!(ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")))],
        Val::Instant(t) => vec![(key.into(), json!(instant_text(*t, old_times)))],
        other => vec![(key.into(), encode_v2(other))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_forty_hex_and_leads_inherit_deal_fields() {
        let w = World::new(&SandboxConfig::new(3, 50));
        let custom: Vec<&FieldDef> = w.fields[DEAL].iter().filter(|f| f.custom).collect();
        assert!(custom.iter().all(|f| f.key.len() == 40 && f.key.bytes().all(|b| b.is_ascii_hexdigit())));
        for f in custom {
            assert!(w.fields[LEAD].iter().any(|l| l.key == f.key), "lead lacks {}", f.name);
        }
        assert_eq!(w.index_of(LEAD, &w.id(LEAD, 7)), Some(7));
        assert_eq!(w.index_of(DEAL, "50"), Some(49));
        assert_eq!(w.changelog(DEAL, 49).len(), HUB_CHANGES);
    }

    #[test]
    fn v2_nests_custom_fields_and_v1_flattens_them() {
        let w = World::new(&SandboxConfig::new(3, 50));
        let money = w.fields[DEAL].iter().position(|f| f.kind == Kind::Money).unwrap();
        let i = (0..50).find(|&i| w.value(DEAL, i, money).is_some()).unwrap();
        let deal = w.record_json(DEAL, i);
        let key = &w.fields[DEAL][money].key;
        assert!(deal["custom_fields"][key]["currency"].is_string());
        let truth = w.truth(DEAL, i);
        assert!(truth.iter().any(|(k, _)| *k == format!("{key}_currency")));
        let note = w.record_json(NOTE, 1);
        assert!(note["add_time"].as_str().unwrap().contains(' '), "v1 time format");
    }
}
