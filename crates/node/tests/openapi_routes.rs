//! docs/openapi.yaml against the router: the route table the HTTP API is built from
//! (`quorumdb_node::http::route_table`) and the description's paths must name the same
//! (method, path) pairs, and the description must hang together ($refs resolve, path
//! parameters are declared). schemathesis (crates/quorumdb/tests/openapi.rs) then checks the
//! shapes against a live node.

use std::collections::{BTreeSet, HashSet};
use yaml_rust2::{Yaml, YamlLoader};

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];

fn spec() -> Yaml {
    let text = std::fs::read_to_string(SPEC).unwrap_or_else(|e| panic!("cannot read {SPEC}: {e}"));
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{SPEC} is not YAML: {e}"));
    assert_eq!(docs.len(), 1, "{SPEC} must hold one YAML document");
    docs.remove(0)
}

fn entries(y: &Yaml) -> Vec<(&str, &Yaml)> {
    y.as_hash().map(|h| h.iter().filter_map(|(k, v)| Some((k.as_str()?, v))).collect()).unwrap_or_default()
}

/// (METHOD, path) of every operation the description has.
fn described(spec: &Yaml) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in entries(&spec["paths"]) {
        for (method, _) in entries(item).into_iter().filter(|(k, _)| METHODS.contains(k)) {
            out.insert((method.to_uppercase(), path.to_string()));
        }
    }
    out
}

/// Every route the router serves is described, and every described operation is served.
#[test]
fn openapi_describes_exactly_the_routes_served() {
    let served: BTreeSet<(String, String)> = quorumdb_node::http::route_table()
        .into_iter()
        .map(|(m, p)| (m.as_str().to_string(), p.to_string()))
        .collect();
    let described = described(&spec());
    let mut problems = Vec::new();
    for (m, p) in served.difference(&described) {
        problems.push(format!(
            "{m} {p} is served (crates/node/src/http.rs route table) but docs/openapi.yaml has no \
             `{}:` operation under `paths: {p}:`",
            m.to_lowercase()
        ));
    }
    for (m, p) in described.difference(&served) {
        problems.push(format!(
            "docs/openapi.yaml describes {m} {p}, but the router (crates/node/src/http.rs) serves no such route"
        ));
    }
    assert!(
        problems.is_empty(),
        "the OpenAPI description and the routes differ:\n  {}",
        problems.join("\n  ")
    );
    assert!(served.len() > 50, "the route table looks truncated: {} routes", served.len());
}

/// Collects every `$ref` value under `y`.
fn refs<'a>(y: &'a Yaml, out: &mut Vec<&'a str>) {
    match y {
        Yaml::Hash(h) => {
            for (k, v) in h {
                match (k.as_str(), v.as_str()) {
                    (Some("$ref"), Some(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Yaml::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// Follows a local `$ref` (`#/components/...`) to what it names.
fn resolve<'a>(spec: &'a Yaml, r: &str) -> Option<&'a Yaml> {
    let mut at = spec;
    for part in r.strip_prefix("#/")?.split('/') {
        at = &at[part];
        if at.is_badvalue() {
            return None;
        }
    }
    Some(at)
}

/// Every `$ref` names something in the file, operation ids are unique, and each operation
/// declares exactly the path parameters of its path template, each one required.
#[test]
fn openapi_refs_resolve_and_path_parameters_match() {
    let spec = spec();
    let mut all = Vec::new();
    refs(&spec, &mut all);
    let dangling: Vec<&str> = all.iter().copied().filter(|r| resolve(&spec, r).is_none()).collect();
    assert!(dangling.is_empty(), "docs/openapi.yaml has $refs to nothing: {dangling:?}");

    let mut ids = HashSet::new();
    for (path, item) in entries(&spec["paths"]) {
        let template: BTreeSet<&str> =
            path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect();
        for (method, op) in entries(item).into_iter().filter(|(k, _)| METHODS.contains(k)) {
            let id =
                op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            assert!(!entries(&op["responses"]).is_empty(), "{method} {path} lists no responses");
            let mut declared = BTreeSet::new();
            for p in item["parameters"].as_vec().into_iter().chain(op["parameters"].as_vec()).flatten() {
                let p = match p["$ref"].as_str() {
                    Some(r) => resolve(&spec, r).unwrap_or_else(|| panic!("{r} does not resolve")),
                    None => p,
                };
                if p["in"].as_str() == Some("path") {
                    let name =
                        p["name"].as_str().unwrap_or_else(|| panic!("{method} {path}: unnamed parameter"));
                    assert_eq!(
                        p["required"].as_bool(),
                        Some(true),
                        "{method} {path}: path parameter {name} must be required"
                    );
                    declared.insert(name);
                }
            }
            assert_eq!(
                declared, template,
                "{method} {path}: declared path parameters differ from the template"
            );
        }
    }
}
