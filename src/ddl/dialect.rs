//! What differs between the SQL dialects `crmdump ddl` writes: types, quoting, literals and the
//! few functions the views need. Everything else is the same SQL in every dialect.

/// The SQL dialects `crmdump ddl` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    Snowflake,
    Bigquery,
    Redshift,
    Duckdb,
    Athena,
    Postgres,
    Spark,
}

/// Widest table the postgres DDL creates: a row of many small TEXT values stays inline and
/// PostgreSQL refuses rows over 8 KB (a 1,200-property type fails to load).
pub const POSTGRES_MAX_COLUMNS: usize = 600;

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Snowflake => "snowflake",
            Dialect::Bigquery => "bigquery",
            Dialect::Redshift => "redshift",
            Dialect::Duckdb => "duckdb",
            Dialect::Athena => "athena",
            Dialect::Postgres => "postgres",
            Dialect::Spark => "spark",
        }
    }

    /// Whether the dialect's base relations are the files themselves (views over the committed
    /// dates' parts) rather than loaded tables. DuckDB does both: loads without `--views`,
    /// file views with them.
    pub fn reads_files(self, views: bool) -> bool {
        match self {
            Dialect::Athena | Dialect::Spark => true,
            Dialect::Duckdb => views,
            _ => false,
        }
    }

    /// A column type of the manifest in this dialect.
    pub fn sql_type(self, manifest_type: &str) -> &'static str {
        use Dialect::*;
        match (self, manifest_type) {
            (Snowflake, "Int64") => "NUMBER(19,0)",
            (Snowflake, "Int32") => "NUMBER(10,0)",
            (Snowflake, "Float64") => "DOUBLE",
            (Snowflake, "Boolean") => "BOOLEAN",
            (Snowflake, "Timestamp(ms, UTC)") => "TIMESTAMP_TZ(3)",
            (Snowflake, "Date32") => "DATE",
            (Snowflake, "Json") => "VARIANT",
            (Snowflake, _) => "VARCHAR",
            (Bigquery, "Int64" | "Int32") => "INT64",
            (Bigquery, "Float64") => "FLOAT64",
            (Bigquery, "Boolean") => "BOOL",
            (Bigquery, "Timestamp(ms, UTC)") => "TIMESTAMP",
            (Bigquery, "Date32") => "DATE",
            (Bigquery, "Json") => "JSON",
            (Bigquery, _) => "STRING",
            (Redshift, "Int64") => "BIGINT",
            (Redshift, "Int32") => "INTEGER",
            (Redshift, "Float64") => "DOUBLE PRECISION",
            (Redshift, "Boolean") => "BOOLEAN",
            (Redshift, "Timestamp(ms, UTC)") => "TIMESTAMPTZ",
            (Redshift, "Date32") => "DATE",
            (Redshift, "Json") => "SUPER",
            (Redshift, _) => "VARCHAR(65535)",
            (Duckdb, "Int64") => "BIGINT",
            (Duckdb, "Int32") => "INTEGER",
            (Duckdb, "Float64") => "DOUBLE",
            (Duckdb, "Boolean") => "BOOLEAN",
            (Duckdb, "Timestamp(ms, UTC)") => "TIMESTAMPTZ",
            (Duckdb, "Date32") => "DATE",
            (Duckdb, "Json") => "JSON",
            (Duckdb, _) => "VARCHAR",
            (Athena, "Int64") => "BIGINT",
            (Athena, "Int32") => "INTEGER",
            (Athena, "Float64") => "DOUBLE",
            (Athena, "Boolean") => "BOOLEAN",
            (Athena, "Timestamp(ms, UTC)") => "TIMESTAMP",
            (Athena, "Date32") => "DATE",
            (Athena, _) => "VARCHAR",
            (Spark, "Int64") => "BIGINT",
            (Spark, "Int32") => "INT",
            (Spark, "Float64") => "DOUBLE",
            (Spark, "Boolean") => "BOOLEAN",
            (Spark, "Timestamp(ms, UTC)") => "TIMESTAMP",
            (Spark, "Date32") => "DATE",
            (Spark, _) => "STRING",
            (Postgres, "Int64") => "BIGINT",
            (Postgres, "Int32") => "INTEGER",
            (Postgres, "Float64") => "DOUBLE PRECISION",
            (Postgres, "Boolean") => "BOOLEAN",
            (Postgres, "Timestamp(ms, UTC)") => "TIMESTAMPTZ",
            (Postgres, "Date32") => "DATE",
            (Postgres, "Json") => "JSONB",
            (Postgres, _) => "TEXT",
        }
    }

    /// What a reader of the script must know before running it.
    pub fn preamble(self) -> &'static str {
        match self {
            Dialect::Postgres => "-- Run with psql (its \\copy reads the files): psql -v ON_ERROR_STOP=1 -f FILE\n",
            Dialect::Duckdb => "",
            Dialect::Snowflake => {
                "-- COPY reads the root through a stage named crmdump_stage (crmdump_stage_2, ... for more\n-- roots): CREATE STAGE crmdump_stage URL = 's3://bucket/prefix/' STORAGE_INTEGRATION = ...\n"
            }
            Dialect::Bigquery => {
                "-- Run as one script (bq query --use_legacy_sql=false) with --schema DATASET or a default dataset.\n"
            }
            Dialect::Redshift => {
                "-- COPY reads the manifests this command wrote under <root>/_crmdump/redshift/; replace\n-- <your-redshift-role-arn> with a role that can read the bucket.\n"
            }
            Dialect::Athena => "-- Athena runs one statement per query: run them in order.\n",
            Dialect::Spark => {
                "-- Temporary views: run in one SparkSession with spark.sql.session.timeZone=UTC, one statement at a time.\n"
            }
        }
    }

    /// The text type casts go to (ids in combined views, widened columns).
    pub fn text(self) -> &'static str {
        match self {
            Dialect::Bigquery | Dialect::Spark => "STRING",
            Dialect::Postgres => "TEXT",
            _ => "VARCHAR",
        }
    }

    /// Longest identifier a dialect keeps (PostgreSQL silently truncates at 63 bytes, so two
    /// long property columns would collide).
    fn max_identifier(self) -> usize {
        match self {
            Dialect::Postgres => 63,
            Dialect::Redshift => 127,
            Dialect::Athena | Dialect::Snowflake | Dialect::Spark => 255,
            Dialect::Duckdb | Dialect::Bigquery => 300,
        }
    }

    /// An identifier in SQL statements (Athena's views and queries are Trino's: double quotes).
    pub fn ident(self, name: &str) -> String {
        match self {
            Dialect::Bigquery | Dialect::Spark => format!("`{name}`"),
            _ => format!("\"{name}\""),
        }
    }

    /// An identifier in Athena's table DDL (Hive's: backticks); elsewhere as [`Dialect::ident`].
    pub fn ddl_ident(self, name: &str) -> String {
        match self {
            Dialect::Athena => format!("`{name}`"),
            _ => self.ident(name),
        }
    }

    /// `CREATE [OR REPLACE] VIEW` (Spark's without a metastore: temporary).
    pub fn create_view(self, name: &str) -> String {
        match self {
            Dialect::Spark => format!("CREATE OR REPLACE TEMPORARY VIEW {}", self.ident(name)),
            Dialect::Postgres | Dialect::Redshift => {
                format!("DROP VIEW IF EXISTS {} CASCADE;\nCREATE VIEW {}", self.ident(name), self.ident(name))
            }
            _ => format!("CREATE OR REPLACE VIEW {}", self.ident(name)),
        }
    }

    /// Seconds from `a` to `b` (timestamps); NULL when either is.
    pub fn seconds_between(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Postgres => format!("EXTRACT(EPOCH FROM ({b} - {a}))"),
            Dialect::Duckdb => format!("(epoch({b}) - epoch({a}))"),
            Dialect::Snowflake => format!("DATEDIFF('second', {a}, {b})"),
            Dialect::Redshift => format!("DATEDIFF(second, {a}, {b})"),
            Dialect::Bigquery => format!("TIMESTAMP_DIFF({b}, {a}, SECOND)"),
            Dialect::Athena => format!("date_diff('second', {a}, {b})"),
            Dialect::Spark => format!("(unix_timestamp({b}) - unix_timestamp({a}))"),
        }
    }

    /// The text of a top-level key of a JSON column (`METADATA`'s `isClosed`).
    pub fn json_text(self, column: &str, key: &str) -> String {
        match self {
            Dialect::Postgres => format!("({column} ->> '{key}')"),
            Dialect::Duckdb => format!("json_extract_string({column}, '$.{key}')"),
            Dialect::Snowflake => format!("{column}:{key}::VARCHAR"),
            Dialect::Bigquery => format!("JSON_VALUE({column}, '$.{key}')"),
            Dialect::Redshift => format!("JSON_EXTRACT_PATH_TEXT(JSON_SERIALIZE({column}), '{key}')"),
            Dialect::Athena => format!("json_extract_scalar({column}, '$.{key}')"),
            Dialect::Spark => format!("get_json_object({column}, '$.{key}')"),
        }
    }

    /// `text` (a column read as text from a file, or a literal) as a value of
    /// `manifest_type`; an empty text is NULL.
    pub fn parse_text(self, text: &str, manifest_type: &str) -> String {
        let ty = self.sql_type(manifest_type);
        match (self, manifest_type) {
            (_, "Utf8") => text.to_string(),
            (_, "Json") => self.parse_json(text),
            (Dialect::Athena, "Timestamp(ms, UTC)") => {
                format!("CAST(from_iso8601_timestamp(NULLIF({text}, '')) AS TIMESTAMP)")
            }
            _ => format!("CAST(NULLIF({text}, '') AS {ty})"),
        }
    }

    /// JSON text as a value of the dialect's JSON type (text where it has none).
    pub fn parse_json(self, text: &str) -> String {
        match self {
            Dialect::Snowflake => format!("PARSE_JSON({text})"),
            Dialect::Bigquery => format!("PARSE_JSON({text})"),
            Dialect::Redshift => format!("JSON_PARSE({text})"),
            Dialect::Postgres => format!("CAST({text} AS JSONB)"),
            Dialect::Duckdb => format!("CAST({text} AS JSON)"),
            Dialect::Athena | Dialect::Spark => text.to_string(),
        }
    }

    /// `expr`, a value of `from` (a manifest type), as one of `to`: unchanged when they agree,
    /// text when the column was widened, parsed JSON when a file holds JSON as text.
    pub fn convert(self, expr: &str, from: &str, to: &str) -> String {
        match (from, to) {
            _ if from == to && to != "Json" => expr.to_string(),
            ("Utf8", "Json") | ("Json", "Json") => self.parse_json(expr),
            _ => format!("CAST({expr} AS {})", self.sql_type(to)),
        }
    }

    /// The UTC calendar date of a timestamp (Spark's needs `spark.sql.session.timeZone=UTC`).
    pub fn utc_date(self, ts: &str) -> String {
        match self {
            Dialect::Postgres | Dialect::Duckdb => format!("CAST(({ts} AT TIME ZONE 'UTC') AS DATE)"),
            Dialect::Redshift => format!("CAST(CONVERT_TIMEZONE('UTC', {ts}) AS DATE)"),
            Dialect::Snowflake => format!("CAST(CONVERT_TIMEZONE('UTC', {ts}) AS DATE)"),
            _ => format!("CAST({ts} AS DATE)"),
        }
    }
}

/// How statements name relations and columns: quoted, shortened to the dialect's identifier
/// limit, and relations qualified by `--schema` where one is given.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    pub dialect: Dialect,
    pub schema: Option<&'a str>,
}

impl Names<'_> {
    /// A table or view.
    pub fn rel(&self, name: &str) -> String {
        match self.schema {
            Some(schema) if self.dialect != Dialect::Spark => {
                format!("{}.{}", self.dialect.ident(schema), self.dialect.ident(name))
            }
            _ => self.dialect.ident(name),
        }
    }

    /// A column.
    pub fn col(&self, name: &str) -> String {
        self.dialect.ident(&column_name(self.dialect, name))
    }
}

/// `name` as a column of `dialect`: too long a name keeps its start and gets a short hash
/// of the whole name, so names stay unique and stable across exports.
pub fn column_name(dialect: Dialect, name: &str) -> String {
    let max = dialect.max_identifier();
    if name.len() <= max {
        return name.to_string();
    }
    use sha2::{Digest, Sha256};
    let hash = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
    format!("{}_{hash}", &name[..name.floor_char_boundary(max - 9)])
}

/// A value of `manifest_type` written in SQL: `None` is a typed NULL.
pub fn literal(dialect: Dialect, value: Option<&str>, manifest_type: &str) -> String {
    match (value, manifest_type) {
        (None, _) => format!("CAST(NULL AS {})", dialect.sql_type(manifest_type)),
        (Some(v), "Utf8") => string(v),
        (Some(v), "Date32") => date(v),
        (Some(v), "Boolean") => if v == "true" { "TRUE" } else { "FALSE" }.to_string(),
        (Some(v), ty) => dialect.parse_text(&string(v), ty),
    }
}

/// A string literal.
pub fn string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A date literal (`YYYY-MM-DD`).
pub fn date(d: &str) -> String {
    format!("DATE {}", string(d))
}
