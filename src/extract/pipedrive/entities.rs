//! The Pipedrive entities and the associations read from their foreign keys, declared as
//! data: one row each, so adding an entity is adding a row.

use crate::model::ObjectType;

use super::api::Paging;

/// Which time filters a list takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeFilter {
    /// `updated_since` and `updated_until`.
    SinceUntil,
    /// `updated_since` only (the end is filtered here).
    Since,
    /// None: the window is filtered here.
    None,
}

/// One Pipedrive entity, declared as data.
pub(super) struct Entity {
    /// `person`: `OBJECTTYPEID` and the `--objects` name (with the plural).
    pub(super) name: &'static str,
    pub(super) plural: &'static str,
    pub(super) singular_label: &'static str,
    pub(super) plural_label: &'static str,
    pub(super) list: &'static str,
    pub(super) filter: TimeFilter,
    /// The list of archived records, and its filter.
    pub(super) archived: Option<(&'static str, TimeFilter)>,
    pub(super) fields: &'static str,
    pub(super) fields_paging: Paging,
    pub(super) v2: bool,
    /// `/v1/{plural}/{id}/changelog` exists.
    pub(super) changelog: bool,
    pub(super) display: &'static str,
    /// Query parameters every page of the main list carries.
    pub(super) extra: &'static [(&'static str, &'static str)],
}

pub(super) const ENTITIES: &[Entity] = &[
    Entity {
        name: "person",
        plural: "persons",
        singular_label: "Person",
        plural_label: "Persons",
        list: "/api/v2/persons",
        filter: TimeFilter::SinceUntil,
        archived: None,
        fields: "/api/v2/personFields",
        fields_paging: Paging::Cursor,
        v2: true,
        changelog: true,
        display: "name",
        extra: &[],
    },
    Entity {
        name: "organization",
        plural: "organizations",
        singular_label: "Organization",
        plural_label: "Organizations",
        list: "/api/v2/organizations",
        filter: TimeFilter::SinceUntil,
        archived: None,
        fields: "/api/v2/organizationFields",
        fields_paging: Paging::Cursor,
        v2: true,
        changelog: true,
        display: "name",
        extra: &[],
    },
    Entity {
        name: "deal",
        plural: "deals",
        singular_label: "Deal",
        plural_label: "Deals",
        list: "/api/v2/deals",
        filter: TimeFilter::SinceUntil,
        archived: Some(("/api/v2/deals/archived", TimeFilter::SinceUntil)),
        fields: "/api/v2/dealFields",
        fields_paging: Paging::Cursor,
        v2: true,
        changelog: true,
        display: "title",
        // Deleted deals (kept 30 days) too: they become ARCHIVED rows.
        extra: &[("status", "open,won,lost,deleted")],
    },
    Entity {
        name: "activity",
        plural: "activities",
        singular_label: "Activity",
        plural_label: "Activities",
        list: "/api/v2/activities",
        filter: TimeFilter::SinceUntil,
        archived: None,
        fields: "/api/v2/activityFields",
        fields_paging: Paging::Cursor,
        v2: true,
        changelog: false,
        display: "subject",
        extra: &[],
    },
    Entity {
        name: "product",
        plural: "products",
        singular_label: "Product",
        plural_label: "Products",
        list: "/api/v2/products",
        filter: TimeFilter::Since,
        archived: None,
        fields: "/api/v2/productFields",
        fields_paging: Paging::Cursor,
        v2: true,
        changelog: false,
        display: "name",
        extra: &[],
    },
    Entity {
        name: "lead",
        plural: "leads",
        singular_label: "Lead",
        plural_label: "Leads",
        list: "/api/v1/leads",
        filter: TimeFilter::Since,
        archived: Some(("/api/v1/leads/archived", TimeFilter::None)),
        fields: "/api/v1/leadFields",
        fields_paging: Paging::Offset,
        v2: false,
        changelog: false,
        display: "title",
        extra: &[],
    },
    Entity {
        name: "note",
        plural: "notes",
        singular_label: "Note",
        plural_label: "Notes",
        list: "/api/v1/notes",
        filter: TimeFilter::Since,
        archived: None,
        fields: "/api/v1/noteFields",
        fields_paging: Paging::Offset,
        v2: false,
        changelog: false,
        display: "content",
        extra: &[],
    },
];

/// An association read from a foreign key (or, for products, from the deal's line items).
pub(super) struct Relation {
    pub(super) from: &'static str,
    pub(super) to: &'static str,
    /// The foreign-key field, and `ASSOCIATIONLABEL`.
    pub(super) key: &'static str,
    pub(super) type_id: i32,
}

/// Deal products are read through `/api/v2/deals/products`, not a field.
pub(super) const DEAL_PRODUCTS: &str = "deal_products";

pub(super) const RELATIONS: &[Relation] = &[
    Relation { from: "deal", to: "person", key: "person_id", type_id: 1 },
    Relation { from: "deal", to: "organization", key: "org_id", type_id: 2 },
    Relation { from: "person", to: "organization", key: "org_id", type_id: 3 },
    Relation { from: "activity", to: "deal", key: "deal_id", type_id: 4 },
    Relation { from: "activity", to: "person", key: "person_id", type_id: 5 },
    Relation { from: "activity", to: "organization", key: "org_id", type_id: 6 },
    Relation { from: "lead", to: "person", key: "person_id", type_id: 7 },
    Relation { from: "lead", to: "organization", key: "organization_id", type_id: 8 },
    Relation { from: "deal", to: "product", key: DEAL_PRODUCTS, type_id: 9 },
];

/// `ASSOCIATIONCATEGORY` of every Pipedrive association.
pub(super) const CATEGORY: &str = "PIPEDRIVE_DEFINED";

pub(super) fn object_type(e: &Entity) -> ObjectType {
    ObjectType {
        api_name: e.plural.to_string(),
        type_id: e.name.to_string(),
        singular: e.name.to_uppercase(),
        plural: e.plural.to_uppercase(),
        has_pipelines: e.name == "deal",
        custom: false,
    }
}

pub(super) fn entity(name: &str) -> &'static Entity {
    ENTITIES.iter().find(|e| e.name == name).expect("relations name declared entities")
}
