//! The field definitions of the Pipedrive flavour: each entity's built-in fields, then its
//! custom fields (40-character hash keys; names that clash on purpose, unicode, every field
//! type with extra data fields), leads inheriting the deals' custom fields.

use super::{ACTIVITY, DEAL, FieldDef, Kind, LEAD, ORGANIZATION, PERSON, PRODUCT};
use crate::generator::{hash, mix};

fn builtin(key: &str, name: &str, field_type: &'static str, kind: Kind) -> FieldDef {
    FieldDef {
        key: key.into(),
        name: name.into(),
        field_type,
        custom: false,
        kind,
        options: Vec::new(),
        subfields: subfields_of(field_type),
    }
}

fn subfields_of(field_type: &str) -> Vec<(&'static str, String, &'static str)> {
    match field_type {
        "monetary" => vec![("currency", "Currency".into(), "varchar")],
        "daterange" => vec![("until", "End date".into(), "date")],
        "address" => vec![
            ("street_number", "House number".into(), "varchar"),
            ("route", "Street/road name".into(), "varchar"),
            ("subpremise", "Apartment/suite".into(), "varchar"),
            ("locality", "District".into(), "varchar"),
            ("admin_area_level_1", "State/province".into(), "varchar"),
            ("admin_area_level_2", "County".into(), "varchar"),
            ("country", "Country".into(), "varchar"),
            ("postal_code", "Postal code".into(), "varchar"),
            ("formatted_address", "Formatted address".into(), "varchar"),
        ],
        _ => Vec::new(),
    }
}

/// Custom fields of an entity: (name, field type, kind). Names clash on purpose.
fn custom_specs(e: usize) -> Vec<(&'static str, &'static str, Kind)> {
    let mut specs = match e {
        DEAL => vec![
            ("Region", "varchar", Kind::Text),
            ("Region", "varchar", Kind::Text),
            ("Title", "varchar", Kind::Text),
            ("Contract value", "monetary", Kind::Money),
            ("Größe (cm)", "double", Kind::Double),
            ("Seats", "int", Kind::Int),
            ("Renewal date", "date", Kind::Date),
            ("Contract period", "daterange", Kind::DateRange),
            ("Tier", "enum", Kind::Enum),
            ("Channels", "set", Kind::Set),
            ("Account manager", "user", Kind::Owner),
            ("Notes; long", "text", Kind::Text),
            ("Is priority?", "boolean", Kind::Bool),
            ("Direct line", "phone", Kind::Phone),
        ],
        PERSON => vec![
            ("Region", "varchar", Kind::Text),
            ("Birthday", "date", Kind::Date),
            ("Score", "int", Kind::Int),
            ("Home address", "address", Kind::Address),
            ("Hobbies", "set", Kind::Set),
            ("Référence client", "varchar", Kind::Text),
        ],
        ORGANIZATION => vec![
            ("Region", "varchar", Kind::Text),
            ("Revenue band", "enum", Kind::Enum),
            ("Founded", "date", Kind::Date),
            ("Parent account", "org", Kind::Ref(ORGANIZATION)),
        ],
        PRODUCT => vec![("Category", "enum", Kind::Enum), ("Weight (kg)", "double", Kind::Double)],
        _ => Vec::new(),
    };
    if matches!(e, DEAL | PERSON | ORGANIZATION) {
        specs.extend(std::iter::repeat_n(("Extra field", "varchar", Kind::Text), 20));
    }
    specs
}

pub(super) fn build(seed: u64, e: usize) -> Vec<FieldDef> {
    use Kind::*;
    let b = builtin;
    let mut fields = match e {
        PERSON => vec![
            b("name", "Name", "varchar", Name),
            b("first_name", "First name", "varchar", FirstName),
            b("last_name", "Last name", "varchar", LastName),
            b("owner_id", "Owner", "user", Owner),
            b("org_id", "Organization", "org", Ref(ORGANIZATION)),
            b("email", "Email", "varchar", Emails),
            b("phone", "Phone", "phone", Phones),
            b("label_ids", "Labels", "set", Set),
            b("add_time", "Person created", "date", AddTime),
            b("update_time", "Update time", "date", UpdateTime),
            b("is_deleted", "Deleted", "boolean", IsDeleted),
        ],
        ORGANIZATION => vec![
            b("name", "Name", "varchar", Name),
            b("owner_id", "Owner", "user", Owner),
            b("address", "Address", "address", Address),
            b("website", "Website", "varchar", Website),
            b("employee_count", "Number of employees", "int", Int),
            b("add_time", "Organization created", "date", AddTime),
            b("update_time", "Update time", "date", UpdateTime),
            b("is_deleted", "Deleted", "boolean", IsDeleted),
        ],
        DEAL => vec![
            b("title", "Title", "varchar", Text),
            b("value", "Value", "double", Double),
            b("currency", "Currency", "varchar", Currency),
            b("owner_id", "Owner", "user", Owner),
            b("person_id", "Contact person", "people", Ref(PERSON)),
            b("org_id", "Organization", "org", Ref(ORGANIZATION)),
            // v2 has no `pipeline` field type: a pipeline is referred to by its id.
            b("pipeline_id", "Pipeline", "int", Pipeline),
            b("stage_id", "Stage", "stage", Stage),
            b("status", "Status", "status", Status),
            b("probability", "Probability", "double", Double),
            b("expected_close_date", "Expected close date", "date", Date),
            b("won_time", "Won time", "date", WonTime),
            b("is_archived", "Archived", "boolean", IsArchived),
            b("archive_time", "Archive time", "date", ArchiveTime),
            b("is_deleted", "Deleted", "boolean", IsDeleted),
            b("label_ids", "Label", "set", Set),
            b("add_time", "Deal created", "date", AddTime),
            b("update_time", "Update time", "date", UpdateTime),
        ],
        ACTIVITY => vec![
            b("subject", "Subject", "varchar", Text),
            b("type", "Type", "varchar", Word),
            b("owner_id", "Assigned to user", "user", Owner),
            b("deal_id", "Deal", "deal", Ref(DEAL)),
            b("lead_id", "Lead", "lead", Ref(LEAD)),
            b("person_id", "Contact person", "people", Ref(PERSON)),
            b("org_id", "Organization", "org", Ref(ORGANIZATION)),
            b("due_date", "Due date", "date", Date),
            b("done", "Done", "boolean", Bool),
            b("note", "Note", "text", Html),
            b("add_time", "Add time", "date", AddTime),
            b("update_time", "Update time", "date", UpdateTime),
            b("is_deleted", "Deleted", "boolean", IsDeleted),
        ],
        PRODUCT => vec![
            b("name", "Name", "varchar", Name),
            b("code", "Product code", "varchar", Phone),
            b("tax", "Tax", "double", Double),
            b("prices", "Unit prices", "price_list", Prices),
            b("owner_id", "Owner", "user", Owner),
            b("add_time", "Add time", "date", AddTime),
            b("update_time", "Update time", "date", UpdateTime),
            b("is_deleted", "Deleted", "boolean", IsDeleted),
        ],
        LEAD => vec![
            b("title", "Title", "varchar", Text),
            b("owner_id", "Owner", "user", Owner),
            b("person_id", "Person", "people", Ref(PERSON)),
            b("organization_id", "Organization", "org", Ref(ORGANIZATION)),
            b("value", "Value", "json", LeadValue),
            b("expected_close_date", "Expected close date", "date", Date),
            b("is_archived", "Archived", "boolean", IsArchived),
            b("source_name", "Source", "varchar", LeadSource),
            b("add_time", "Lead created", "date", AddTime),
            b("update_time", "Update time", "date", UpdateTime),
        ],
        _ => vec![
            b("content", "Content", "text", Html),
            b("deal_id", "Deal", "deal", Ref(DEAL)),
            b("person_id", "Person", "people", Ref(PERSON)),
            b("org_id", "Organization", "org", Ref(ORGANIZATION)),
            b("lead_id", "Lead", "lead", Ref(LEAD)),
            b("user_id", "User", "user", Owner),
            b("pinned_to_deal_flag", "Pinned to deal", "boolean", Bool),
            b("add_time", "Add time", "date", AddTime),
            b("update_time", "Update time", "date", UpdateTime),
        ],
    };
    // Leads inherit the deals' custom fields (same keys).
    let custom_of = if e == LEAD { DEAL } else { e };
    let mut extra = 0;
    for (k, (name, field_type, kind)) in custom_specs(custom_of).into_iter().enumerate() {
        let h = hash(&[seed, 0xC057, custom_of as u64, k as u64]);
        let key = format!("{:016x}{:016x}{:08x}", h, mix(h), mix(mix(h)) >> 32);
        let options = if matches!(field_type, "enum" | "set") {
            (0..4).map(|o| (100 + (custom_of * 40 + k * 4 + o) as i64, format!("{name} option {o}"))).collect()
        } else {
            Vec::new()
        };
        let name = if name == "Extra field" {
            extra += 1;
            format!("Extra field {extra}")
        } else {
            name.to_string()
        };
        fields.push(FieldDef {
            key,
            name,
            field_type,
            custom: true,
            kind,
            options,
            subfields: subfields_of(field_type),
        });
    }
    // Built-in set fields need option ids too (labels).
    for f in &mut fields {
        if f.kind == Kind::Set && f.options.is_empty() {
            f.options = (0..3).map(|o| (1 + o, ["Hot", "Warm", "Cold"][o as usize].to_string())).collect();
        }
    }
    fields
}
