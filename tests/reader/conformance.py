#!/usr/bin/env python3
"""Checks a running sandbox's answers against the vendors' own OpenAPI specs.

usage: conformance.py BASE_URL hubspot|pipedrive SPEC_DIR

Sends the requests an exporter (or any client) makes, each answer validated with
openapi-core against the operation of the vendored spec that serves its path: status,
content type and body. Prints one line per check and a summary; exits 1 when any fails.
Written apart from crmdump: it shares no code with the exporter or the sandbox.
"""

import json
import pathlib
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

HOSTS = {"hubspot": "https://api.hubapi.com", "pipedrive": "https://api.pipedrive.com"}


# Where the live APIs depart from their own specs, the checker follows the live APIs (as
# recorded from real accounts, or as the vendor documents them) and relaxes the spec, each
# departure with its evidence: (spec file prefix, schema name prefix or None for a property
# of that name in any schema, property, what changes, why). What may be null: a property's
# own value ("value") or the values of a map ("each"); "any-field-type": a field type from
# the full list the same spec gives for field definitions elsewhere.
DEPARTURES = [
    ("CRM-Objects", "SimplePublicObject", "properties", "each",
     "HubSpot answers null for a requested property without a value (recorded contacts, companies, "
     "deals and tickets pages)"),
    ("CRM-Associations", "AssociationSpecWithLabel", "label", "value",
     "HubSpot's documented v4 batch-read example answers \"label\": null for an unlabelled type"),
    ("pipedrive", None, "next_cursor", "value",
     "Pipedrive documents next_cursor as null when the end of the data is reached"),
    ("pipedrive-openapi-v1", None, "data", "value",
     "Pipedrive's v1 answers \"data\": null for an empty list page, the envelope its own error "
     "examples show"),
    ("pipedrive", None, "options", "value",
     "fields without options answer \"options\": null in every fields example of both specs"),
    ("pipedrive", None, "subfields", "value",
     "fields without parts answer \"subfields\": null in every v2 fields example"),
    *[("pipedrive", None, prop, "value",
       "an unset optional value is null, as the specs' own examples answer for properties they do not "
       "mark nullable (address, archive_time, origin_id, marked_as_done_time, priority, billing_frequency_cycles)")
      for prop in ["org_id", "person_id", "organization_id", "won_time", "lost_time", "close_time", "note",
                   "expected_close_date", "value", "probability", "due_date", "code", "tax",
                   "deal_id", "lead_id", "website", "employee_count", "first_name", "last_name",
                   "street_number", "route", "subpremise", "sublocality", "locality", "admin_area_level_1",
                   "admin_area_level_2", "country", "postal_code", "formatted_address", "address"]],
    ("pipedrive-openapi-v1", None, "field_type", "any-field-type",
     "the /leadFields and /noteFields schemas list only the types a custom field can be made with, "
     "while the built-in fields they return (ids, flags, links) have the types of the full list the "
     "/dealFields schema of the same spec gives"),
]


def dicts(node):
    """Every object in a parsed spec, depth first."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from dicts(v)
    elif isinstance(node, list):
        for v in node:
            yield from dicts(v)


def widest_enum(spec, prop):
    """The longest enum of a property named `prop` anywhere in the spec."""
    best = []
    for node in dicts(spec):
        props = node.get("properties")
        target = props.get(prop) if isinstance(props, dict) else None
        if not isinstance(target, dict):
            continue
        for candidate in [target, *(target.get("allOf") or [])]:
            if isinstance(candidate, dict) and len(candidate.get("enum") or []) > len(best):
                best = candidate["enum"]
    return best


def depart(target, where, full_enum):
    if where == "each" and isinstance(target.get("additionalProperties"), dict):
        target["additionalProperties"] = dict(target["additionalProperties"], nullable=True)
    elif where == "value":
        target["nullable"] = True
        for branch in target.get("allOf") or []:
            branch["nullable"] = True
    elif where == "any-field-type":
        target.pop("allOf", None)
        target.update(type="string", enum=full_enum)


def relax(name, spec):
    schemas = spec.get("components", {}).get("schemas", {})
    for prefix, schema_prefix, prop, where, _why in DEPARTURES:
        if not name.startswith(prefix):
            continue
        full_enum = widest_enum(spec, prop) if where == "any-field-type" else None
        if schema_prefix is not None:
            for schema_name, schema in schemas.items():
                target = schema.get("properties", {}).get(prop) if schema_name.startswith(schema_prefix) else None
                if target:
                    depart(target, where, full_enum)
            continue
        for node in list(dicts(spec)):
            props = node.get("properties")
            if isinstance(props, dict) and isinstance(props.get(prop), dict):
                depart(props[prop], where, full_enum)

    # A `*/*` media type holds JSON in every operation the sandbox serves.
    for node in list(dicts(spec)):
        content = node.get("content")
        if isinstance(content, dict) and "*/*" in content and "application/json" not in content:
            content["application/json"] = content.pop("*/*")
    return spec


def load_specs(spec_dir, flavor):
    specs = []
    for path in sorted(pathlib.Path(spec_dir, flavor).iterdir()):
        if path.suffix == ".json":
            spec = json.loads(path.read_text())
        elif path.suffix in (".yaml", ".yml"):
            spec = yaml.safe_load(path.read_text())
        else:
            continue
        spec = relax(path.name, spec)
        specs.append((path.name, spec, OpenAPI.from_dict(spec)))
    return specs


def explain(e):
    """The schema errors behind an openapi-core exception, short."""
    errors = getattr(e.__cause__, "schema_errors", None) or getattr(e, "schema_errors", None) or []
    if errors:
        return "; ".join(f"{err.message[:160]} at {'/'.join(map(str, err.absolute_path))}" for err in errors[:4])
    return f"{type(e).__name__}: {str(e)[:300]}"


def template_matches(template, path):
    t, p = template.strip("/").split("/"), path.strip("/").split("/")
    return len(t) == len(p) and all(a.startswith("{") or a == b for a, b in zip(t, p))


def spec_for(specs, path, method):
    """The spec with an operation for `method path`, preferring the most literal template."""
    best = None
    for name, raw, api in specs:
        servers = [urllib.parse.urlparse(s["url"]).path.rstrip("/") for s in raw.get("servers", [])] or [""]
        for base in servers:
            if not path.startswith(base):
                continue
            rest = path[len(base):] or "/"
            for template, operations in raw["paths"].items():
                if method.lower() in operations and template_matches(template, rest):
                    literal = sum(1 for s in template.split("/") if s and not s.startswith("{"))
                    if best is None or literal > best[0]:
                        best = (literal, name, api, base)
    return best


class Checker:
    def __init__(self, base_url, flavor, spec_dir, token):
        self.base_url, self.flavor, self.token = base_url.rstrip("/"), flavor, token
        self.specs = load_specs(spec_dir, flavor)
        self.failures, self.checked, self.unspecified = [], 0, []

    def call(self, method, path, query=None, body=None):
        if path.endswith("/search"):
            time.sleep(0.25)  # HubSpot allows 5 searches per second
        url = self.base_url + path + ("?" + urllib.parse.urlencode(query, doseq=True) if query else "")
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(url, data=data, method=method)
        if self.flavor == "hubspot":
            request.add_header("Authorization", f"Bearer {self.token}")
        else:
            request.add_header("x-api-token", self.token)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                status, headers, raw = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, headers, raw = e.code, e.headers, e.read()
        return status, headers, raw

    def promise(self, label, held, broken):
        """Records a promise of a spec's descriptions that its schemas cannot express."""
        self.checked += 1
        if held:
            print(f"ok   {label} (promise)")
        else:
            self.failures.append(f"{label}: {broken}")
            print(f"FAIL {label}: {broken}")

    def check(self, method, path, query=None, body=None, expect=None):
        """Sends the request and validates the answer; returns the parsed body."""
        status, headers, raw = self.call(method, path, query, body)
        label = f"{method} {path}" + (f"?{urllib.parse.urlencode(query, doseq=True)}" if query else "")
        # Pipedrive serves v1 both as api.pipedrive.com/v1 (the spec's server) and under a
        # company domain as /api/v1; the operations are the same.
        spec_path = "/v1/" + path[len("/api/v1/"):] if path.startswith("/api/v1/") else path
        found = spec_for(self.specs, spec_path, method)
        if found is None:
            self.unspecified.append(label)
            print(f"UNSPECIFIED {label}")
            return json.loads(raw) if raw else None
        _, spec_name, api, base = found
        content_type = headers.get("Content-Type", "").split(";")[0]
        self.checked += 1
        problems = []
        if expect is not None and status != expect:
            problems.append(f"status {status}, expected {expect}")
        request = MockRequest(
            HOSTS[self.flavor], method.lower(), spec_path,
            args=query or {}, data=(json.dumps(body) if isinstance(body, (dict, list)) else body),
            content_type="application/json" if body is not None else None,
        )
        response = MockResponse(raw, status_code=status, content_type=content_type)
        try:
            api.validate_response(request, response)
        except Exception as e:  # openapi-core raises one exception per failed validation
            problems.append(explain(e))
        if problems:
            self.failures.append(f"{label} ({spec_name}): " + " | ".join(problems))
            print(f"FAIL {label} [{status}]: " + " | ".join(problems))
        else:
            print(f"ok   {label} [{status}]")
        try:
            return json.loads(raw)
        except ValueError:
            return None


def hubspot(c):
    schemas = c.check("GET", "/crm-object-schemas/v3/schemas", expect=200)
    c.check("GET", "/crm/v3/schemas", expect=200)
    types = ["contacts", "companies", "deals", "tickets", "line_items"]
    types += [s["objectTypeId"] for s in (schemas or {}).get("results", [])][:1]
    for t in types:
        props = c.check("GET", f"/crm/v3/properties/{t}", expect=200) or {}
        names = [p["name"] for p in props.get("results", [])][:5]
        page = c.check("GET", f"/crm/v3/objects/{t}", {"limit": "5", "properties": ",".join(names)}, expect=200) or {}
        c.check("GET", f"/crm/v3/objects/{t}", {"limit": "3", "archived": "true"}, expect=200)
        c.check("GET", f"/crm/v3/objects/{t}", {"limit": "2", "properties": names[:1], "propertiesWithHistory": names[:1]}, expect=200)
        ids = [r["id"] for r in page.get("results", [])]
        if ids:
            c.check("POST", f"/crm/v3/objects/{t}/batch/read",
                    body={"inputs": [{"id": i} for i in ids], "properties": names, "propertiesWithHistory": names[:1]}, expect=200)
            c.check("GET", f"/crm/v3/objects/{t}/{ids[0]}", {"properties": names[:2]}, expect=200)
        modified = "lastmodifieddate" if t == "contacts" else "hs_lastmodifieddate"
        c.check("POST", f"/crm/v3/objects/{t}/search", body={
            "filterGroups": [{"filters": [{"propertyName": modified, "operator": "GTE", "value": "0"}]}],
            "sorts": [{"propertyName": modified, "direction": "ASCENDING"}], "properties": names[:2], "limit": 10,
        }, expect=200)
    contacts = c.check("GET", "/crm/v3/objects/contacts", {"limit": "10"}) or {}
    ids = [r["id"] for r in contacts.get("results", [])]
    c.check("POST", "/crm/v4/associations/contacts/companies/batch/read", body={"inputs": [{"id": i} for i in ids]}, expect=200)
    c.check("GET", "/crm/v4/associations/contacts/companies/labels", expect=200)
    c.check("GET", "/crm/associations/v4/contacts/companies/labels", expect=200)
    c.check("GET", "/crm/v3/owners", {"limit": "10"}, expect=200)
    c.check("GET", "/crm/v3/owners", {"limit": "10", "archived": "true"}, expect=200)
    c.check("GET", "/crm/v3/pipelines/deals", expect=200)
    c.check("GET", "/crm/v3/pipelines/tickets", expect=200)
    lists = c.check("POST", "/crm/v3/lists/search", body={"count": 10, "offset": 0}, expect=200) or {}
    for lst in lists.get("lists", [])[:2]:
        c.check("GET", f"/crm/v3/lists/{lst['listId']}/memberships", {"limit": "10"}, expect=200)
    c.check("GET", "/events/v3/events/event-types", expect=200)
    c.check("GET", "/events/v3/event-definitions", expect=200)
    types = c.check("GET", "/events/v3/events/event-types") or {}
    for name in (types.get("eventTypes") or [])[:2]:
        c.check("GET", "/events/v3/events", {"eventType": name, "limit": "5"}, expect=200)
    c.check("GET", "/settings/v3/users/teams", expect=200)
    # HubSpot's compatibility routes.
    c.check("GET", "/crm/v3/objects/contact", {"limit": "2"}, expect=200)
    c.check("GET", "/crm/v3/properties/contact", expect=200)
    c.check("GET", "/crm/v3/objects/contacts", {"limit": "3", "associations": "companies,deals"}, expect=200)
    # Errors are JSON with HubSpot's error shape.
    c.check("GET", "/crm/v3/objects/no_such_type", {"limit": "2"})
    c.check("POST", "/crm/v3/objects/contacts/search", body=b"{not json", expect=400)


def pipedrive(c):
    c.check("GET", "/api/v1/users/me", expect=200)
    c.check("GET", "/api/v1/users", expect=200)
    for entity in ["persons", "organizations", "deals", "activities", "products"]:
        singular = {"persons": "person", "organizations": "organization", "deals": "deal",
                    "activities": "activity", "products": "product"}[entity]
        c.check("GET", f"/api/v2/{singular}Fields", {"limit": "50"}, expect=200)
        page = c.check("GET", f"/api/v2/{entity}", {"limit": "100"}, expect=200) or {}
        c.check("GET", f"/api/v2/{entity}", {"limit": "100", "updated_since": "2020-01-01T00:00:00Z"}, expect=200)
        ids = [r["id"] for r in page.get("data") or []]
        if ids and entity in ("persons", "organizations", "deals"):
            c.check("GET", f"/api/v1/{entity}/{ids[0]}/changelog", {"limit": "10"}, expect=200)
    c.check("GET", "/api/v2/deals", {"limit": "100", "status": "won"}, expect=200)
    c.check("GET", "/api/v2/deals", {"limit": "100", "sort_by": "update_time"}, expect=200)
    c.check("GET", "/api/v2/deals/archived", {"limit": "100"}, expect=200)
    deals = c.check("GET", "/api/v2/deals", {"limit": "100"}) or {}
    ids = ",".join(str(d["id"]) for d in deals.get("data") or [])
    c.check("GET", "/api/v2/deals/products", {"deal_ids": ids, "limit": "50"}, expect=200)
    pipelines = c.check("GET", "/api/v2/pipelines", expect=200) or {}
    c.check("GET", "/api/v2/stages", expect=200)
    # Beyond the schemas: what the specs' descriptions promise.
    for p in (pipelines.get("data") or [])[:2]:
        label = f"GET /api/v2/stages?pipeline_id={p['id']}"
        stages = (c.check("GET", "/api/v2/stages", {"pipeline_id": str(p["id"])}, expect=200) or {}).get("data") or []
        c.promise(label, bool(stages), "no stages for a pipeline that has some")
        others = sorted({s["pipeline_id"] for s in stages if s["pipeline_id"] != p["id"]})
        c.promise(label, not others, f"stages of other pipelines too: {others}")
        ids = [s["id"] for s in stages]
        c.promise(label, ids == sorted(ids), "not sorted by id, the default sort_by")
    leads = (c.check("GET", "/api/v1/leads", {"limit": "100"}, expect=200) or {}).get("data") or []
    created = [lead["add_time"] for lead in leads]
    c.promise("GET /api/v1/leads", created == sorted(created),
              "leads are not sorted by creation time, oldest first, as the spec says")
    c.promise("GET /api/v1/leads", bool(leads) and all(isinstance(lead.get("source_name"), str) for lead in leads),
              "a lead's source_name is not a string")
    c.check("GET", "/api/v1/leads/archived", {"limit": "100"}, expect=200)
    c.check("GET", "/api/v1/notes", {"limit": "100"}, expect=200)
    c.check("GET", "/api/v1/leadFields", expect=200)
    c.check("GET", "/api/v1/noteFields", expect=200)


def main():
    base_url, flavor, spec_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    token = sys.argv[4] if len(sys.argv) > 4 else "sandbox"
    c = Checker(base_url, flavor, spec_dir, token)
    {"hubspot": hubspot, "pipedrive": pipedrive}[flavor](c)
    print(f"{c.checked} answers checked against the {flavor} specs, {len(c.failures)} do not conform, "
          f"{len(c.unspecified)} requests with no operation in the specs")
    for u in c.unspecified:
        print(f"  no operation: {u}")
    for f in c.failures:
        print(f"  FAIL {f}")
    sys.exit(1 if c.failures else 0)


if __name__ == "__main__":
    main()
