//! Pipedrive's daily token budget is spent per request, at each operation's `x-token-cost`
//! (`data/pipedrive-token-costs.csv`, taken from Pipedrive's OpenAPI specs). The client adds
//! up what an export spends.

use std::sync::LazyLock;

/// One priced operation: API version, method and path template (`/deals/{id}/changelog`).
#[derive(Debug)]
struct Price {
    v2: bool,
    method: String,
    segments: Vec<String>,
    cost: u64,
}

/// The token price list.
#[derive(Debug)]
pub struct TokenCosts(Vec<Price>);

static PIPEDRIVE: LazyLock<TokenCosts> =
    LazyLock::new(|| TokenCosts::parse(include_str!("../../data/pipedrive-token-costs.csv")));

impl TokenCosts {
    /// Pipedrive's prices.
    pub fn pipedrive() -> &'static TokenCosts {
        &PIPEDRIVE
    }

    /// Reads the price table (`spec,method,path,x_token_cost`). The table is built into the
    /// binary, so a row that does not read is a bug of the build: it panics, naming the row,
    /// and a unit test reads the table on every `cargo test`.
    fn parse(text: &str) -> TokenCosts {
        #[derive(serde::Deserialize)]
        struct Row {
            spec: String,
            method: String,
            path: String,
            x_token_cost: u64,
        }
        let rows = text.lines().skip(1).filter(|l| !l.trim().is_empty()).count();
        let prices: Vec<Price> = csv::Reader::from_reader(text.as_bytes())
            .deserialize::<Row>()
            .enumerate()
            .map(|(i, row)| {
                let row = row.unwrap_or_else(|e| panic!("token price row {} does not read: {e}", i + 2));
                Price {
                    v2: row.spec == "v2",
                    method: row.method,
                    segments: row.path.trim_matches('/').split('/').map(str::to_string).collect(),
                    cost: row.x_token_cost,
                }
            })
            .collect();
        assert_eq!(prices.len(), rows, "every token price row is read");
        TokenCosts(prices)
    }

    /// The cost of `method path` (`/api/v2/deals`, `/api/v1/deals/7/changelog`, `/v1/users/me`),
    /// preferring the template with the most literal segments; `None` for an unpriced path.
    pub fn cost(&self, method: &str, path: &str) -> Option<u64> {
        let (v2, rest) = if let Some(r) = path.strip_prefix("/api/v2/") {
            (true, r)
        } else if let Some(r) = path.strip_prefix("/api/v1/").or_else(|| path.strip_prefix("/v1/")) {
            (false, r)
        } else {
            return None;
        };
        let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
        self.0
            .iter()
            .filter(|p| p.v2 == v2 && p.method == method && p.segments.len() == segments.len())
            .filter(|p| p.segments.iter().zip(&segments).all(|(t, s)| t.starts_with('{') || t == s))
            .max_by_key(|p| p.segments.iter().filter(|t| !t.starts_with('{')).count())
            .map(|p| p.cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_of_the_price_table_is_read() {
        let table = include_str!("../../data/pipedrive-token-costs.csv");
        assert_eq!(TokenCosts::pipedrive().0.len(), table.lines().count() - 1);
    }

    #[test]
    #[should_panic(expected = "token price row 3 does not read")]
    fn a_malformed_price_row_is_refused() {
        TokenCosts::parse("spec,method,path,x_token_cost\nv2,GET,/deals,10\nv2,GET,/persons,ten\n");
    }

    #[test]
    fn prices_come_from_the_spec_table() {
        let c = TokenCosts::pipedrive();
        assert_eq!(c.cost("GET", "/api/v2/deals"), Some(10));
        assert_eq!(c.cost("GET", "/api/v2/deals/archived"), Some(20));
        assert_eq!(c.cost("GET", "/api/v1/deals/17/changelog"), Some(20));
        assert_eq!(c.cost("GET", "/api/v1/leads/archived"), Some(40));
        assert_eq!(c.cost("GET", "/v1/users/me"), Some(2));
        assert_eq!(c.cost("GET", "/crm/v3/objects/contacts"), None);
    }
}
