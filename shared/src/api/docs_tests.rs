//! The written contract matches the served one: the route tables of `docs/api.md` (under
//! `## Routes`) and `README.md` (under `## API`) list exactly the paths and methods of the
//! OpenAPI document the router serves, in both directions.
//!
//! A route table is the first markdown table after its heading; every row names one route in
//! its first cell as `` `METHOD /path` ``, with path parameters written as in OpenAPI
//! (`/tasks/{task_id}`).

use std::collections::BTreeSet;

use utoipa::OpenApi;

use super::ApiDoc;

const API_MD: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"));
const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));

/// `(METHOD, path)`, e.g. `("POST", "/tasks")`.
type Route = (String, String);

/// Every operation of the OpenAPI document.
fn openapi_routes() -> BTreeSet<Route> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    let paths = doc["paths"].as_object().expect("the document has paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .into_iter()
                .filter(|m| item.get(*m).is_some())
                .map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

/// The routes of the first table after the line `heading`, in order.
fn route_table(doc: &str, heading: &str) -> Result<Vec<Route>, String> {
    let mut lines = doc.lines().skip_while(|l| l.trim_end() != heading);
    if lines.next().is_none() {
        return Err(format!("no line {heading:?}"));
    }
    let mut lines = lines.skip_while(|l| !l.starts_with('|') && !l.starts_with('#'));
    let table: Vec<&str> = lines.by_ref().take_while(|l| l.starts_with('|')).collect();
    // A header row, the separator row, then at least one route.
    if table.len() < 3 {
        return Err(format!("no route table under {heading:?}"));
    }
    table[2..]
        .iter()
        .map(|row| {
            let cell = row.split('|').nth(1).unwrap_or_default().trim();
            let route = cell
                .strip_prefix('`')
                .and_then(|c| c.strip_suffix('`'))
                .and_then(|c| c.split_once(' '))
                .filter(|(method, path)| {
                    !method.is_empty()
                        && method.bytes().all(|b| b.is_ascii_uppercase())
                        && path.starts_with('/')
                        && !path.contains(char::is_whitespace)
                });
            match route {
                Some((method, path)) => Ok((method.to_owned(), path.to_owned())),
                None => Err(format!(
                    "under {heading:?}, a row whose first cell is not `METHOD /path`: {row}"
                )),
            }
        })
        .collect()
}

/// Compares a document's route table with the OpenAPI document, naming every difference.
fn check(name: &str, doc: &str, heading: &str) {
    check_against(
        name,
        doc,
        heading,
        &openapi_routes(),
        "the OpenAPI document",
    );
}

/// Compares a document's route table with `served`, naming every difference.
fn check_against(name: &str, doc: &str, heading: &str, served: &BTreeSet<Route>, what: &str) {
    let rows = route_table(doc, heading).unwrap_or_else(|e| panic!("{name}: {e}"));
    let listed: BTreeSet<Route> = rows.iter().cloned().collect();
    assert_eq!(
        listed.len(),
        rows.len(),
        "{name}: a route is listed twice under {heading:?}"
    );
    let undocumented: Vec<_> = served.difference(&listed).collect();
    let unserved: Vec<_> = listed.difference(served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "{name} disagrees with {what}:\n  served but not in the table: \
         {undocumented:?}\n  in the table but not served: {unserved:?}"
    );
}

#[test]
fn the_route_table_of_docs_api_md_is_the_openapi_document() {
    check("docs/api.md", API_MD, "## Routes");
}

#[test]
fn the_route_table_of_the_readme_is_the_openapi_document() {
    check("README.md", README, "## API");
}

/// The console's static routes are not API operations (no JSON, not in the OpenAPI document,
/// not fuzzed): they have a table of their own in each document, kept to the console router's.
fn console_routes() -> BTreeSet<Route> {
    crate::console::ROUTES
        .iter()
        .map(|p| ("GET".to_owned(), (*p).to_owned()))
        .collect()
}

#[test]
fn the_console_route_tables_are_the_console_router() {
    let served = console_routes();
    check_against(
        "docs/api.md",
        API_MD,
        "### Console routes",
        &served,
        "the console router",
    );
    check_against(
        "README.md",
        README,
        "### Console routes",
        &served,
        "the console router",
    );
    assert!(openapi_routes().is_disjoint(&served));
}

#[test]
fn route_tables_are_read_strictly() {
    let doc = "# Doc\n\n## Routes\n\nSome text.\n\n| route | what |\n| --- | --- |\n\
               | `GET /a` | one |\n| `POST /a/{id}` | two |\n\nAfter.\n| `PUT /b` | not in it |\n";
    assert_eq!(
        route_table(doc, "## Routes").unwrap(),
        [
            ("GET".to_owned(), "/a".to_owned()),
            ("POST".to_owned(), "/a/{id}".to_owned())
        ]
    );
    assert!(route_table(doc, "## Elsewhere").is_err());
    // A heading without a table of its own does not borrow the next section's.
    assert!(
        route_table(
            "## Routes\n\n## Next\n| a |\n| - |\n| `GET /a` |\n",
            "## Routes"
        )
        .is_err()
    );
    for bad in ["`get /a`", "GET /a", "`GET a`", "`GET`", "`GET /a b`", ""] {
        let doc = format!("## Routes\n| route |\n| --- |\n| {bad} |\n");
        assert!(route_table(&doc, "## Routes").is_err(), "{bad:?}");
    }
    assert!(!openapi_routes().is_empty());
}
