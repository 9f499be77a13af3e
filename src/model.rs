//! Small value types shared by every layer: object types and the names derived from them,
//! and the time windows a run reads. Imports nothing else of ours.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// One CRM object type as the exporter sees it: the API name used in paths, the type id
/// (`0-1`, `2-123`) that goes into `OBJECTTYPEID`, and the singular/plural words used in
/// table and column names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectType {
    /// Name used in API paths: `contacts`, `line_items`, or a custom object's fully
    /// qualified name (`p1234_cars`).
    pub api_name: String,
    /// HubSpot's objectTypeId: `0-1` for contacts, `2-XXX` for custom objects.
    pub type_id: String,
    /// Upper-case singular used in association column names (`CONTACT`, `LINE_ITEM`).
    pub singular: String,
    /// Upper-case plural used in table names (`CONTACTS`, `LINE_ITEMS`).
    pub plural: String,
    /// Whether pipelines exist for this type (`GET /crm/v3/pipelines/{type}`).
    pub has_pipelines: bool,
    /// False for the standard types, true for types found through the schemas API.
    pub custom: bool,
}

impl ObjectType {
    /// `OBJECTS_<PLURAL>`.
    pub fn table_name(&self) -> String {
        format!("OBJECTS_{}", self.plural)
    }
}

/// One association type the CRM defines from one object type to another (HubSpot's
/// `typeId` within its `category`, and the label users gave it, none for the default type).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct AssociationType {
    pub type_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The associated pairs of an account as crmdump knows them, keyed `<from type id>/<to type
/// id>` (one direction each), with each pair's association types. Kept in the state between
/// runs, so that a run asks the API only about pairs it has not seen.
pub type AssociationTypes = BTreeMap<String, Vec<AssociationType>>;

/// `YYYY-MM-DD`: an export date as it names day folders, manifests and the state's keys.
pub fn day_key(date: chrono::NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// The key of the pair `from` -> `to` in [`AssociationTypes`].
pub fn pair_key(from: &ObjectType, to: &ObjectType) -> String {
    format!("{}/{}", from.type_id, to.type_id)
}

/// The `(from type id, to type id)` of a [`pair_key`].
pub fn pair_of_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('/')
}

/// A standard HubSpot object type: declared here as data, one row each.
pub struct StandardType {
    pub api_name: &'static str,
    pub type_id: &'static str,
    pub singular: &'static str,
    pub plural: &'static str,
    pub has_pipelines: bool,
}

/// The standard object types, with HubSpot's fixed type ids.
pub const STANDARD_TYPES: &[StandardType] = &[
    std_type("contacts", "0-1", "CONTACT", "CONTACTS", false),
    std_type("companies", "0-2", "COMPANY", "COMPANIES", false),
    std_type("deals", "0-3", "DEAL", "DEALS", true),
    std_type("tickets", "0-5", "TICKET", "TICKETS", true),
    std_type("products", "0-7", "PRODUCT", "PRODUCTS", false),
    std_type("line_items", "0-8", "LINE_ITEM", "LINE_ITEMS", false),
    std_type("quotes", "0-14", "QUOTE", "QUOTES", false),
    std_type("communications", "0-18", "COMMUNICATION", "COMMUNICATIONS", false),
    std_type("tasks", "0-27", "TASK", "TASKS", false),
    std_type("notes", "0-46", "NOTE", "NOTES", false),
    std_type("meetings", "0-47", "MEETING", "MEETINGS", false),
    std_type("calls", "0-48", "CALL", "CALLS", false),
    std_type("emails", "0-49", "EMAIL", "EMAILS", false),
    std_type("postal_mail", "0-116", "POSTAL_MAIL", "POSTAL_MAIL", false),
    std_type("feedback_submissions", "0-19", "FEEDBACK_SUBMISSION", "FEEDBACK_SUBMISSIONS", false),
    std_type("invoices", "0-53", "INVOICE", "INVOICES", false),
    std_type("marketing_events", "0-54", "MARKETING_EVENT", "MARKETING_EVENTS", false),
    std_type("subscriptions", "0-69", "SUBSCRIPTION", "SUBSCRIPTIONS", false),
    std_type("goal_targets", "0-74", "GOAL_TARGET", "GOAL_TARGETS", false),
    std_type("discounts", "0-84", "DISCOUNT", "DISCOUNTS", false),
    std_type("fees", "0-85", "FEE", "FEES", false),
    std_type("taxes", "0-86", "TAX", "TAXES", false),
    std_type("commerce_payments", "0-101", "PAYMENT", "PAYMENTS", false),
    std_type("users", "0-115", "USER", "USERS", false),
    std_type("orders", "0-123", "ORDER", "ORDERS", false),
    std_type("leads", "0-136", "LEAD", "LEADS", false),
    std_type("carts", "0-142", "CART", "CARTS", false),
    std_type("services", "0-162", "SERVICE", "SERVICES", false),
    std_type("courses", "0-410", "COURSE", "COURSES", false),
    std_type("listings", "0-420", "LISTING", "LISTINGS", false),
    std_type("appointments", "0-421", "APPOINTMENT", "APPOINTMENTS", false),
    std_type("projects", "0-970", "PROJECT", "PROJECTS", false),
];

const fn std_type(
    api_name: &'static str,
    type_id: &'static str,
    singular: &'static str,
    plural: &'static str,
    has_pipelines: bool,
) -> StandardType {
    StandardType { api_name, type_id, singular, plural, has_pipelines }
}

impl StandardType {
    pub fn to_object_type(&self) -> ObjectType {
        ObjectType {
            api_name: self.api_name.to_string(),
            type_id: self.type_id.to_string(),
            singular: self.singular.to_string(),
            plural: self.plural.to_string(),
            has_pipelines: self.has_pipelines,
            custom: false,
        }
    }
}

/// Finds a standard type by API name or type id.
pub fn standard_type(name_or_id: &str) -> Option<&'static StandardType> {
    STANDARD_TYPES.iter().find(|t| t.api_name.eq_ignore_ascii_case(name_or_id) || t.type_id == name_or_id)
}

/// Upper-cases a name and turns every run of characters other than A-Z and 0-9 into `_`
/// per character, the rule HubSpot's data share uses for `PROPERTY_` and `EVENTS_` names.
pub fn upper_identifier(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// `PROPERTY_<UPPER(name)>`.
pub fn property_column(property_name: &str) -> String {
    format!("PROPERTY_{}", upper_identifier(property_name))
}

/// A half-open time window `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Window {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && t < self.to
    }
}

/// Which part of each stream a run reads. A stream (named by its table, `OBJECTS_CONTACTS`,
/// `EVENTS_E_VISITED_PAGE`) with a window reads the records created, changed or archived in
/// it (events: that occurred in it); any other stream is read whole. Reference tables are
/// always whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extent {
    windows: BTreeMap<String, Window>,
    /// Per stream, records to read by id besides its window: those webhook events named
    /// (created, changed, restored, merged into, re-associated) that search may not show.
    ids: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Set for a reconcile run: list every id, report the missing, read every association.
    reconcile: Option<Reconcile>,
    /// The baseline of ids a stream read whole compares its records with, reporting the ids
    /// that vanished since (confirmed by id, as a reconcile does): a full export lists every
    /// id anyway, and must not move the baseline past a deletion without saying so.
    baseline: Option<std::sync::Arc<KnownIds>>,
}

/// The ids of each object type (by type id) that exist as crmdump last knew them: what a
/// reconcile compares the account's listing with.
pub type KnownIds = std::collections::HashMap<String, std::collections::HashSet<String>>;

/// What a reconcile run compares the account's ids with.
#[derive(Debug, Clone, Default)]
pub struct Reconcile {
    /// `None` when the destination has no baseline yet: the run lists every id and reads every
    /// association, and reports no deletion.
    pub known: Option<std::sync::Arc<KnownIds>>,
}

impl PartialEq for Reconcile {
    fn eq(&self, other: &Reconcile) -> bool {
        match (&self.known, &other.known) {
            (None, None) => true,
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }
}

impl Extent {
    /// Every stream whole: a full export.
    pub fn whole() -> Extent {
        Extent::default()
    }

    pub fn set(&mut self, table: &str, window: Window) {
        self.windows.insert(table.to_string(), window);
    }

    /// Reads `table` whole.
    pub fn clear(&mut self, table: &str) {
        self.windows.remove(table);
    }

    pub fn window(&self, table: &str) -> Option<Window> {
        self.windows.get(table).copied()
    }

    /// Also reads these records of `table` (by id) when it is read by window.
    pub fn add_ids(&mut self, table: &str, ids: impl IntoIterator<Item = String>) {
        self.ids.entry(table.to_string()).or_default().extend(ids);
    }

    /// The records of `table` to read by id besides its window.
    pub fn ids(&self, table: &str) -> Vec<String> {
        self.ids.get(table).map(|ids| ids.iter().cloned().collect()).unwrap_or_default()
    }

    /// Makes this a reconcile run.
    pub fn reconcile_with(&mut self, reconcile: Reconcile) {
        self.reconcile = Some(reconcile);
    }

    /// Compares what streams read whole with `known` (see [`Extent::baseline`]).
    pub fn compare_whole_reads_with(&mut self, known: std::sync::Arc<KnownIds>) {
        self.baseline = Some(known);
    }

    /// The ids a stream read whole is compared with: the reconcile's baseline, else the one a
    /// full read compares with.
    pub fn baseline(&self) -> Option<&std::sync::Arc<KnownIds>> {
        self.reconcile.as_ref().and_then(|r| r.known.as_ref()).or(self.baseline.as_ref())
    }

    /// What a reconcile run compares with; `None` for any other run.
    pub fn reconcile(&self) -> Option<&Reconcile> {
        self.reconcile.as_ref()
    }

    /// True when the day folder holds every association of the account: a full export's, or a
    /// reconcile's.
    pub fn holds_every_association(&self) -> bool {
        self.is_whole() || self.reconcile.is_some()
    }

    /// True when no stream has a window.
    pub fn is_whole(&self) -> bool {
        self.windows.is_empty()
    }

    /// The earliest start and latest end over every window, for the manifest.
    pub fn span(&self) -> Option<Window> {
        let from = self.windows.values().map(|w| w.from).min()?;
        let to = self.windows.values().map(|w| w.to).max()?;
        Some(Window { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_the_data_share_rule() {
        assert_eq!(property_column("hs_object_id"), "PROPERTY_HS_OBJECT_ID");
        assert_eq!(upper_identifier("Social media flow - Basic"), "SOCIAL_MEDIA_FLOW___BASIC");
        assert_eq!(upper_identifier("Zoë"), "ZO_");
    }

    #[test]
    fn standard_types_resolve_by_name_or_id() {
        assert_eq!(standard_type("0-3").unwrap().api_name, "deals");
        assert_eq!(standard_type("LINE_ITEMS").unwrap().type_id, "0-8");
        assert!(standard_type("cars").is_none());
        assert_eq!(standard_type("contacts").unwrap().to_object_type().table_name(), "OBJECTS_CONTACTS");
    }
}
