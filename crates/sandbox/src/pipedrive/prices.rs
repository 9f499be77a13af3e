//! What each request costs against the account's daily token budget: Pipedrive's
//! `x-token-cost` of each operation (from its OpenAPI specs), looked up by the route the
//! request matched. The sandbox keeps its own copy of the table, apart from the exporter's.

use std::collections::HashMap;
use std::sync::LazyLock;

/// What an operation the table does not list costs.
const UNLISTED: u64 = 10;

/// `(version, method, path template with every `{param}` as `{}`)` to tokens.
static PRICES: LazyLock<HashMap<(String, String, String), u64>> = LazyLock::new(|| {
    let mut table = csv::Reader::from_reader(include_str!("token-costs.csv").as_bytes());
    table
        .records()
        .map(|row| {
            let row = row.expect("the built-in token price table reads");
            let cost = row[3].parse().unwrap_or_else(|_| panic!("token price {:?} is a number", &row[3]));
            ((row[0].to_string(), row[1].to_string(), placeholders(&row[2])), cost)
        })
        .collect()
});

/// `/deals/{id}/changelog` → `/deals/{}/changelog`: parameter names differ between the
/// specs and the sandbox's routes.
fn placeholders(template: &str) -> String {
    template
        .split('/')
        .map(|segment| if segment.starts_with('{') { "{}" } else { segment })
        .collect::<Vec<_>>()
        .join("/")
}

/// The tokens a request costs, from the route template it matched (`/api/v2/deals`,
/// `/api/v1/deals/{id}/changelog`).
pub fn tokens(method: &str, route: &str) -> u64 {
    let Some((version, path)) = route.strip_prefix("/api/").and_then(|r| r.split_once('/')) else {
        return UNLISTED;
    };
    let key = (version.to_string(), method.to_string(), placeholders(&format!("/{path}")));
    PRICES.get(&key).copied().unwrap_or(UNLISTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_cost_what_the_spec_says() {
        assert_eq!(tokens("GET", "/api/v2/deals"), 10);
        assert_eq!(tokens("GET", "/api/v2/deals/archived"), 20);
        assert_eq!(tokens("GET", "/api/v1/deals/{deal_id}/changelog"), 20);
        assert_eq!(tokens("GET", "/api/v1/leads/archived"), 40);
        assert_eq!(tokens("GET", "/api/v1/users/me"), 2);
        assert_eq!(tokens("GET", "/api/v1/nothing/here"), UNLISTED);
        assert_eq!(PRICES.len(), include_str!("token-costs.csv").lines().count() - 1);
    }
}
